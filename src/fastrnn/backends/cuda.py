"""The 'cuda' backend: NVIDIA GPUs through Numba CUDA (package numba-cuda, extra ``fastrnn[cuda]``).

Why it is built this way. One layer-direction costs a handful of launches, none per time step,
and works on the PACKED rows only (backends/__init__.py), so a ragged batch costs its tokens:

    forward   out = x W_ih^T + (b_ih + b_hh)        one tiled GEMM over all N packed rows
              h_t = act(out_t + h_{t-1} W_hh^T)     ONE launch that loops over time; step t
                                                    computes its B_t rows, writes h_n of the
                                                    sequences ending there
    backward  g_t = dL/da_t for all t, dL/dh_0      ONE launch that loops over time
              dX = G W_ih, dW_ih = G^T X, dW_hh = G^T H_prev: tiled GEMMs; db: column sums of G

H_prev is a shifted view of ``out`` when all sequences have one length (no copy); for a ragged
batch a row's predecessor is not a fixed number of rows earlier, so one gather kernel builds
H_prev [N, H] first. The step sizes (``batch_sizes``) and offsets are copied to the device once
per call, as a [2, T+1] int64 "schedule" (see cuda_kernels).

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

The boundary: the entry points check every array once per call (device memory, shape, dtype,
byte order, strides, writeability; batch_sizes' values) before anything is launched, because
the kernels check nothing. Arrays are numba device arrays; anything with
``__cuda_array_interface__`` (CuPy, torch CUDA tensors) is wrapped without a copy, and
``ARRAYS.asarray`` copies host arrays in.
"""
import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import is_cuda_array
from .. import _checks

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
MAX_GRID_Y = 65535                   # CUDA's limit on a grid's y (and z) size; x goes to 2**31 - 1
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
    _launch(kernel, min(math.ceil(size / threads), MAX_GRID_Y), threads, *args)


# ----------------------------------------------------------------------------- boundary checks
def _on_device(what, a, written=False):
    """``a`` as a numba device array, without a copy; a clear error for host memory or, when
    the kernels write ``a``, a read-only export."""
    if getattr(a, "__cuda_ndarray__", False):
        return a
    interface = getattr(a, "__cuda_array_interface__", None)
    if interface is None:
        raise TypeError(f"Expected {what} to be a CUDA device array (a numba device array or an "
                        "object with __cuda_array_interface__), got "
                        f"{type(a).__module__}.{type(a).__qualname__}; move host arrays to the "
                        "device with fastrnn.backends.cuda.ARRAYS.asarray")
    if written and interface["data"][1]:
        raise ValueError(f"Expected {what} to be writable (the cuda backend writes into it), "
                         "got a read-only device array")
    itemsize = np.dtype(interface["typestr"]).itemsize
    if interface["data"][0] % itemsize:
        raise ValueError(f"Expected {what}'s data aligned to its {itemsize}-byte elements, got "
                         f"address {interface['data'][0]:#x}")
    return cuda.as_cuda_array(a)


def _check_native(what, dtype):
    """Kernels read native byte order only (torch refuses other byte orders too)."""
    dtype = np.dtype(dtype)
    if not dtype.isnative:
        order = "big" if dtype.byteorder == ">" else "little"
        raise ValueError(f"Expected {what} in the machine's native byte order, got a "
                         f"{order}-endian {dtype.name} array (dtype {dtype.str!r}); convert it "
                         f"with .astype(np.{dtype.name})")


def _check_layout(what, a, layout):
    """'C': C-contiguous. 'rows' ([N, H]): last axis contiguous, rows evenly spaced at least H
    elements apart (one half of a bidirectional [N, 2H] buffer qualifies)."""
    if a.size and layout == "C" and not a.is_c_contiguous():
        raise ValueError(f"Expected {what} to be C-contiguous, got strides {tuple(a.strides)} "
                         f"(bytes) for shape {tuple(a.shape)}")
    if a.size and layout == "rows" and not _rows_evenly_spaced(a):
        raise ValueError(f"Expected {what} [N, H] with a contiguous last axis and rows at least H "
                         f"elements apart, got strides {tuple(a.strides)} (bytes) for shape "
                         f"{tuple(a.shape)}")


