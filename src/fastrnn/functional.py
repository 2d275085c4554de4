"""The RNN on plain arrays: stacks layer-direction kernels into a full multi-layer RNN.

Why here: everything a backend should not have to know lives in this one place. Two levels:

- ``forward_packed`` / ``backward_packed``: the stack over PACKED sequences (the layout of
  backends/__init__.py, a sorted batch): the layer loop, the two directions writing the two
  halves of one [N, 2H] buffer (no concatenation), dropout masks (given by the caller) between
  layers, ``h_0``/``h_n`` bookkeeping. fastrnn.torch calls this level directly.
- ``rnn_forward`` / ``rnn_backward``: the user's arrays: checks in torch's words,
  ``batch_first`` and unbatched input, ``lengths`` (sorting and packing, the caller's order
  restored), drawing the dropout masks, picking the backend.

Parameters are passed as a mapping with torch's names (``weight_ih_l0``, ...,
``bias_hh_l1_reverse``); the number of layers, the directions and the presence of biases are
read off the names, so a torch state_dict works as it is. Below that, weights travel as a list
in torch's flat order (``parameter_names``), as torch's own RNN ops take them.
"""
from dataclasses import dataclass

import numpy as np

from . import _checks
from .backends import is_cuda_array, load_backend
from .packing import equal_batch_sizes, plan_packing

MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}


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
    """The shape of a stacked RNN: what its parameters say, plus the cell's mode."""
    mode: str                    # "RNN_TANH" or "RNN_RELU" (torch's names)
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

    @property
    def relu(self):
        return self.mode == "RNN_RELU"

    def names(self):
        return parameter_names(self.num_layers, self.bidirectional, self.bias)

    def shapes(self):
        return parameter_shapes(self.input_size, self.hidden_size, self.num_layers,
                                self.bidirectional, self.bias)

    def layer_weights(self, weights, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh) of one layer-direction from the flat list; None biases
        without bias. The same positions index a list of their gradients."""
        per_state = 4 if self.bias else 2
        start = (layer * self.directions + direction) * per_state
        found = tuple(weights[start:start + per_state])
        return found if self.bias else found + (None, None)


def _named_shape(weights, name, what):
    """The shape of ``weights[name]``, which must be a 2-D array."""
    shape = tuple(np.shape(weights[name]))
    if len(shape) != 2:
        raise _checks.ShapeError(f"Expected parameter {name!r} to be 2-D {what}, got shape {shape}")
    return shape


def read_structure(weights, nonlinearity="tanh"):
    """The Structure a parameter mapping describes; a clear error naming the offending
    parameter when it is inconsistent."""
    _checks.check_nonlinearity(nonlinearity)
    if "weight_ih_l0" not in weights or "weight_hh_l0" not in weights:
        raise ValueError("weights must contain at least 'weight_ih_l0' and 'weight_hh_l0' "
                         f"(torch.nn.RNN's names), got {sorted(weights)}")
    hidden_size, input_size = _named_shape(weights, "weight_ih_l0", "[hidden_size, input_size]")
    num_layers = 0
    while f"weight_ih_l{num_layers}" in weights:
        num_layers += 1
    dtype = _checks.check_dtype_name(getattr(weights["weight_ih_l0"], "dtype", None))
    structure = Structure(MODES[nonlinearity], input_size, hidden_size, num_layers,
                          bidirectional="weight_ih_l0_reverse" in weights,
                          bias="bias_ih_l0" in weights, dtype=dtype)
    check_parameters(weights, structure)
    return structure


def check_parameters(weights, structure):
    """Names, shapes and dtype of every parameter, against what ``structure`` needs."""
    expected = structure.shapes()
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


def dropout_masks(rng, shape, p, dtype):
    """Inverted dropout: zero with probability p, scaled by 1/(1-p) elsewhere (torch's rule)."""
    if p >= 1:
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape) >= p
    return (keep / (1 - p)).astype(dtype)


