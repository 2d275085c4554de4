"""The torch operators ``fastrnn::rnn_forward`` and ``fastrnn::rnn_backward``, for every cell.

Why custom operators: an operator registered with ``torch.library.custom_op`` is something every
torch tool understands. Its fake implementation gives the output shapes without running it, so
torch.compile (fullgraph), torch.export, FakeTensor and meta tensors trace through it; jit.trace
records it; its vmap rule serves torch.func. An ``autograd.Function`` around ``.numpy()`` gives
none of that. The derivatives live in autograd.py: two autograd.Functions around the operators
(``register_autograd`` alone fails under torch.func.grad), whose formulas are also registered
as the operators' own. ``*_impl`` are the computations; autograd.py and the eager fast path
call them directly when nothing needs to see the operator (``dispatch_free``).

What the operators compute: fastrnn.functional's packed-level stack (``forward_packed`` /
``backward_packed``) on the tensors' memory: CPU tensors cross to NumPy without copies, CUDA
tensors travel as ``__cuda_array_interface__`` to the 'cuda' backend, results come back without
copies. The input is either an equal-length batch [T, B, I] (time-major), or packed data
[N, I] with its ``batch_sizes`` [T] (torch's PackedSequence layout, batch sorted by decreasing
length); outputs follow the input's layout.

ONE pair of operators serves the Elman RNN, the LSTM and the GRU: ``mode`` is torch's name of
the cell ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU'), so compile, export and vmap have one
implementation. The schema holds only tensors, never lists or tuples of them: torch's legacy
vmap (used by gradcheck's batched-gradient check) can loop over an operator only then. So the
weights travel as ONE flat buffer in torch's flat order (as cuDNN takes them;
``flatten_weights``), and the recurrent state as two tensors, ``hx`` [L*D, B, P] and ``cx``
[L*D, B, H]: LSTM's (h, c) with P = proj_size or H, and for the cells without a cell state
a ``cx`` of width 0 (``no_cell_state``), so that every mode has the same schema and every
state tensor the same batch axis. The sizes are read off the shapes: H is cx's width for the
LSTM and hx's otherwise, the LSTM has a projection when P != H. Dropout masks are an input
(drawn by the caller with torch's generator, so compile traces them and ``torch.manual_seed``
reproduces them). What the forward keeps for the backward is two tensors whose shapes follow
from the input shapes (``workspace_shapes``): the outputs of layers 0..L-2 and each
layer-direction's gate workspace (``_stack``'s two blocks of ``saved``, kept apart because an
operator's outputs may not share memory and each must keep its batch axis for vmap).

Their vmap rules fold the vmapped dimension into the RNN's batch: B sequences vmapped V times
are one batch of B*V sequences, which is exact (sequences never mix) and as fast as the kernels
get. Where folding cannot be exact (weights that differ per vmapped entry, or per-entry weight
gradients), the rules call the operator once per entry.
"""
import functools
import math
import operator
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad

from .. import functional
from ..backends import load_backend
from ..packing import equal_batch_sizes

__all__ = ["Config", "rnn_forward", "rnn_backward", "rnn_forward_impl", "rnn_backward_impl",
           "workspace_shapes", "weight_shapes", "flatten_weights", "unflatten_weights",
           "no_cell_state", "dispatch_free", "EagerForward"]

COMPUTE_DTYPES = (torch.float32, torch.float64)


class Config(NamedTuple):
    """The operators' arguments besides tensors, in schema order (static under compile)."""
    mode: str                # torch's names: 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU'
    num_layers: int
    bidirectional: bool
    has_biases: bool
    backend: str             # 'auto', 'cpu', 'numpy' or 'cuda'

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


def no_cell_state(hx: Tensor) -> Tensor:
    """The ``cx`` of a cell without a cell state (Elman, GRU): hx's shape with width 0."""
    return hx.new_empty((*hx.shape[:-1], 0))


def state_sizes(mode: str, hx: Tensor, cx: Tensor) -> tuple:
    """(hidden_size, proj_size) read off the states' widths (module header)."""
    if mode != "LSTM":
        return hx.shape[-1], 0
    hidden, width = cx.shape[-1], hx.shape[-1]
    return hidden, (0 if width == hidden else width)