def _rows_evenly_spaced(a):
    itemsize, (rows, columns), (row_stride, column_stride) = (
        np.dtype(a.dtype).itemsize, tuple(a.shape), tuple(a.strides))
    return ((columns == 1 or column_stride == itemsize) and
            (rows == 1 or (row_stride >= columns * itemsize and row_stride % itemsize == 0)))


def _checked(what, a, shape, dtype, layout="C", written=False):
    """``a`` as a device array (no copy) after checking everything the kernels rely on."""
    a = _on_device(what, a, written)
    _checks.check_same_shape(what, a, shape)
    _checks.check_array_dtype(what, a, dtype)
    _check_native(what, a.dtype)
    _check_layout(what, a, layout)
    return a


def check_batch_sizes(batch_sizes):
    """The packed layout's step sizes: a host int64 array [T], T >= 1, non-increasing, every
    entry >= 1 (their sum N and first entry B are checked as the arrays' shapes). Returns it."""
    if is_cuda_array(batch_sizes) or not isinstance(batch_sizes, np.ndarray):
        raise TypeError("Expected batch_sizes to be a host NumPy int64 array, got "
                        f"{type(batch_sizes).__module__}.{type(batch_sizes).__qualname__}")
    if batch_sizes.dtype != np.int64 or batch_sizes.ndim != 1 or len(batch_sizes) == 0:
        raise ValueError("Expected batch_sizes to be a non-empty 1-D int64 array, got dtype "
                         f"{batch_sizes.dtype.str!r} and shape {batch_sizes.shape}")
    if batch_sizes.min() < 1 or np.any(np.diff(batch_sizes) > 0):
        raise ValueError("Expected batch_sizes to be non-increasing with every entry >= 1 "
                         f"(sequences sorted by decreasing length), got {batch_sizes}")
    return batch_sizes


def _check_weights(w_ih, w_hh):
    """(w_ih, w_hh, dtype name, input size I, hidden size H), both weights checked."""
    w_hh = _on_device("w_hh", w_hh)
    if len(w_hh.shape) != 2 or w_hh.shape[0] != w_hh.shape[1]:
        raise _checks.ShapeError(f"Expected w_hh of shape (H, H), got {tuple(w_hh.shape)}")
    dtype = _checks.check_dtype_name(w_hh.dtype)
    hidden = w_hh.shape[0]
    w_ih = _on_device("w_ih", w_ih)
    if len(w_ih.shape) != 2 or w_ih.shape[0] != hidden:
        raise _checks.ShapeError(f"Expected w_ih of shape ({hidden}, I), got {tuple(w_ih.shape)}")
    return (_checked("w_ih", w_ih, w_ih.shape, dtype), _checked("w_hh", w_hh, w_hh.shape, dtype),
            dtype, w_ih.shape[1], hidden)


def _check_biases(names, biases, hidden, dtype, written=False):
    """Both biases (or bias gradients) [H], or both None."""
    if (biases[0] is None) != (biases[1] is None):
        raise ValueError(f"Expected {names[0]} and {names[1]} both arrays or both None")
    if biases[0] is None:
        return biases
    return tuple(_checked(name, b, (hidden,), dtype, written=written)
                 for name, b in zip(names, biases))


# ----------------------------------------------------------------------------- arrays
def _flat(a):
    return a.reshape(a.size)