# ----------------------------------------------------------------------------- packed level
def forward_packed(backend, structure, x, hx, weights, batch_sizes, masks=None, need_saved=True):
    """The stacked RNN over packed sequences.

    x [N, I] C-contiguous; hx [L*D, B, H] C-contiguous in sorted order, or None (zeros);
    weights: the parameters in torch's flat order (``structure.names()``), C-contiguous;
    batch_sizes [T] int64 (see backends/__init__.py); masks [L-1, N, D*H] multipliers for the
    outputs of layers 0..L-2 (dropout, already scaled), or None.
    Returns ``(output [N, D*H], h_n [L*D, B, H], saved)``; ``saved`` [L-1, N, D*H] holds the
    outputs of layers 0..L-2 before dropout (what backward_packed needs besides output), or
    None when ``need_saved`` is False or L == 1.
    """
    arrays, D, H, L = backend.ARRAYS, structure.directions, structure.hidden_size, structure.num_layers
    N, B = x.shape[0], (int(batch_sizes[0]) if len(batch_sizes) else 0)
    h0 = arrays.zeros((L * D, B, H), structure.dtype) if hx is None else hx
    h_n = arrays.empty((L * D, B, H), structure.dtype)
    saved = arrays.empty((L - 1, N, D * H), structure.dtype) if need_saved and L > 1 else None
    layer_input = x
    for layer in range(L):
        output = saved[layer] if saved is not None and layer < L - 1 else arrays.empty((N, D * H), structure.dtype)
        for direction in range(D):
            state = layer * D + direction
            w_ih, w_hh, b_ih, b_hh = structure.layer_weights(weights, layer, direction)
            if B > 0:
                backend.rnn_forward(layer_input, h0[state], w_ih, w_hh, b_ih, b_hh, batch_sizes,
                                    bool(direction), structure.relu,
                                    output[:, direction * H:(direction + 1) * H], h_n[state])
        layer_input = output if masks is None or layer == L - 1 else arrays.multiply(output, masks[layer])
    return layer_input, h_n, saved


def backward_packed(backend, structure, x, hx, weights, batch_sizes, output, saved, masks,
                    grad_output, grad_h_n=None, grads=None):
    """Backpropagation through time for one forward_packed call (same arguments, plus its
    ``output`` and ``saved``). grad_output [N, D*H]; grad_h_n [L*D, B, H] or None (zeros);
    ``grads``: arrays in the weights' order that parameter gradients are ADDED into (None:
    fresh zeros). Returns ``(grad_x [N, I], grad_hx [L*D, B, H], grads)``."""
    arrays, D, H, L = backend.ARRAYS, structure.directions, structure.hidden_size, structure.num_layers
    B = int(batch_sizes[0]) if len(batch_sizes) else 0
    dtype = structure.dtype
    h0 = arrays.zeros((L * D, B, H), dtype) if hx is None else hx
    grad_h_n = arrays.zeros((L * D, B, H), dtype) if grad_h_n is None else grad_h_n
    grads = [arrays.zeros(w.shape, dtype) for w in weights] if grads is None else grads
    grad_hx = arrays.zeros((L * D, B, H), dtype)
    grad_layer_output = grad_output
    for layer in reversed(range(L)):
        layer_output = output if layer == L - 1 else saved[layer]
        layer_input = x if layer == 0 else _dropped(arrays, saved[layer - 1], masks, layer - 1)
        grad_input = arrays.empty(layer_input.shape, dtype)
        for direction in range(D):
            state, halves = layer * D + direction, slice(direction * H, (direction + 1) * H)
            w_ih, w_hh, _, _ = structure.layer_weights(weights, layer, direction)
            g_w_ih, g_w_hh, g_b_ih, g_b_hh = structure.layer_weights(grads, layer, direction)
            if B > 0:
                backend.rnn_backward(layer_input, h0[state], w_ih, w_hh, batch_sizes,
                                     bool(direction), structure.relu, layer_output[:, halves],
                                     grad_layer_output[:, halves], grad_h_n[state], grad_input,
                                     direction > 0, grad_hx[state], g_w_ih, g_w_hh, g_b_ih, g_b_hh)
            elif direction == 0:
                grad_input = arrays.zeros(layer_input.shape, dtype)
        grad_layer_output = _dropped(arrays, grad_input, masks, layer - 1) if layer > 0 else grad_input
    return grad_layer_output, grad_hx, grads


def _dropped(arrays, values, masks, index):
    """values times dropout mask ``index`` (the one between layers index and index+1)."""
    return values if masks is None else arrays.multiply(values, masks[index])


# ----------------------------------------------------------------------------- the caller's arrays
@dataclass(frozen=True)
class Layout:
    """How the caller's arrays map to the packed ones, and back."""
    batch_first: bool
    unbatched: bool
    steps: int                   # T of the caller's (padded) input
    batch: int
    packing: object              # a packing.Packing, or None for equal lengths
    on_host: bool


