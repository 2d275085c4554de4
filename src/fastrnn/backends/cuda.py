"""The 'cuda' backend: NVIDIA GPUs through Numba CUDA (package numba-cuda, extra ``fastrnn[cuda]``).

Why it is built this way. One layer-direction costs a handful of launches, none per time step:

    forward   out = x W_ih^T + (b_ih + b_hh)        one tiled GEMM over all T*B rows, into out
              h_t = act(out_t + h_{t-1} W_hh^T)     ONE launch that loops over time
    backward  g_t = dL/da_t for all t, dL/dh_0      ONE launch that loops over time
              dX = G W_ih, dW_ih = G^T X, dW_hh = G^T H_prev: tiled GEMMs; db: column sums of G

The products run on Numba's tiled GEMM kernel (cuda_kernels.gemm_kernel), the only path:
CuPy/cuBLAS is not a dependency, and one code path is one path that CI runs in the simulator.

Which time-loop kernel runs (the "strategy", see plan_recurrence):

    rows  when one block's shared memory holds ALL of W_hh (H*(H+1) words plus one scratch word
          per thread within 48 KiB: up to H = 109 in float32, 76 in float64). Each block owns
          whole batch rows (256 // H of them, at least 1) and every hidden unit, so it waits
          only for its own threads between steps; B just sets the number of blocks.
    grid  otherwise. Each block owns a slice of W_hh's rows (hidden units) for all B rows;
          blocks exchange h_t through global memory and meet at ONE grid barrier per step
          (cooperative launch: the grid has at most max_cooperative_grid_blocks blocks, and at
          most H). Each step every block reads all of h_{t-1}, so the grid has one block per
          multiprocessor, unless more (smaller) slices let W_hh stay in shared memory and those
          extra blocks' reads of h_{t-1} cost less than the grid reading W_hh from global memory
          (the L2 cache) at every step, which is what blocks do otherwise (large H, float64).

``forced_recurrence(strategy=..., weights_on_chip=...)`` overrides the choice (tests, benchmarks).
48 KiB is what every GPU gives one block without an opt-in; numba-cuda has no public API for the
opt-in (up to 227 KiB on H100), so the rule stays within it.

Arrays are numba device arrays. ``ARRAYS.asarray`` wraps anything with
``__cuda_array_interface__`` (CuPy, torch CUDA tensors) without a copy and copies host arrays in.
"""
import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import is_cuda_array

try:
    from numba import config as _numba_config
    from numba import cuda
    from . import cuda_kernels as kernels
    _IMPORT_ERROR = None
except ImportError as exc:          # numba-cuda is an optional dependency
    cuda = kernels = _numba_config = None
    _IMPORT_ERROR = exc

SHARED_BYTES_PER_BLOCK = 48 * 1024
MAX_THREADS = 256
ROW_OUTPUTS_PER_BLOCK = 256          # rows strategy: batch rows per block = this // H, at least 1
LARGE_TILE_MIN_BLOCKS = 128          # GEMM: big tiles only when they still make a full wave
ELEMENTWISE_THREADS = 256
COLUMN_SUM_THREADS = 128

_forced = {"strategy": None, "weights_on_chip": None}


def _in_simulator():
    return bool(_numba_config.ENABLE_CUDASIM)


def unavailable_reason():
    if _IMPORT_ERROR is not None:
        return (f"numba-cuda is not installed ({_IMPORT_ERROR}); install it with "
                "`pip install fastrnn[cuda]`")
    if _in_simulator() or cuda.is_available():
        return None
    try:
        cuda.get_current_device()
    except Exception as exc:            # numba's CudaSupportError / CudaDriverError, as they come
        return "numba-cuda cannot use a GPU here: " + " ".join(str(exc).split()).rstrip(" :")
    return "numba-cuda found no usable CUDA GPU (numba.cuda.is_available() is False)"