def workspace_shapes(mode: str, num_layers: int, directions: int, hidden_size: int,
                     output_shape, need_workspace: bool) -> tuple:
    """The shapes of what rnn_forward keeps for rnn_backward, for an output of
    ``output_shape`` ([T, B, D*P] or [N, D*P]): the outputs of layers 0..L-2 (before dropout)
    [L-1, *lead, D*P] and the gate workspaces [L*D, *lead, G] (G columns per row: 0 for the
    Elman cell, 5H for LSTM, 4H for GRU); a leading 0 for each when nothing is kept."""
    lead, width = tuple(output_shape[:-1]), output_shape[-1]
    gates = functional.CELLS[mode].workspace * hidden_size
    if not need_workspace:
        return (0, *lead, width), (0, *lead, gates)
    return (num_layers - 1, *lead, width), (num_layers * directions, *lead, gates)


@functools.lru_cache(maxsize=256)
def weight_shapes(config: Config, input_size: int, hidden_size: int, proj_size: int = 0) -> tuple:
    """The shape of every weight, in torch's flat order."""
    return tuple(functional.parameter_shapes(
        input_size, hidden_size, config.num_layers, config.bidirectional, config.has_biases,
        mode=config.mode, proj_size=proj_size).values())


def flatten_weights(weights) -> Tensor:
    """The weights (torch's flat order) as one 1-D buffer, the operators' ``weights``."""
    return torch.cat([w.reshape(-1) for w in weights])


def unflatten_weights(flat, shapes) -> list:
    """Views of the flat buffer (a tensor or a NumPy array), one per shape."""
    views, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return views


def _weight_list(config: Config, input: Tensor, hx: Tensor, cx: Tensor, weights: Tensor) -> list:
    """The flat buffer as per-parameter views, after checking its length."""
    shapes = weight_shapes(config, input.shape[-1], *state_sizes(config.mode, hx, cx))
    expected = sum(math.prod(s) for s in shapes)
    if weights.dim() != 1 or weights.numel() != expected:
        raise ValueError(f"Expected a flat weight buffer of {expected} elements (torch's flat "
                         f"order, shapes {shapes}), got shape {tuple(weights.shape)}")
    return unflatten_weights(weights, shapes)


# ----------------------------------------------------------------------------- crossing
def _backend_name(name: str, device: torch.device) -> str:
    """The backend that runs on ``device``: 'auto' picks 'cuda' or 'cpu'."""
    if name == "auto":
        return "cuda" if device.type == "cuda" else "cpu"
    if (name == "cuda") != (device.type == "cuda"):
        raise ValueError(f"backend {name!r} cannot run on a tensor on {device}; use backend='auto'")
    return name


def _backend_for(name: str, device: torch.device):
    """The backend module that runs on ``device`` (see _backend_name)."""
    return load_backend(_backend_name(name, device))


def _as_array(tensor: Tensor, backend):
    """The tensor's memory as the backend's array, without a copy (C-contiguous first)."""
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    if tensor.is_cpu:
        return (tensor.detach() if tensor.requires_grad else tensor).numpy()
    return backend.ARRAYS.asarray(tensor.detach())   # a numba view (__cuda_array_interface__)


def _as_tensor(array, device: torch.device) -> Tensor:
    """A backend's result as a tensor on ``device``, without a copy."""
    if device.type == "cpu":
        return torch.from_numpy(array)
    return torch.as_tensor(array, device=device)


@functools.lru_cache(maxsize=256)
def _structure(mode, input_size, hidden_size, num_layers, bidirectional, bias, dtype,
               proj_size=0):
    """fastrnn.functional's description of the stack (cached: it is the same call after call)."""
    if mode not in functional.CELLS:
        raise NotImplementedError(f"fastrnn's operators run modes {sorted(functional.CELLS)}, "
                                  f"got {mode!r}")
    if dtype not in COMPUTE_DTYPES:
        raise TypeError(f"fastrnn's operators compute in float32 or float64, got {dtype}; "
                        "fastrnn.torch's modules cast float16/bfloat16 to float32 for them")
    return functional.Structure(mode, input_size, hidden_size, num_layers, bidirectional, bias,
                                str(dtype)[len("torch."):], proj_size)


