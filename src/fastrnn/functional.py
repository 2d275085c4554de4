"""The RNN on plain arrays: stacks layer-direction kernels into a full multi-layer RNN.

Why here: everything a backend should not have to know lives in this one place: the layer
loop, the two directions writing the two halves of one output buffer (no concatenation),
dropout between layers, ``batch_first`` and unbatched input, ``h_0``/``h_n`` bookkeeping,
and picking the backend. Backends see one layer, one direction, time-major contiguous arrays.

Parameters are passed as a mapping with torch's names (``weight_ih_l0``, ...,
``bias_hh_l1_reverse``); the number of layers, the directions and the presence of biases are
read off the names, so a torch state_dict works as it is.
"""
from dataclasses import dataclass, field

import numpy as np

from . import _checks
from .backends import is_cuda_array, load_backend


def parameter_names(num_layers, bidirectional, bias):
    """torch.nn.RNN's parameter names, in its order."""
    names = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse")[: 2 if bidirectional else 1]:
            kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
            names += [f"{kind}_l{layer}{suffix}" for kind in kinds]
    return names


def parameter_shapes(input_size, hidden_size, num_layers, bidirectional, bias):
    """{name: shape} for every parameter, as torch.nn.RNN lays them out."""
    directions = 2 if bidirectional else 1
    shapes = {}
    for name in parameter_names(num_layers, bidirectional, bias):
        kind, layer = name.split("_l")[0], int(name.split("_l")[1].split("_")[0])
        layer_input = input_size if layer == 0 else hidden_size * directions
        shapes[name] = {"weight_ih": (hidden_size, layer_input),
                        "weight_hh": (hidden_size, hidden_size)}.get(kind, (hidden_size,))
    return shapes


@dataclass(frozen=True)
class Structure:
    """The shape of a stacked RNN, as read off its parameters."""
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    dtype: str

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def num_states(self):
        return self.num_layers * self.directions


def read_structure(weights):
    """The Structure a parameter mapping describes; a clear error when it is inconsistent."""
    if "weight_ih_l0" not in weights or "weight_hh_l0" not in weights:
        raise ValueError("weights must contain at least 'weight_ih_l0' and 'weight_hh_l0' "
                       f"(torch.nn.RNN's names), got {sorted(weights)}")
    num_layers = 0
    while f"weight_ih_l{num_layers}" in weights:
        num_layers += 1
    hidden_size, input_size = weights["weight_ih_l0"].shape
    dtype = _checks.check_dtype_name(weights["weight_ih_l0"].dtype)
    structure = Structure(input_size, hidden_size, num_layers,
                          bidirectional="weight_ih_l0_reverse" in weights,
                          bias="bias_ih_l0" in weights, dtype=dtype)
    check_parameters(weights, structure)
    return structure


def check_parameters(weights, structure):
    """Names, shapes and dtype of every parameter, against what ``structure`` needs."""
    expected = parameter_shapes(structure.input_size, structure.hidden_size, structure.num_layers,
                                structure.bidirectional, structure.bias)
    missing = [n for n in expected if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing or unexpected:
        raise ValueError(f"Parameter names do not describe one RNN: missing {missing}, "
                       f"unexpected {unexpected}")
    for name, shape in expected.items():
        _checks.check_same_shape(f"parameter {name!r}", weights[name], shape)
        _checks.check_array_dtype(f"parameter {name!r}", weights[name], structure.dtype)


def resolve_backend_name(backend, x):
    """'auto' means 'cuda' for a device array (see is_cuda_array), 'cpu' otherwise."""
    if backend == "auto":
        return "cuda" if is_cuda_array(x) else "cpu"
    return backend


def dropout_mask(rng, shape, p, dtype):
    """Inverted dropout: zero with probability p, scaled by 1/(1-p) elsewhere (torch's rule)."""
    if p >= 1:
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape) >= p
    return (keep / (1 - p)).astype(dtype)


@dataclass
class LayerRecord:
    """What backward needs of one layer: its input (after dropout), output and dropout mask."""
    layer_input: object          # [T, B, I_l]
    output: object               # [T, B, D*H] before dropout
    input_mask: object = None    # mask applied to the previous layer's output, or None


@dataclass
class Context:
    """Everything rnn_backward needs from one rnn_forward call."""
    backend: object
    weights: dict
    structure: Structure
    relu: bool
    h0: object                   # [L*D, B, H] time-major, contiguous
    layers: list = field(default_factory=list)
    batch_first: bool = False
    unbatched: bool = False
    on_host: bool = True
    output_shape: tuple = ()
    hx_shape: tuple = ()