# ----------------------------------------------------------------------------- launches
@contextlib.contextmanager
def _small_grids_allowed():
    """Small grids are deliberate here (one block per few batch rows, tiny products): numba's
    warning for grids under 128 blocks would only be noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU "
                                                  "under-utilization")
        yield


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


def _launch(kernel, blocks, threads, *args, shared_bytes=0):
    with _small_grids_allowed():
        kernel[blocks, threads, 0, shared_bytes](*args)


def _launch_1d(kernel, size, *args):
    """A grid-stride kernel over ``size`` items (callers skip empty arrays)."""
    threads = min(ELEMENTWISE_THREADS, _round_up(size, 32))
    _launch(kernel, min(math.ceil(size / threads), 65535), threads, *args)


# ----------------------------------------------------------------------------- arrays
def _flat(a):
    return a.reshape(a.size)


class DeviceArrays:
    """The contract's array operations (see backends/__init__.py) on numba device arrays."""

    @staticmethod
    def is_device_array(a):
        return is_cuda_array(a)

    @staticmethod
    def asarray(a, dtype=None):
        """A numba device array: device memory is wrapped (no copy), host data copied in."""
        if getattr(a, "__cuda_ndarray__", False):
            device = a
        elif hasattr(a, "__cuda_array_interface__"):
            device = cuda.as_cuda_array(a)
        else:
            return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))
        if dtype is not None and np.dtype(dtype) != device.dtype:
            converted = DeviceArrays.empty(device.shape, dtype)
            DeviceArrays.copy_into(converted, device)
            return converted
        return device

    @staticmethod
    def to_host(a):
        if not DeviceArrays.is_device_array(a):
            return np.asarray(a)
        return DeviceArrays.contiguous(DeviceArrays.asarray(a)).copy_to_host()

    @staticmethod
    def empty(shape, dtype):
        return cuda.device_array(shape, dtype=np.dtype(dtype))

    @staticmethod
    def zeros(shape, dtype):
        a = DeviceArrays.empty(shape, dtype)
        if a.size:
            _launch_1d(kernels.fill, a.size, _flat(a), np.dtype(dtype).type(0))
        return a

    @staticmethod
    def contiguous(a):
        if a.is_c_contiguous():
            return a
        copy = DeviceArrays.empty(a.shape, a.dtype)
        DeviceArrays.copy_into(copy, a)
        return copy

    @staticmethod
    def swap_batch_time(a):
        swapped = DeviceArrays.empty((a.shape[1], a.shape[0]) + tuple(a.shape[2:]), a.dtype)
        if swapped.size:
            _launch_1d(kernels.swap_first_axes, swapped.size, a, swapped)
        return swapped

    @staticmethod
    def copy_into(dst, src):
        if dst.size:
            with _small_grids_allowed():
                dst[:] = src            # numba's strided assignment kernel (simulator: numpy's)

    @staticmethod
    def multiply(a, b):
        return _elementwise(a, b, multiply=True)

    @staticmethod
    def add(a, b):
        return _elementwise(a, b, multiply=False)


def _elementwise(a, b, multiply):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"elementwise operands must have one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    result = DeviceArrays.empty(a.shape, a.dtype)
    if result.size:
        a, b = DeviceArrays.contiguous(a), DeviceArrays.contiguous(b)
        _launch_1d(kernels.elementwise, result.size, _flat(a), _flat(b), _flat(result), multiply)
    return result


ARRAYS = DeviceArrays


# ----------------------------------------------------------------------------- products
def _as_rows(matrix):
    """A C-contiguous 2-D [R, F] array as the row array [1, R, F] the GEMM kernel reads."""
    return matrix.reshape((1,) + tuple(matrix.shape))


def choose_tile(m, n):
    """The big register tile when it still gives a full wave of blocks, else the small one."""
    large_m, large_n = kernels.LARGE_TILE[:2]
    large_blocks = math.ceil(m / large_m) * math.ceil(n / large_n)
    return kernels.LARGE_TILE if large_blocks >= LARGE_TILE_MIN_BLOCKS else kernels.SMALL_TILE