def _host_index(index, limit):
    """A row index for take_rows/put_rows: host integers in [0, limit), as int64 [M]."""
    if is_cuda_array(index):
        raise TypeError("Expected index to be a host NumPy integer array (it is checked before "
                        "any kernel reads it), got a device array")
    index = np.asarray(index)
    if index.ndim != 1 or (index.dtype.kind not in "iu" and index.size):
        raise TypeError(f"Expected index to be a 1-D integer array, got dtype {index.dtype} and "
                        f"shape {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= limit):
        raise IndexError(f"index out of range: rows are 0..{limit - 1}, got {index.min()}.."
                         f"{index.max()}")
    return index.astype(np.int64)


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
            host = np.ascontiguousarray(a, dtype=dtype)
            _check_native("an array", host.dtype)
            return cuda.to_device(host)
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

    @staticmethod
    def take_rows(a, index):
        """a[index] for a 2-D device array and a host integer index (one gather kernel)."""
        a = _on_device("a", a)
        index = _host_index(index, a.shape[0])
        result = DeviceArrays.empty((len(index), a.shape[1]), a.dtype)
        if result.size:
            _launch_1d(kernels.gather_rows, result.size, a, cuda.to_device(index), result)
        return result

    @staticmethod
    def put_rows(shape, index, rows):
        """zeros(shape) with rows[i] at row index[i]; the index's entries must be distinct."""
        rows = _on_device("rows", rows)
        index = _host_index(index, shape[0])
        if tuple(rows.shape) != (len(index), shape[1]):
            raise _checks.ShapeError(f"Expected rows of shape {(len(index), shape[1])}, got "
                                     f"{tuple(rows.shape)}")
        if len(np.unique(index)) != len(index):
            raise ValueError("put_rows: the index has repeated entries (the kernel writes rows "
                             "in parallel, so only distinct rows have one answer)")
        result = DeviceArrays.zeros(shape, rows.dtype)
        if rows.size:
            _launch_1d(kernels.scatter_rows, rows.size, rows, cuda.to_device(index), result)
        return result


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
    """C = op(a) @ op(b) (+ bias) (+ C when accumulate) on 2-D device arrays of any strides;
    ``tile`` forces a tile shape."""
    (m, n), (a_m, k), (b_k, b_n) = (tuple(c.shape), tuple(a.shape)[::-1] if a_transposed else
                                    tuple(a.shape), tuple(b.shape)[::-1] if b_transposed else
                                    tuple(b.shape))
    if (a_m, b_k, b_n) != (m, k, n):
        raise ValueError(f"gemm_into: op(a) is {a_m}x{k}, op(b) {b_k}x{b_n}, c {m}x{n}")
    if m == 0 or n == 0 or (k == 0 and accumulate and bias is None):
        return
    dtype = np.dtype(c.dtype).name
    tile = tile or choose_tile(m, n)
    slab = MAX_GRID_Y * tile[1]         # the columns one launch covers (grid y is 16-bit)
    if n > slab:
        for start in range(0, n, slab):
            part = slice(start, start + slab)
            gemm_into(c[:, part], a, b[part] if b_transposed else b[:, part],
                      a_transposed=a_transposed, b_transposed=b_transposed,
                      bias=None if bias is None else bias[part], accumulate=accumulate, tile=tile)
        return
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


def _device_schedule(batch_sizes):
    """[2, T+1] int64 on the device: B_t then 0, offset_t then N (see cuda_kernels)."""
    schedule = np.zeros((2, len(batch_sizes) + 1), np.int64)
    schedule[0, :-1] = batch_sizes
    schedule[1, 1:] = np.cumsum(batch_sizes)
    return cuda.to_device(schedule)


def _is_equal_length(batch_sizes):
    return bool((batch_sizes == batch_sizes[0]).all())


# ----------------------------------------------------------------------------- the contract
def rnn_forward_cuda(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, relu, out, h_n):
    # x [N, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih/b_hh [H] or None,
    # batch_sizes [T] (host), out [N, H] (rows layout), h_n [B, H]
    w_ih, w_hh, dtype, inputs, hidden = _check_weights(w_ih, w_hh)
    batch_sizes = check_batch_sizes(batch_sizes)
    rows, batch = int(batch_sizes.sum()), int(batch_sizes[0])
    x = _checked("x", x, (rows, inputs), dtype)
    h0 = _checked("h0", h0, (batch, hidden), dtype)
    b_ih, b_hh = _check_biases(("b_ih", "b_hh"), (b_ih, b_hh), hidden, dtype)
    out = _checked("out", out, (rows, hidden), dtype, "rows", written=True)
    h_n = _checked("h_n", h_n, (batch, hidden), dtype, written=True)

    bias = None if b_ih is None else DeviceArrays.add(b_ih, b_hh)
    gemm_into(out, x, w_ih, b_transposed=True, bias=bias)                  # x W_ih^T + b
    if hidden:
        _run_recurrence(_FORWARD, (h0, _flat(w_hh), out, h_n, _device_schedule(batch_sizes),
                                   bool(reverse), bool(relu)), batch, hidden, dtype)


def rnn_backward_cuda(x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, grad_out, grad_hn,
                      grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py; grad_b_ih/grad_b_hh [H] or None
    w_ih, w_hh, dtype, inputs, hidden = _check_weights(w_ih, w_hh)
    batch_sizes = check_batch_sizes(batch_sizes)
    rows, batch = int(batch_sizes.sum()), int(batch_sizes[0])
    x = _checked("x", x, (rows, inputs), dtype)
    h0 = _checked("h0", h0, (batch, hidden), dtype)
    out = _checked("out", out, (rows, hidden), dtype, "rows")
    grad_out = _checked("grad_out", grad_out, (rows, hidden), dtype, "rows")
    grad_hn = _checked("grad_hn", grad_hn, (batch, hidden), dtype)
    grad_x = _checked("grad_x", grad_x, (rows, inputs), dtype, written=True)
    grad_h0 = _checked("grad_h0", grad_h0, (batch, hidden), dtype, written=True)
    grad_w_ih = _checked("grad_w_ih", grad_w_ih, (hidden, inputs), dtype, written=True)
    grad_w_hh = _checked("grad_w_hh", grad_w_hh, (hidden, hidden), dtype, written=True)
    grad_b_ih, grad_b_hh = _check_biases(("grad_b_ih", "grad_b_hh"), (grad_b_ih, grad_b_hh),
                                         hidden, dtype, written=True)

    grad_a = DeviceArrays.empty((rows, hidden), dtype)                      # dL/da [N, H]
    schedule = _device_schedule(batch_sizes)
    if hidden:
        w_hh_t = DeviceArrays.swap_batch_time(w_hh.reshape(hidden, hidden, 1))   # W_hh^T
        _run_recurrence(_BACKWARD, (grad_out, out, grad_hn, _flat(w_hh_t), grad_a, grad_h0,
                                    schedule, bool(reverse), bool(relu)), batch, hidden, dtype)
    gemm_into(grad_x, grad_a, w_ih, accumulate=accumulate_x)                # G W_ih
    gemm_into(grad_w_ih, grad_a, x, a_transposed=True, accumulate=True)     # G^T X
    _add_recurrent_weight_grad(grad_w_hh, grad_a, out, h0, batch_sizes, schedule, reverse)
    if grad_b_ih is not None and hidden:
        threads = min(COLUMN_SUM_THREADS, _round_up(hidden, 32))
        _launch(kernels.column_sums_kernel(dtype), math.ceil(hidden / threads), threads,
                grad_a, grad_b_ih, grad_b_hh)


def _add_recurrent_weight_grad(grad_w_hh, grad_a, out, h0, batch_sizes, schedule, reverse):
    """grad_w_hh += G^T H_prev. Equal lengths: h_{t-1} is ``out`` one step (B rows) earlier in
    this direction's walk, and h0 at its first step: two products on row ranges, no copy.
    Ragged: H_prev gathered by one kernel, then one product."""
    rows, hidden = grad_a.shape
    if not hidden:
        return
    if not _is_equal_length(batch_sizes):
        h_prev = DeviceArrays.empty((rows, hidden), grad_a.dtype)
        _launch_1d(kernels.previous_states, h_prev.size, out, h0, schedule, bool(reverse),
                   h_prev)
        gemm_into(grad_w_hh, grad_a, h_prev, a_transposed=True, accumulate=True)
        return
    batch = int(batch_sizes[0])
    later, earlier = (slice(0, rows - batch), slice(batch, rows)) if reverse else \
        (slice(batch, rows), slice(0, rows - batch))
    if rows > batch:
        gemm_into(grad_w_hh, grad_a[later], out[earlier], a_transposed=True, accumulate=True)
    first = slice(rows - batch, rows) if reverse else slice(0, batch)
    gemm_into(grad_w_hh, grad_a[first], h0, a_transposed=True, accumulate=True)


rnn_forward = rnn_forward_cuda
rnn_backward = rnn_backward_cuda