def _to_time_major(arrays, a, unbatched, batch_first):
    """[T, B, F] C-contiguous from the user's layout ([T, F], [B, T, F] or [T, B, F])."""
    if unbatched:
        a = arrays.contiguous(a)
        return a.reshape(a.shape[0], 1, a.shape[1])
    return arrays.swap_batch_time(a) if batch_first else arrays.contiguous(a)


def _from_time_major(arrays, a, unbatched, batch_first):
    """The inverse of _to_time_major, always C-contiguous."""
    if unbatched:
        return a.reshape(a.shape[0], a.shape[2])
    return arrays.swap_batch_time(a) if batch_first else a


def _states(arrays, hx, unbatched, shape, dtype):
    """hx as a contiguous [L*D, B, H] array (zeros when None)."""
    if hx is None:
        return arrays.zeros(shape, dtype)
    return arrays.contiguous(hx).reshape(shape) if unbatched else arrays.contiguous(hx)


def _layer_parameter_names(layer, direction):
    """(weight_ih, weight_hh, bias_ih, bias_hh) names of one layer-direction."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return tuple(kind + suffix for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def _layer_parameters(weights, layer, direction):
    """(w_ih, w_hh, b_ih, b_hh) of one layer-direction; the biases are None without bias."""
    return tuple(weights.get(name) for name in _layer_parameter_names(layer, direction))


def _run_layer(backend, structure, relu, layer_input, h0, h_n, weights, layer):
    """Both directions of one layer into one [T, B, D*H] buffer; fills h_n's rows."""
    arrays, H = backend.ARRAYS, structure.hidden_size
    T, B = layer_input.shape[:2]
    output = arrays.empty((T, B, structure.directions * H), structure.dtype)
    for direction in range(structure.directions):
        state = layer * structure.directions + direction
        w_ih, w_hh, b_ih, b_hh = _layer_parameters(weights, layer, direction)
        bias = arrays.add(b_ih, b_hh) if b_ih is not None else None
        half = output[:, :, direction * H:(direction + 1) * H]
        if B > 0:
            backend.rnn_forward(layer_input, h0[state], w_ih, w_hh, bias, half,
                                bool(direction), relu)
        arrays.copy_into(h_n[state], half[0 if direction else T - 1])
    return output


def rnn_forward(x, weights, hx=None, *, nonlinearity="tanh", batch_first=False, dropout=0.0,
                training=False, rng=None, backend="auto", need_backward=True):
    """Run a (stacked, optionally bidirectional) Elman RNN over ``x``.

    Returns ``(output, h_n, context)``; ``context`` is None unless ``need_backward``, and is
    what ``rnn_backward`` takes. Shapes and layouts are torch.nn.RNN's. Device arrays (with
    ``__cuda_array_interface__``) stay on the device; NumPy input gives NumPy output.
    """
    _checks.check_nonlinearity(nonlinearity)
    backend = load_backend(resolve_backend_name(backend, x))
    arrays = backend.ARRAYS
    on_host = not arrays.is_device_array(x)
    weights = {name: arrays.contiguous(arrays.asarray(w)) for name, w in weights.items()}
    structure = read_structure(weights)
    x = arrays.asarray(x)
    hx = None if hx is None else arrays.asarray(hx)
    _checks.check_input(x, hx, structure.input_size, structure.num_states,
                        structure.hidden_size, batch_first)
    _checks.check_array_dtype("input", x, structure.dtype)
    if hx is not None:
        _checks.check_array_dtype("hx", hx, structure.dtype)
    unbatched = x.ndim == 2
    x = _to_time_major(arrays, x, unbatched, batch_first)
    T, B = x.shape[:2]
    states_shape = (structure.num_states, B, structure.hidden_size)
    h0 = _states(arrays, hx, unbatched, states_shape, structure.dtype)
    h_n = arrays.empty(states_shape, structure.dtype)
    relu = nonlinearity == "relu"
    use_dropout = training and dropout > 0 and structure.num_layers > 1
    if use_dropout and rng is None:
        rng = np.random.default_rng()

    context = Context(backend, weights, structure, relu, h0, batch_first=batch_first,
                      unbatched=unbatched, on_host=on_host)
    layer_input, mask = x, None
    for layer in range(structure.num_layers):
        output = _run_layer(backend, structure, relu, layer_input, h0, h_n, weights, layer)
        if need_backward:
            context.layers.append(LayerRecord(layer_input, output, mask))
        layer_input, mask = output, None
        if use_dropout and layer < structure.num_layers - 1:
            mask = arrays.asarray(dropout_mask(rng, output.shape, dropout, structure.dtype))
            layer_input = arrays.multiply(output, mask)

    output = _from_time_major(arrays, layer_input, unbatched, batch_first)
    h_n = h_n.reshape(structure.num_states, structure.hidden_size) if unbatched else h_n
    context.output_shape, context.hx_shape = tuple(output.shape), tuple(h_n.shape)
    if on_host:
        output, h_n = arrays.to_host(output), arrays.to_host(h_n)
    return output, h_n, (context if need_backward else None)