@functools.lru_cache(maxsize=None)
def _no_bias(dtype):
    """A one-element stand-in for the bias argument the GEMM kernel does not read."""
    return DeviceArrays.zeros(1, dtype)


def gemm_into(c, a, b, *, a_transposed=False, b_transposed=False, bias=None, accumulate=False,
              tile=None):
    """C = op(a) @ op(b) (+ bias) (+ C when accumulate), all operands row arrays [P, Q, F] read
    as [P*Q, F] matrices (see cuda_kernels); ``tile`` forces a tile shape."""
    m, n = c.shape[0] * c.shape[1], c.shape[2]
    a_rows, a_cols = a.shape[0] * a.shape[1], a.shape[2]
    b_rows, b_cols = b.shape[0] * b.shape[1], b.shape[2]
    (a_m, k), (b_k, b_n) = ((a_cols, a_rows) if a_transposed else (a_rows, a_cols),
                            (b_cols, b_rows) if b_transposed else (b_rows, b_cols))
    if (a_m, b_k, b_n) != (m, k, n):
        raise ValueError(f"gemm_into: op(a) is {a_m}x{k}, op(b) {b_k}x{b_n}, c {m}x{n}")
    if m == 0 or n == 0 or (k == 0 and accumulate and bias is None):
        return
    dtype = np.dtype(c.dtype).name
    tile = tile or choose_tile(m, n)
    blocks = (math.ceil(m / tile[0]), math.ceil(n / tile[1]))
    bias_arg = _no_bias(dtype) if bias is None else bias
    _launch(kernels.gemm_kernel(dtype, tile), blocks, kernels.tile_threads(tile),
            a, a_transposed, b, b_transposed, bias_arg, bias is not None, c, accumulate)


# ----------------------------------------------------------------------------- the time loop
@dataclass(frozen=True)
class RecurrencePlan:
    """How one time-loop launch is laid out (see the module header)."""
    strategy: str                 # "rows" or "grid"
    row_blocks: int               # blocks along the batch (rows) and along the hidden units
    unit_blocks: int
    threads: int
    rows_per_block: int
    units_per_block: int
    lanes: int                    # threads that share one output's dot product
    weights_on_chip: bool
    shared_bytes: int

    @property
    def grid(self):
        return self.row_blocks, self.unit_blocks


@dataclass(frozen=True)
class DeviceLimits:
    """What the grid strategy's plan needs to know about the GPU."""
    multiprocessors: int
    cooperative_blocks: object    # (threads, shared_bytes) -> most blocks in a cooperative grid


@contextlib.contextmanager
def forced_recurrence(strategy=None, weights_on_chip=None):
    """Inside the ``with`` block, use ``strategy`` ('rows' or 'grid') and, for 'grid', keep W_hh
    in shared memory or not (``weights_on_chip``); None leaves that choice to the shape."""
    if strategy not in (None, "rows", "grid"):
        raise ValueError(f"strategy must be 'rows', 'grid' or None, got {strategy!r}")
    saved = dict(_forced)
    _forced.update(strategy=strategy, weights_on_chip=weights_on_chip)
    try:
        yield
    finally:
        _forced.update(saved)


def _threads_for(outputs):
    return min(MAX_THREADS, _round_up(outputs, 32))