def _structure_for(config: Config, input: Tensor, hx: Tensor, cx: Tensor):
    """The Structure of one operator call, its sizes read off the tensors; a cell without a
    cell state takes the cx that no_cell_state makes."""
    if config.mode != "LSTM" and cx.shape != (*hx.shape[:-1], 0):
        raise RuntimeError(f"fastrnn: a {config.mode} cell has no cell state: cx must have "
                           f"shape {(*hx.shape[:-1], 0)} (hx's with width 0), got "
                           f"{tuple(cx.shape)}")
    hidden_size, proj_size = state_sizes(config.mode, hx, cx)
    return _structure(config.mode, input.shape[-1], hidden_size, config.num_layers,
                      config.bidirectional, config.has_biases, input.dtype, proj_size)


def _state_arrays(structure, hx: Tensor, cx: Tensor, as_array):
    """The operators' (hx, cx) as functional passes states: LSTM's pair, or hx alone."""
    return (as_array(hx), as_array(cx)) if structure.cell.paired else as_array(hx)


def _state_tensors(structure, states, cx: Tensor, device) -> tuple:
    """functional's states (LSTM's pair, or one array) as the operators' (h, c) tensors; a
    fresh width-0 c for the cells without a cell state."""
    if structure.cell.paired:
        return _as_tensor(states[0], device), _as_tensor(states[1], device)
    return _as_tensor(states, device), cx.new_empty(cx.shape)


_NO_STEPS = np.zeros(0, np.int64)


def _packed_rows(input: Tensor, batch_sizes: Optional[Tensor], backend):
    """(rows [N, F] array, batch_sizes as int64 NumPy) of an equal-length [T, B, F] or a packed
    input; an empty batch (B = 0) has no steps to run."""
    rows = _as_array(input, backend)
    if batch_sizes is None:
        steps, batch = input.shape[0], input.shape[1]
        if steps == 0:
            raise ValueError("Expected sequence length to be larger than 0 in RNN")
        sizes = equal_batch_sizes(batch, steps) if batch else _NO_STEPS
        return rows.reshape(steps * batch, input.shape[2]), sizes
    sizes = batch_sizes.detach().cpu().numpy()
    return rows, sizes if sizes.dtype == np.int64 else sizes.astype(np.int64)


def _rows(tensor: Optional[Tensor], leading: int):
    """A [*lead, T, B, F] / [*lead, N, F] tensor as [*lead, N, F], or None."""
    if tensor is None:
        return None
    return tensor.reshape(*tensor.shape[:leading], -1, tensor.shape[-1])


# The dispatch keys every thread includes by default; any other (torch's legacy vmap, as
# gradcheck's batched checks use it, adds VmapMode) means someone must see the operator.
_DEFAULT_INCLUDED_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.BackendSelect).add(
    torch._C.DispatchKey.ADInplaceOrView).raw_repr()