def zero_grads(weights, arrays):
    """A gradient buffer for each parameter, on the parameters' device."""
    return {name: arrays.zeros(w.shape, w.dtype) for name, w in weights.items()}


def rnn_backward(context, grad_output, grad_h_n=None, grads=None):
    """Backpropagation through time for the rnn_forward call that made ``context``.

    ``grad_output`` is dL/d output and ``grad_h_n`` dL/d h_n (None: zero), in the layouts
    rnn_forward returned them. Parameter gradients are ADDED into ``grads`` (a dict keyed like
    the weights, on the weights' device; None: fresh zeros). Returns
    ``(grad_input, grad_hx, grads)``, grad_input in the input's layout, grad_hx in hx's.
    """
    if context is None:
        raise RuntimeError("rnn_backward needs the context of a forward run with need_backward=True")
    structure, arrays = context.structure, context.backend.ARRAYS
    grad_output = arrays.asarray(grad_output)
    _checks.check_same_shape("grad_output", grad_output, context.output_shape)
    _checks.check_array_dtype("grad_output", grad_output, structure.dtype)
    grad_layer_output = _to_time_major(arrays, grad_output, context.unbatched, context.batch_first)
    if grad_h_n is None:
        grad_h_n = arrays.zeros(context.h0.shape, structure.dtype)
    else:
        grad_h_n = arrays.asarray(grad_h_n)
        _checks.check_same_shape("grad_h_n", grad_h_n, context.hx_shape)
        _checks.check_array_dtype("grad_h_n", grad_h_n, structure.dtype)
        grad_h_n = arrays.contiguous(grad_h_n).reshape(context.h0.shape)
    grads = zero_grads(context.weights, arrays) if grads is None else grads
    grad_hx = arrays.zeros(context.h0.shape, structure.dtype)
    if context.h0.shape[1] == 0:     # empty batch: every gradient is an empty array
        grad_layer_output = arrays.zeros(context.layers[0].layer_input.shape, structure.dtype)
    else:
        grad_layer_output = _backward_through_layers(context, grad_layer_output, grad_h_n,
                                                     grads, grad_hx)
    grad_x = _from_time_major(arrays, grad_layer_output, context.unbatched, context.batch_first)
    grad_hx = grad_hx.reshape(context.hx_shape)
    if context.on_host:
        grad_x, grad_hx = arrays.to_host(grad_x), arrays.to_host(grad_hx)
    return grad_x, grad_hx, grads


def _backward_through_layers(context, grad_layer_output, grad_h_n, grads, grad_hx):
    """BPTT from the top layer down; fills grad_hx, adds into grads; returns dL/d input."""
    backend, structure = context.backend, context.structure
    arrays, D, H = backend.ARRAYS, structure.directions, structure.hidden_size
    for layer in reversed(range(structure.num_layers)):
        record = context.layers[layer]
        grad_input = arrays.empty(record.layer_input.shape, structure.dtype)
        for direction in range(D):
            state = layer * D + direction
            halves = slice(direction * H, (direction + 1) * H)
            w_ih, w_hh, b_ih, _ = _layer_parameters(context.weights, layer, direction)
            names = _layer_parameter_names(layer, direction)
            grad_b_ih, grad_b_hh = (grads[names[2]], grads[names[3]]) if b_ih is not None else (None, None)
            backend.rnn_backward(
                record.layer_input, context.h0[state], w_ih, w_hh,
                record.output[:, :, halves], grad_layer_output[:, :, halves], grad_h_n[state],
                bool(direction), context.relu, grad_input, direction > 0, grad_hx[state],
                grads[names[0]], grads[names[1]], grad_b_ih, grad_b_hh)
        if record.input_mask is not None:
            grad_input = arrays.multiply(grad_input, record.input_mask)
        grad_layer_output = grad_input
    return grad_layer_output