@dataclass
class Context:
    """Everything rnn_backward needs from one rnn_forward call."""
    backend: object
    structure: Structure
    weights: list
    layout: Layout
    x: object                    # [N, I] packed
    hx: object                   # [L*D, B, H] sorted, or None
    batch_sizes: object
    masks: object
    saved: object
    output: object               # [N, D*H] packed
    output_shape: tuple
    hx_shape: tuple


def _to_time_major(arrays, a, layout):
    """[T, B, F] C-contiguous from the caller's layout ([T, F], [B, T, F] or [T, B, F])."""
    if layout.unbatched:
        a = arrays.contiguous(a)
        return a.reshape(a.shape[0], 1, a.shape[1])
    return arrays.swap_batch_time(a) if layout.batch_first else arrays.contiguous(a)


def _from_time_major(arrays, a, layout):
    """The inverse of _to_time_major."""
    if layout.unbatched:
        return a.reshape(a.shape[0], a.shape[2])
    return arrays.swap_batch_time(a) if layout.batch_first else a


def _pack(arrays, a, layout):
    """The caller's [T, B, F]-like array as packed rows [N, F]."""
    a = _to_time_major(arrays, a, layout)
    flat = a.reshape(layout.steps * layout.batch, a.shape[2])
    return flat if layout.packing is None else arrays.take_rows(flat, layout.packing.rows)


def _unpack(arrays, packed, layout):
    """Packed rows [N, F] as the caller's layout, zeros past each sequence's length."""
    shape = (layout.steps * layout.batch, packed.shape[1])
    flat = packed if layout.packing is None else arrays.put_rows(shape, layout.packing.rows, packed)
    return _from_time_major(arrays, flat.reshape(layout.steps, layout.batch, packed.shape[1]), layout)


def _reorder_states(arrays, states, order):
    """[S, B, H] with its batch axis permuted by ``order`` (None: unchanged)."""
    if order is None:
        return states
    S, B, H = states.shape
    by_batch = arrays.swap_batch_time(states).reshape(B, S * H)
    return arrays.swap_batch_time(arrays.take_rows(by_batch, order).reshape(B, S, H))


def _states_in(arrays, states, layout, shape):
    """The caller's hx-like array as a sorted, contiguous [L*D, B, H] array."""
    states = arrays.contiguous(states).reshape(shape)
    return _reorder_states(arrays, states, None if layout.packing is None else layout.packing.sorted_indices)


def _states_out(arrays, states, layout, shape):
    """A sorted [L*D, B, H] array in the caller's order and shape."""
    order = None if layout.packing is None else layout.packing.unsorted_indices
    return _reorder_states(arrays, states, order).reshape(shape)


def _layout_for(x, lengths, batch_first, on_host):
    unbatched = x.ndim == 2
    steps = x.shape[1] if (not unbatched and batch_first) else x.shape[0]
    batch = 1 if unbatched else (x.shape[0] if batch_first else x.shape[1])
    packing = None
    if lengths is not None:
        packing = plan_packing(lengths, batch, steps)
        if batch and bool((packing.batch_sizes == batch).all()) and len(packing.batch_sizes) == steps:
            packing = None       # every sequence runs all steps: the plain layout, no copies
    return Layout(batch_first, unbatched, steps, batch, packing, on_host)