def dispatch_free(*tensors) -> bool:
    """Whether an operator's computation may be called directly on these tensors (None
    allowed), skipping the dispatcher: plain CPU or CUDA tensors (no subclass, FakeTensor or
    functorch wrapper) in eager mode, under no trace, compile, transform, autocast, forward AD
    level or dispatch/function mode that must see the operator. Autograd is the caller's."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if (torch._C._are_functorch_transforms_active() or torch._C._is_any_autocast_enabled()
            or torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled()
            or forward_ad._current_level >= 0           # dual tensors don't require grad
            or torch._C._dispatch_tls_local_include_set().raw_repr() != _DEFAULT_INCLUDED_KEYS):
        return False
    return all(t is None or (type(t) is Tensor and (t.is_cpu or t.is_cuda)) for t in tensors)


# ----------------------------------------------------------------------------- forward
class EagerForward:
    """rnn_forward's computation for plain CPU tensors in eager mode when nothing has to be
    traced or differentiated, prepared once for many calls: the modules' fast path.

    Why: a small call (T=1) is mostly overhead; the dispatcher, the weights' NumPy views and
    their checks would cost more than the kernels. The weights become a functional.Prepared
    once (NumPy views of the parameters: in-place updates are seen through the shared memory)
    and are used while they are the same contiguous tensors at the same addresses
    (``matches``); an equal-length batch without dropout then takes functional's inference
    path (checks and kernels only). Nothing is kept for backward.
    """

    def __init__(self, config: Config, weights: list, hidden_size: int, proj_size: int = 0):
        self.config = config
        self.weights = list(weights)
        self.addresses = [w.data_ptr() for w in weights]
        name = _backend_name(config.backend, weights[0].device)
        structure = _structure(config.mode, weights[0].shape[1], hidden_size, config.num_layers,
                               config.bidirectional, config.has_biases, weights[0].dtype,
                               proj_size)
        self.prepared = functional.Prepared(structure, name,
                                            [_as_array(w, load_backend(name)) for w in weights])

    @staticmethod
    def possible(weights) -> bool:
        """Whether the weights are plain CPU tensors of one float dtype that can be used in
        place (a copy would not see their updates)."""
        dtype = weights[0].dtype
        return dtype in COMPUTE_DTYPES and all(
            (type(w) is torch.nn.Parameter or type(w) is Tensor) and w.is_cpu
            and w.dtype == dtype and w.is_contiguous() for w in weights)

    def matches(self, config: tuple, weights) -> bool:
        """Whether this preparation serves ``config`` (a Config or a tuple of its fields) and
        these weights."""
        return (config == self.config and all(map(operator.is_, weights, self.weights))
                and list(map(Tensor.data_ptr, weights)) == self.addresses)

    def __call__(self, input: Tensor, batch_sizes: Optional[Tensor], states: Optional[tuple],
                 masks: Optional[Tensor]) -> tuple:
        """``(output, final states)`` for input [T, B, I] or packed [N, I] of the weights'
        dtype; ``states``: the initial (h,) or LSTM's (h, c), or None for zeros; the final
        states come back as a tuple of the same kind."""
        prepared, paired = self.prepared, self.prepared.paired
        h0 = None                   # no generator expressions here: this runs on every call
        if states is not None:
            backend = prepared.backend
            h0 = _as_array(states[0], backend)
            if paired:
                h0 = (h0, _as_array(states[1], backend))
        if batch_sizes is None and masks is None:
            output, finals, _ = functional.forward_prepared(
                prepared, _as_array(input, prepared.backend), h0, need_backward=False)
        else:
            rows, sizes = _packed_rows(input, batch_sizes, prepared.backend)
            output, finals, _ = functional.forward_packed(
                prepared.backend, prepared.structure, rows, h0, prepared.weights, sizes,
                None if masks is None else _as_array(_rows(masks, 1), prepared.backend),
                need_saved=False)
            output = output.reshape(*input.shape[:-1], -1)
        if paired:
            return torch.from_numpy(output), (torch.from_numpy(finals[0]),
                                              torch.from_numpy(finals[1]))
        return torch.from_numpy(output), (torch.from_numpy(finals),)


def rnn_forward_impl(input: Tensor, batch_sizes: Optional[Tensor], hx: Tensor, cx: Tensor,
                     weights: Tensor, masks: Optional[Tensor], mode: str, num_layers: int,
                     bidirectional: bool, has_biases: bool, backend: str, need_workspace: bool
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The stacked recurrent layer: ``(output, h_n, c_n, layer_outputs, gates)``.

    input [T, B, I] (batch_sizes None) or packed [N, I] with batch_sizes [T] int64 on the CPU;
    hx [L*D, B, P] and cx [L*D, B, H] (width 0 but for the LSTM; sorted order when packed);
    weights: flatten_weights(torch's flat order); masks [L-1, *input.shape[:-1], D*P] dropout
    multipliers, or None. output has the input's layout with D*P features, h_n and c_n hx's
    and cx's shapes; layer_outputs and gates: see workspace_shapes.
    """
    config = Config(mode, num_layers, bidirectional, has_biases, backend)
    structure = _structure_for(config, input, hx, cx)
    backend_module = _backend_for(backend, input.device)
    as_array = functools.partial(_as_array, backend=backend_module)
    rows, sizes = _packed_rows(input, batch_sizes, backend_module)
    output_shape = (*input.shape[:-1], structure.layer_width)
    kept = [input.new_empty(shape) for shape in workspace_shapes(
        mode, num_layers, structure.directions, structure.hidden_size, output_shape,
        need_workspace)]
    blocks = None
    if need_workspace:
        blocks = tuple(as_array(block).reshape(shape) if used else None for block, shape, used
                       in zip(kept, structure.saved_shapes(rows.shape[0]),
                              (num_layers > 1, structure.workspace_width > 0)))
    output, finals, _ = functional.forward_packed(
        backend_module, structure, rows, _state_arrays(structure, hx, cx, as_array),
        [as_array(w) for w in _weight_list(config, input, hx, cx, weights)], sizes,
        None if masks is None else as_array(_rows(masks, 1)), need_saved=need_workspace,
        saved=blocks)
    # reshaped as arrays, so that the tensors are no views (autograd restricts views in place)
    return (_as_tensor(output.reshape(output_shape), input.device),
            *_state_tensors(structure, finals, cx, input.device), *kept)