def _lanes(threads, outputs):
    """Threads per dot product: a power of two (<= 32) so idle threads help when outputs are few."""
    lanes = 1
    while lanes * 2 <= min(32, threads // outputs):
        lanes *= 2
    return lanes


def _rows_plan(batch, hidden, itemsize):
    rows = max(1, min(batch, ROW_OUTPUTS_PER_BLOCK // hidden))
    threads = _threads_for(rows * hidden)
    return RecurrencePlan("rows", math.ceil(batch / rows), 1, threads, rows, hidden,
                          _lanes(threads, rows * hidden), True,
                          (threads + hidden * (hidden + 1)) * itemsize)


def _grid_plan_of(batch, hidden, itemsize, threads, blocks, on_chip):
    units = math.ceil(hidden / blocks)
    weight_words = units * (hidden + 1) if on_chip else 0
    return RecurrencePlan("grid", 1, math.ceil(hidden / units), threads, batch, units,
                          _lanes(threads, batch * units), on_chip,
                          (threads + weight_words) * itemsize)


def _grid_plan_on_chip(batch, hidden, itemsize, threads, limits):
    """W_hh's slices in shared memory: the fewest blocks (at least one per multiprocessor) whose
    slices fit in a block; None when that grid is too big for a cooperative launch."""
    max_units = (SHARED_BYTES_PER_BLOCK // itemsize - threads) // (hidden + 1)
    if max_units < 1:
        return None
    blocks = max(min(hidden, limits.multiprocessors), math.ceil(hidden / max_units))
    plan = _grid_plan_of(batch, hidden, itemsize, threads, blocks, True)
    fits = limits.cooperative_blocks(threads, plan.shared_bytes) >= plan.unit_blocks
    return plan if fits else None


def _grid_plan(batch, hidden, itemsize, limits, weights_on_chip):
    """Grid strategy. Per step every block reads all of h_{t-1} (B*H words) and, with W_hh off
    chip, the grid reads W_hh (H*H words) from L2: on chip wins when its extra blocks' reads,
    (blocks_on - blocks_off) * B * H, cost less than H * H."""
    threads = _threads_for(batch * hidden)
    off_chip_blocks = min(hidden, limits.multiprocessors,
                          limits.cooperative_blocks(threads, threads * itemsize))
    if off_chip_blocks < 1:
        raise RuntimeError(f"the grid time-loop kernel cannot be launched cooperatively with "
                           f"{threads} threads per block on this GPU")
    off_chip = _grid_plan_of(batch, hidden, itemsize, threads, off_chip_blocks, False)
    on_chip = (None if weights_on_chip is False
               else _grid_plan_on_chip(batch, hidden, itemsize, threads, limits))
    if weights_on_chip and on_chip is None:
        raise ValueError(f"cannot keep W_hh (H={hidden}) in shared memory: the grid it needs "
                         f"(slices within {SHARED_BYTES_PER_BLOCK} bytes) is too big to launch "
                         "cooperatively")
    if on_chip is None:
        return off_chip
    extra_reads = (on_chip.unit_blocks - off_chip.unit_blocks) * batch * hidden
    return on_chip if weights_on_chip or extra_reads <= hidden * hidden else off_chip


def plan_recurrence(batch, hidden, itemsize, device_limits):
    """The launch plan for a time loop over B=batch rows of H=hidden units (rule: module
    header). ``device_limits()`` gives the DeviceLimits, asked only for the grid strategy (it
    compiles the grid kernel). ``forced_recurrence`` overrides the rule."""
    strategy = _forced["strategy"]
    rows = _rows_plan(batch, hidden, itemsize)
    fits = rows.shared_bytes <= SHARED_BYTES_PER_BLOCK
    if strategy == "rows" and not fits:
        raise ValueError(f"cannot use the 'rows' strategy: W_hh (H={hidden}) needs "
                         f"{rows.shared_bytes} bytes of shared memory, a block has "
                         f"{SHARED_BYTES_PER_BLOCK}")
    if strategy == "rows" or (strategy is None and fits):
        return rows
    return _grid_plan(batch, hidden, itemsize, device_limits(), _forced["weights_on_chip"])


def _device_limits(grid_kernel, args):
    """The DeviceLimits of the current GPU for ``grid_kernel`` launched with ``args``."""
    if _in_simulator():             # the simulator runs blocks one at a time: one-block grids
        return DeviceLimits(1, lambda threads, shared_bytes: 1)
    overload = grid_kernel.compile(tuple(grid_kernel.typeof_pyval(arg) for arg in args))
    return DeviceLimits(cuda.get_current_device().MULTIPROCESSOR_COUNT,
                        overload.max_cooperative_grid_blocks)


def _run_recurrence(which, data_args, batch, hidden, dtype):
    """Launch the forward (which=0) or backward (which=1) time-loop kernel as planned."""
    dtype = np.dtype(dtype)
    rows_kernel = kernels.recurrent_kernels(dtype.name, False)[which]
    grid_kernel = kernels.recurrent_kernels(dtype.name, True)[which]
    plan_args = (1, 1, 1, False)         # types only: the plan's ints and flag
    plan = plan_recurrence(batch, hidden, dtype.itemsize,
                           lambda: _device_limits(grid_kernel, data_args + plan_args))
    kernel = grid_kernel if plan.strategy == "grid" else rows_kernel
    _launch(kernel, plan.grid, plan.threads, *data_args, plan.rows_per_block,
            plan.units_per_block, plan.lanes, plan.weights_on_chip, shared_bytes=plan.shared_bytes)
    return plan


_FORWARD, _BACKWARD = 0, 1


# ----------------------------------------------------------------------------- the contract
def rnn_forward_cuda(x, h0, w_ih, w_hh, bias, out, reverse, relu):
    # x [T, B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], bias [H] or None, out [T, B, H]
    hidden = w_hh.shape[0]
    gemm_into(out, x, _as_rows(w_ih), b_transposed=True, bias=bias)        # x W_ih^T + b
    _run_recurrence(_FORWARD, (h0, w_hh.reshape(hidden * hidden), out, bool(reverse), bool(relu)),
                    out.shape[1], hidden, out.dtype)


def rnn_backward_cuda(x, h0, w_ih, w_hh, out, grad_out, grad_hn, reverse, relu,
                      grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py; grad_b_ih/grad_b_hh [H] or None
    steps, batch, hidden = out.shape
    grad_a = DeviceArrays.empty((steps, batch, hidden), out.dtype)          # dL/da_t [T, B, H]
    w_hh_t = DeviceArrays.swap_batch_time(w_hh.reshape(hidden, hidden, 1))  # W_hh^T [H, H, 1]
    _run_recurrence(_BACKWARD, (grad_out, out, grad_hn, w_hh_t.reshape(hidden * hidden), grad_a,
                                grad_h0, bool(reverse), bool(relu)), batch, hidden, out.dtype)
    gemm_into(grad_x, grad_a, _as_rows(w_ih), accumulate=accumulate_x)      # G W_ih
    gemm_into(_as_rows(grad_w_ih), grad_a, x, a_transposed=True, accumulate=True)   # G^T X
    _add_recurrent_weight_grad(grad_w_hh, grad_a, out, h0, reverse)
    if grad_b_ih is not None:
        threads = min(COLUMN_SUM_THREADS, _round_up(hidden, 32))
        _launch(kernels.column_sums_kernel(np.dtype(out.dtype).name), math.ceil(hidden / threads),
                threads, grad_a, grad_b_ih, grad_b_hh)


def _add_recurrent_weight_grad(grad_w_hh, grad_a, out, h0, reverse):
    """grad_w_hh += G^T H_prev: h_{t-1} is ``out`` one step earlier in this direction's time
    order, and h0 at the first step, so it is two products on slices, no [T, B, H] copy."""
    steps = out.shape[0]
    grad_w_hh = _as_rows(grad_w_hh)
    if steps > 1:
        later, earlier = ((grad_a[:steps - 1], out[1:]) if reverse
                          else (grad_a[1:], out[:steps - 1]))
        gemm_into(grad_w_hh, later, earlier, a_transposed=True, accumulate=True)
    first = steps - 1 if reverse else 0
    gemm_into(grad_w_hh, grad_a[first:first + 1], _as_rows(h0), a_transposed=True, accumulate=True)


rnn_forward = rnn_forward_cuda
rnn_backward = rnn_backward_cuda