def rnn_forward(x, weights, hx=None, *, lengths=None, nonlinearity="tanh", batch_first=False,
                dropout=0.0, training=False, rng=None, backend="auto", need_backward=True):
    """Run a (stacked, optionally bidirectional) Elman RNN over ``x``.

    x: [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched); hx: [L*D, B, H] or None;
    lengths: None, or one length per sequence (1..T, any order): step t then runs only the
    sequences longer than t, ``output`` is zero past each length and ``h_n`` holds each
    sequence's state after its own last step. Returns ``(output, h_n, context)``; ``context``
    is None unless ``need_backward``, and is what ``rnn_backward`` takes. Shapes and layouts
    are torch.nn.RNN's. Device arrays (``__cuda_array_interface__``) stay on the device; NumPy
    input gives NumPy output.
    """
    _checks.check_nonlinearity(nonlinearity)
    _checks.check_dropout(dropout)
    backend = load_backend(resolve_backend_name(backend, x))
    arrays = backend.ARRAYS
    structure = read_structure(weights, nonlinearity)
    weight_list = [arrays.contiguous(arrays.asarray(weights[name])) for name in structure.names()]
    x = arrays.asarray(x)
    hx = None if hx is None else arrays.asarray(hx)
    _checks.check_input(x, hx, structure.input_size, structure.num_states,
                        structure.hidden_size, batch_first)
    _checks.check_array_dtype("input", x, structure.dtype)
    if hx is not None:
        _checks.check_array_dtype("hx", hx, structure.dtype)
    layout = _layout_for(x, lengths, batch_first, not arrays.is_device_array(x))
    states_shape = (structure.num_states, layout.batch, structure.hidden_size)
    batch_sizes = (equal_batch_sizes(layout.batch, layout.steps) if layout.packing is None
                   else layout.packing.batch_sizes)
    x_packed = _pack(arrays, x, layout)
    hx_sorted = None if hx is None else _states_in(arrays, hx, layout, states_shape)
    masks = None
    if training and dropout > 0 and structure.num_layers > 1:
        rng = np.random.default_rng() if rng is None else rng
        shape = (structure.num_layers - 1, x_packed.shape[0], structure.directions * structure.hidden_size)
        masks = arrays.asarray(dropout_masks(rng, shape, dropout, structure.dtype))

    output, h_n, saved = forward_packed(backend, structure, x_packed, hx_sorted, weight_list,
                                        batch_sizes, masks, need_saved=need_backward)
    hx_shape = (structure.num_states, structure.hidden_size) if layout.unbatched else states_shape
    user_output = _unpack(arrays, output, layout)
    user_h_n = _states_out(arrays, h_n, layout, hx_shape)
    context = None
    if need_backward:
        context = Context(backend, structure, weight_list, layout, x_packed, hx_sorted,
                          batch_sizes, masks, saved, output, tuple(user_output.shape), hx_shape)
    if layout.on_host:
        user_output, user_h_n = arrays.to_host(user_output), arrays.to_host(user_h_n)
    return user_output, user_h_n, context


def zero_grads(weights, arrays):
    """A gradient buffer for each parameter, on the parameters' device."""
    return {name: arrays.zeros(w.shape, w.dtype) for name, w in weights.items()}


def rnn_backward(context, grad_output, grad_h_n=None, grads=None):
    """Backpropagation through time for the rnn_forward call that made ``context``.

    ``grad_output`` is dL/d output and ``grad_h_n`` dL/d h_n (None: zero), in the layouts
    rnn_forward returned them; gradients past a sequence's length are ignored. Parameter
    gradients are ADDED into ``grads`` (a dict keyed like the weights, on the weights' device;
    None: fresh zeros). Returns ``(grad_input, grad_hx, grads)``, grad_input in the input's
    layout (zero past each length), grad_hx in hx's.
    """
    if context is None:
        raise RuntimeError("rnn_backward needs the context of a forward run with need_backward=True")
    structure, arrays, layout = context.structure, context.backend.ARRAYS, context.layout
    names = structure.names()
    grad_output = arrays.asarray(grad_output)
    _checks.check_same_shape("grad_output", grad_output, context.output_shape)
    _checks.check_array_dtype("grad_output", grad_output, structure.dtype)
    states_shape = (structure.num_states, layout.batch, structure.hidden_size)
    if grad_h_n is not None:
        grad_h_n = arrays.asarray(grad_h_n)
        _checks.check_same_shape("grad_h_n", grad_h_n, context.hx_shape)
        _checks.check_array_dtype("grad_h_n", grad_h_n, structure.dtype)
        grad_h_n = _states_in(arrays, grad_h_n, layout, states_shape)
    if grads is None:
        grads = {name: arrays.zeros(w.shape, structure.dtype) for name, w in zip(names, context.weights)}
    grad_x, grad_hx, _ = backward_packed(
        context.backend, structure, context.x, context.hx, context.weights, context.batch_sizes,
        context.output, context.saved, context.masks, _pack(arrays, grad_output, layout),
        grad_h_n, [grads[name] for name in names])
    grad_x = _unpack(arrays, grad_x, layout)
    grad_hx = _states_out(arrays, grad_hx, layout, context.hx_shape)
    if layout.on_host:
        grad_x, grad_hx = arrays.to_host(grad_x), arrays.to_host(grad_hx)
    return grad_x, grad_hx, grads