rnn_forward = torch.library.custom_op("fastrnn::rnn_forward", mutates_args=(),
                                      device_types=("cpu", "cuda"))(rnn_forward_impl)


@rnn_forward.register_fake
def _rnn_forward_fake(input, batch_sizes, hx, cx, weights, masks, mode, num_layers,
                      bidirectional, has_biases, backend, need_workspace):
    directions = 2 if bidirectional else 1
    output_shape = (*input.shape[:-1], directions * hx.shape[-1])
    kept = workspace_shapes(mode, num_layers, directions, state_sizes(mode, hx, cx)[0],
                            output_shape, need_workspace)
    return (input.new_empty(output_shape), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            *[input.new_empty(shape) for shape in kept])


# ----------------------------------------------------------------------------- backward
def rnn_backward_impl(input: Tensor, batch_sizes: Optional[Tensor], hx: Tensor, cx: Tensor,
                      weights: Tensor, masks: Optional[Tensor], output: Tensor,
                      layer_outputs: Tensor, gates: Tensor, grad_output: Tensor,
                      grad_h_n: Tensor, grad_c_n: Tensor, mode: str, num_layers: int,
                      bidirectional: bool, has_biases: bool, backend: str,
                      need_weight_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backpropagation through time for one rnn_forward call (its inputs, ``output``,
    ``layer_outputs`` and ``gates``): ``(grad_input, grad_hx, grad_cx, grad_weights)``;
    grad_weights is flat like ``weights``, or empty unless ``need_weight_grads``."""
    config = Config(mode, num_layers, bidirectional, has_biases, backend)
    structure = _structure_for(config, input, hx, cx)
    backend_module = _backend_for(backend, input.device)
    if structure.saved_size(1) and gates.shape[0] != structure.num_states:
        raise RuntimeError("fastrnn::rnn_backward needs the workspace of an rnn_forward call "
                           "with need_workspace=True")
    as_array = functools.partial(_as_array, backend=backend_module)
    rows, sizes = _packed_rows(input, batch_sizes, backend_module)
    blocks = tuple(as_array(block).reshape(shape) if used else None for block, shape, used
                   in zip((layer_outputs, gates), structure.saved_shapes(rows.shape[0]),
                          (num_layers > 1, structure.workspace_width > 0)))
    flat_grads = backend_module.ARRAYS.zeros(tuple(weights.shape), structure.dtype)
    grad_x, grad_states, _ = functional.backward_packed(
        backend_module, structure, rows, _state_arrays(structure, hx, cx, as_array),
        [as_array(w) for w in _weight_list(config, input, hx, cx, weights)], sizes,
        as_array(_rows(output, 0)), blocks, None if masks is None else as_array(_rows(masks, 1)),
        as_array(_rows(grad_output, 0)), _state_arrays(structure, grad_h_n, grad_c_n, as_array),
        unflatten_weights(flat_grads, list(structure.shapes().values())))
    device = input.device
    grad_weights = _as_tensor(flat_grads, device) if need_weight_grads else weights.new_empty(0)
    return (_as_tensor(grad_x.reshape(input.shape), device),
            *_state_tensors(structure, grad_states, cx, device), grad_weights)


rnn_backward = torch.library.custom_op("fastrnn::rnn_backward", mutates_args=(),
                                       device_types=("cpu", "cuda"))(rnn_backward_impl)


@rnn_backward.register_fake
def _rnn_backward_fake(input, batch_sizes, hx, cx, weights, masks, output, layer_outputs, gates,
                       grad_output, grad_h_n, grad_c_n, mode, num_layers, bidirectional,
                       has_biases, backend, need_weight_grads):
    grad_weights = weights.new_empty(weights.shape if need_weight_grads else (0,))
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            grad_weights)


# ----------------------------------------------------------------------------- vmap
# The batch axis of each tensor: input/output/grad_output [T, B, F] -> 1, packed [N, F] -> 0;
# states [S, B, H] -> 1; masks/layer_outputs/gates [K, T, B, F] / [K, N, F] -> one more than
# the input's.
def _fold(tensor, bdim, axis, size):
    """``tensor`` with its vmapped dimension (or a broadcast one, for bdim None) merged into
    dimension ``axis``: entry (b, v) lands at b * size + v."""
    if tensor is None:
        return None
    if bdim is None:
        tensor = tensor.unsqueeze(axis + 1)
        tensor = tensor.expand(*tensor.shape[:axis + 1], size, *tensor.shape[axis + 2:])
    else:
        tensor = tensor.movedim(bdim, axis + 1)
    return tensor.flatten(axis, axis + 1)


def _unfold(tensor, axis, size):
    """The inverse of _fold: (tensor with the vmapped dimension split out, its position)."""
    return tensor.unflatten(axis, (-1, size)), axis + 1


def _one_call_per_entry(op, info, in_dims, args):
    """The vmap rule that always holds: the operator once per vmapped entry, results stacked."""
    results = [op(*[a if d is None else a.select(d, v) for a, d in zip(args, in_dims)])
               for v in range(info.batch_size)]
    return tuple(torch.stack(r) for r in zip(*results)), (0,) * len(results[0])


def _folded_call(op, info, in_dims, args, axes, out_axes):
    """The operator once on the folded batch: ``args`` folded along ``axes`` (None: not
    batched, passed as they are), the outputs unfolded along ``out_axes`` (None: not batched,
    out_dim None). batch_sizes (argument 1) scales with the fold."""
    size = info.batch_size
    folded = [a if axis is None else _fold(a, d, axis, size)
              for a, d, axis in zip(args, in_dims, axes)]
    if folded[1] is not None:
        folded[1] = folded[1] * size
    outputs, dims = [], []
    for result, axis in zip(op(*folded), out_axes):
        result, dim = (result, None) if axis is None else _unfold(result, axis, size)
        outputs.append(result)
        dims.append(dim)
    return tuple(outputs), tuple(dims)


@rnn_forward.register_vmap
def _rnn_forward_vmap(info, in_dims, input, batch_sizes, hx, cx, weights, masks,
                      *config_and_flag):
    args = (input, batch_sizes, hx, cx, weights, masks, *config_and_flag)
    if in_dims[1] is not None or in_dims[4] is not None:
        return _one_call_per_entry(rnn_forward, info, in_dims, args)
    rows = 0 if batch_sizes is not None else 1
    return _folded_call(rnn_forward, info, in_dims, args,
                        (rows, None, 1, 1, None, rows + 1) + (None,) * len(config_and_flag),
                        (rows, 1, 1, rows + 1, rows + 1))


@rnn_backward.register_vmap
def _rnn_backward_vmap(info, in_dims, input, batch_sizes, hx, cx, weights, masks, output,
                       layer_outputs, gates, grad_output, grad_h_n, grad_c_n, *config_and_flag):
    args = (input, batch_sizes, hx, cx, weights, masks, output, layer_outputs, gates,
            grad_output, grad_h_n, grad_c_n, *config_and_flag)
    need_weight_grads = config_and_flag[-1]
    # folded, the weight gradients would be summed over the vmapped entries: per entry instead
    if need_weight_grads or in_dims[1] is not None or in_dims[4] is not None:
        return _one_call_per_entry(rnn_backward, info, in_dims, args)
    rows = 0 if batch_sizes is not None else 1
    return _folded_call(rnn_backward, info, in_dims, args,
                        (rows, None, 1, 1, None, rows + 1, rows, rows + 1, rows + 1, rows, 1, 1)
                        + (None,) * len(config_and_flag),
                        (rows, 1, 1, None))
