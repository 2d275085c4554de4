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

LSTM and GRU are the same recipe with gates (cuda_gated_kernels' header has the kernels):

    forward   workspace[:, :4H or 3H] = x W_ih^T + b   ONE GEMM (GRU: b_hh's n part left out:
                                                     b_hn sits inside r * (.))
              one time-loop launch: per step the product h_{t-1} W_hh^T (all of a unit's gate
              rows in one pass), then the gates in one fused pass, written over their
              pre-activations in the contract's workspace layout; LSTM with proj_size: a
              barrier, then h_t = (o tanh c_t) W_hr^T, a second product in the same step
    backward  one time-loop launch: dL/dh_{t-1} = dA_t W_hh per step, then each unit's gates'
              gradients dA; then merged GEMMs: dX = dA W_ih, dW_ih = dA^T X,
              dW_hh = dA_h^T H_prev (GRU's dA_h: [d_r, d_z, d_n r]), bias column sums, LSTM's
              dW_hr = dH^T (o tanh c). dL/d(o tanh c_t) = dH_t W_hr is the loop's second
              product, not a merged one: dA_t needs it, and dH_{t-1} needs dA_t.

The products run on Numba's tiled GEMM kernel (cuda_kernels.gemm_kernel), the only path:
CuPy/cuBLAS is not a dependency, and one code path is one path that CI runs in the simulator.

Which time-loop kernel runs (the "strategy", see plan_recurrence):

    rows  when one block's shared memory holds ALL the loop's weights and a scratch word per
          thread and gate within 48 KiB (each unit's rows padded to an odd number of words):
          Elman up to H = 109 in float32 and 76 in float64, LSTM 53 and 35, GRU 61 and 42
          (B >= 8; a little more at B = 1, where a block has fewer threads).
          Each block owns whole batch rows (256 // H of them, at least 1) and every hidden
          unit, so it waits only for its own threads between steps; B just sets the number of
          blocks.
    grid  otherwise. Each block owns a slice of W_hh's rows (hidden units) for all B rows;
          blocks exchange h_t through global memory and meet at ONE grid barrier per step
          (cooperative launch: the grid has at most max_cooperative_grid_blocks blocks, and at
          most H). Each step every block reads all of h_{t-1}, so the grid has one block per
          multiprocessor, unless more (smaller) slices let W_hh stay in shared memory and those
          extra blocks' reads of h_{t-1} cost less than the grid reading W_hh from global memory
          (the L2 cache) at every step, which is what blocks do otherwise (large H, float64).
          A gated unit's slice holds all its gate rows; LSTM's projection is sliced over the
          same blocks (a second grid barrier per step).

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
    _IMPORT_ERROR = None
except ImportError as exc:          # numba-cuda is an optional dependency
    cuda = _numba_config = kernels = gated_kernels = None
    _IMPORT_ERROR = exc
if _IMPORT_ERROR is None:           # outside the try: an error of ours is not a missing numba
    from . import cuda_gated_kernels as gated_kernels
    from . import cuda_kernels as kernels

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


@dataclass(frozen=True)
class _Layer:
    """One call's dtype and sizes, from its checked weights and batch_sizes; ``array`` checks
    every further array against them."""
    dtype: str
    batch_sizes: np.ndarray
    rows: int                   # N, packed rows
    batch: int                  # B
    inputs: int                 # I
    hidden: int                 # H
    width: int                  # P: the size of h (H, unless LSTM's proj_size)
    gates: int                  # weight rows per hidden unit: 1 Elman, 3 GRU, 4 LSTM

    def array(self, what, a, shape, layout="C", written=False):
        return _checked(what, a, shape, self.dtype, layout, written)


def _check_layer(w_ih, w_hh, batch_sizes, gates=1, projected=False):
    """(w_ih, w_hh, _Layer): w_hh [gates*H, P] with P == H unless ``projected`` (LSTM's
    proj_size), w_ih [gates*H, I], and batch_sizes, checked."""
    w_hh = _on_device("w_hh", w_hh)
    shape = tuple(w_hh.shape)
    if (len(shape) != 2 or shape[0] % gates or
            (not projected and shape[0] != gates * shape[1])):
        raise _checks.ShapeError(f"Expected w_hh of shape ({gates if gates > 1 else ''}H, "
                                 f"{'P' if projected else 'H'}), got {shape}")
    dtype = _checks.check_dtype_name(w_hh.dtype)
    hidden = shape[0] // gates
    w_ih = _on_device("w_ih", w_ih)
    if len(w_ih.shape) != 2 or w_ih.shape[0] != gates * hidden:
        raise _checks.ShapeError(f"Expected w_ih of shape ({gates * hidden}, I), got "
                                 f"{tuple(w_ih.shape)}")
    batch_sizes = check_batch_sizes(batch_sizes)
    layer = _Layer(dtype, batch_sizes, int(batch_sizes.sum()), int(batch_sizes[0]),
                   w_ih.shape[1], hidden, shape[1], gates)
    return layer.array("w_ih", w_ih, w_ih.shape), layer.array("w_hh", w_hh, shape), layer


def _check_biases(names, biases, size, dtype, written=False):
    """Both biases (or bias gradients) [size], or both None."""
    if (biases[0] is None) != (biases[1] is None):
        raise ValueError(f"Expected {names[0]} and {names[1]} both arrays or both None")
    if biases[0] is None:
        return biases
    return tuple(_checked(name, b, (size,), dtype, written=written)
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
def _placeholder(dtype, ndim=1):
    """A one-element stand-in for an array argument a kernel does not read (the GEMM's bias
    without one, LSTM's projection arrays without proj_size)."""
    return DeviceArrays.zeros((1,) * ndim, dtype)


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
    bias_arg = _placeholder(dtype) if bias is None else bias
    _launch(kernels.gemm_kernel(dtype, tile), blocks, kernels.tile_threads(tile),
            a, a_transposed, b, b_transposed, bias_arg, bias is not None, c, accumulate)


# ----------------------------------------------------------------------------- the time loop
@dataclass(frozen=True)
class StepProduct:
    """One product of a time-loop step, per batch row: a vector of ``length`` entries times the
    weight rows of ``units`` output units, ``gates`` rows each (Elman: H units, 1 row of H)."""
    units: int
    gates: int
    length: int

    def weight_words(self, units):
        """Shared-memory words the rows of ``units`` units take (each unit's rows padded to an
        odd number of words, cuda_kernels.padded_unit_words)."""
        return units * kernels.padded_unit_words(self.gates * self.length)

    @property
    def weight_count(self):
        return self.units * self.gates * self.length


@dataclass(frozen=True)
class LoopShape:
    """What a time-loop kernel computes per step: its ``step`` product, then (LSTM with
    proj_size only) a ``projection`` product of the step's results, after a barrier."""
    step: StepProduct
    projection: StepProduct = None

    @property
    def products(self):
        return (self.step,) if self.projection is None else (self.step, self.projection)


def elman_loop(hidden):
    """The Elman cell's time loop, forward or backward: H units, one row of W_hh (or W_hh^T)."""
    return LoopShape(StepProduct(hidden, 1, hidden))


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
    projection_units_per_block: int = 0     # the same for the projection product, if any
    projection_lanes: int = 1

    @property
    def grid(self):
        return self.row_blocks, self.unit_blocks

    @property
    def layout(self):
        """The kernels' ``layout`` argument (cuda_kernels.time_loop)."""
        return (self.rows_per_block, self.units_per_block, self.lanes,
                self.projection_units_per_block, self.projection_lanes)


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
    return min(MAX_THREADS, _round_up(max(outputs, 1), 32))


def _lanes(threads, outputs):
    """Threads per dot product: a power of two (<= 32) so idle threads help when outputs are few."""
    lanes = 1
    while lanes * 2 <= min(32, threads // max(outputs, 1)):
        lanes *= 2
    return lanes


def _plan_of(strategy, shape, batch, threads, row_blocks, rows, units, on_chip, itemsize):
    """The plan whose blocks own ``rows`` batch rows and at most ``units`` of the step's units
    (as many blocks as that takes, sharing the units evenly; the projection's units likewise);
    shared memory: the reduction scratch, and the weight rows when they are on chip."""
    step, projection = shape.step, shape.projection
    unit_blocks = math.ceil(step.units / units)
    units = math.ceil(step.units / unit_blocks)
    projection_units = 0 if projection is None else math.ceil(projection.units / unit_blocks)
    words = threads * step.gates
    if on_chip:
        words += step.weight_words(units)
        words += 0 if projection is None else projection.weight_words(projection_units)
    return RecurrencePlan(strategy, row_blocks, unit_blocks, threads, rows, units,
                          _lanes(threads, rows * units), on_chip, words * itemsize,
                          projection_units, _lanes(threads, rows * projection_units))


def _rows_plan(batch, shape, itemsize):
    units = shape.step.units
    rows = max(1, min(batch, ROW_OUTPUTS_PER_BLOCK // max(units, 1)))
    return _plan_of("rows", shape, batch, _threads_for(rows * units), math.ceil(batch / rows),
                    rows, units, True, itemsize)


def _grid_plan_on_chip(batch, shape, itemsize, threads, limits):
    """The weight rows in shared memory: the fewest blocks (at least one per multiprocessor)
    whose slices fit in a block; None when that grid is too big for a cooperative launch."""
    step = shape.step
    units = min(math.ceil(step.units / min(step.units, limits.multiprocessors)),
                (SHARED_BYTES_PER_BLOCK // itemsize - threads * step.gates)
                // step.weight_words(1))
    for units in range(units, 0, -1):         # the projection's slice shrinks with the step's
        plan = _plan_of("grid", shape, batch, threads, 1, batch, units, True, itemsize)
        if plan.shared_bytes <= SHARED_BYTES_PER_BLOCK:
            fits = limits.cooperative_blocks(threads, plan.shared_bytes) >= plan.unit_blocks
            return plan if fits else None
    return None


def _grid_plan(batch, shape, itemsize, limits, weights_on_chip):
    """Grid strategy. Per step every block reads every batch row's vectors (B*length words per
    product) and, with the weights off chip, the grid reads all weight rows from L2: on chip
    wins when its extra blocks' reads cost less than the weights (Elman: (blocks_on -
    blocks_off) * B * H <= H * H)."""
    step = shape.step
    threads = _threads_for(batch * step.units)
    off_chip_blocks = min(step.units, limits.multiprocessors,
                          limits.cooperative_blocks(threads, threads * step.gates * itemsize))
    if off_chip_blocks < 1:
        raise RuntimeError(f"the grid time-loop kernel cannot be launched cooperatively with "
                           f"{threads} threads per block on this GPU")
    off_chip = _plan_of("grid", shape, batch, threads, 1, batch,
                        math.ceil(step.units / off_chip_blocks), False, itemsize)
    on_chip = (None if weights_on_chip is False
               else _grid_plan_on_chip(batch, shape, itemsize, threads, limits))
    if weights_on_chip and on_chip is None:
        raise ValueError(f"cannot keep W_hh in shared memory ({shape}): the grid it needs "
                         f"(slices within {SHARED_BYTES_PER_BLOCK} bytes) is too big to launch "
                         "cooperatively")
    if on_chip is None:
        return off_chip
    extra_reads = ((on_chip.unit_blocks - off_chip.unit_blocks) * batch
                   * sum(product.length for product in shape.products))
    weights = sum(product.weight_count for product in shape.products)
    return on_chip if weights_on_chip or extra_reads <= weights else off_chip


def plan_recurrence(batch, shape, itemsize, device_limits):
    """The launch plan for a time loop of LoopShape ``shape`` over B=batch rows (rule: module
    header). ``device_limits()`` gives the DeviceLimits, asked only for the grid strategy (it
    compiles the grid kernel). ``forced_recurrence`` overrides the rule."""
    strategy = _forced["strategy"]
    rows = _rows_plan(batch, shape, itemsize)
    fits = rows.shared_bytes <= SHARED_BYTES_PER_BLOCK
    if strategy == "rows" and not fits:
        raise ValueError(f"cannot use the 'rows' strategy: the weights ({shape}) need "
                         f"{rows.shared_bytes} bytes of shared memory, a block has "
                         f"{SHARED_BYTES_PER_BLOCK}")
    if strategy == "rows" or (strategy is None and fits):
        return rows
    return _grid_plan(batch, shape, itemsize, device_limits(), _forced["weights_on_chip"])


def _device_limits(grid_kernel, args):
    """The DeviceLimits of the current GPU for ``grid_kernel`` launched with ``args``."""
    if _in_simulator():             # the simulator runs blocks one at a time: one-block grids
        return DeviceLimits(1, lambda threads, shared_bytes: 1)
    overload = grid_kernel.compile(tuple(grid_kernel.typeof_pyval(arg) for arg in args))
    return DeviceLimits(cuda.get_current_device().MULTIPROCESSOR_COUNT,
                        overload.max_cooperative_grid_blocks)


def _run_recurrence(kernels_of, which, data_args, batch, shape, dtype):
    """Launch time-loop kernel ``kernels_of(dtype, grid_wide)[which]`` (a kernel factory of
    cuda_kernels or cuda_gated_kernels; which: _FORWARD or _BACKWARD) for a loop of LoopShape
    ``shape`` over ``batch`` rows, as planned."""
    dtype = np.dtype(dtype)
    rows_kernel = kernels_of(dtype.name, False)[which]
    grid_kernel = kernels_of(dtype.name, True)[which]
    plan_args = ((1, 1, 1, 1, 1), False)     # types only: the plan's layout and flag
    plan = plan_recurrence(batch, shape, dtype.itemsize,
                           lambda: _device_limits(grid_kernel, data_args + plan_args))
    kernel = grid_kernel if plan.strategy == "grid" else rows_kernel
    _launch(kernel, plan.grid, plan.threads, *data_args, plan.layout, plan.weights_on_chip,
            shared_bytes=plan.shared_bytes)
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
def _forward_arrays(layer, x, h0, biases, out, h_n):
    """Every cell's forward arrays, checked: x [N, I], h0 [B, P], both biases [gates*H] or
    None, out [N, P] (rows layout), h_n [B, P]."""
    rows, batch, width = layer.rows, layer.batch, layer.width
    return (layer.array("x", x, (rows, layer.inputs)), layer.array("h0", h0, (batch, width)),
            *_check_biases(("b_ih", "b_hh"), biases, layer.gates * layer.hidden, layer.dtype),
            layer.array("out", out, (rows, width), "rows", written=True),
            layer.array("h_n", h_n, (batch, width), written=True))


def _backward_arrays(layer, x, h0, out, grad_out, grad_hn, grad_x, grad_h0, grad_w_ih,
                     grad_w_hh, grad_biases):
    """Every cell's backward arrays, checked: x [N, I], h0 [B, P], out and grad_out [N, P]
    (rows layout), grad_hn [B, P], grad_x [N, I], grad_h0 [B, P], grad_w_ih [gates*H, I],
    grad_w_hh [gates*H, P], both bias gradients [gates*H] or None."""
    rows, batch, width, gate_rows = (layer.rows, layer.batch, layer.width,
                                     layer.gates * layer.hidden)
    return (layer.array("x", x, (rows, layer.inputs)), layer.array("h0", h0, (batch, width)),
            layer.array("out", out, (rows, width), "rows"),
            layer.array("grad_out", grad_out, (rows, width), "rows"),
            layer.array("grad_hn", grad_hn, (batch, width)),
            layer.array("grad_x", grad_x, (rows, layer.inputs), written=True),
            layer.array("grad_h0", grad_h0, (batch, width), written=True),
            layer.array("grad_w_ih", grad_w_ih, (gate_rows, layer.inputs), written=True),
            layer.array("grad_w_hh", grad_w_hh, (gate_rows, width), written=True),
            *_check_biases(("grad_b_ih", "grad_b_hh"), grad_biases, gate_rows, layer.dtype,
                           written=True))


def _input_projection_bias(b_ih, b_hh, summed=None):
    """What the input projection adds: b_ih + b_hh, or with ``summed``, that on the first
    ``summed`` entries and b_ih alone after them (GRU: b_hn stays inside r * (.)). None
    without biases."""
    if b_ih is None:
        return None
    bias = DeviceArrays.add(b_ih, b_hh)
    if summed is not None:
        DeviceArrays.copy_into(bias[summed:], b_ih[summed:])
    return bias


def _transposed(w):
    """W^T [C, R] of a C-contiguous device matrix W [R, C], flattened (backward's weight rows)."""
    rows, columns = w.shape
    return _flat(DeviceArrays.swap_batch_time(w.reshape(rows, columns, 1)))


def _unit_major(w_hh, gates):
    """W_hh [gates*H, P] flattened with its rows unit by unit: row j*gates + g is gate g of
    unit j (the forward kernels' weight rows, cuda_kernels.time_loop)."""
    rows, columns = w_hh.shape
    return _flat(DeviceArrays.swap_batch_time(w_hh.reshape(gates, rows // gates, columns)))


def _zero(*arrays):
    for a in arrays:
        if a.size:
            DeviceArrays.copy_into(a, DeviceArrays.zeros(a.shape, a.dtype))


def _add_input_grads(grad_x, accumulate_x, grad_w_ih, grad_a, x, w_ih):
    """dX = (or +=) G W_ih and dW_ih += G^T X: one product each over all N rows."""
    gemm_into(grad_x, grad_a, w_ih, accumulate=accumulate_x)
    gemm_into(grad_w_ih, grad_a, x, a_transposed=True, accumulate=True)


def _add_column_sums(g, out_a, out_b=None):
    """out_a (and out_b) += the column sums of g [N, C]: the bias gradients."""
    columns = g.shape[1]
    if columns:
        threads = min(COLUMN_SUM_THREADS, _round_up(columns, 32))
        _launch(kernels.column_sums_kernel(np.dtype(g.dtype).name), math.ceil(columns / threads),
                threads, g, out_a, out_a if out_b is None else out_b, out_b is not None)


def _add_recurrent_weight_grad(grad_w_hh, grad_a, out, h0, layer, schedule, reverse):
    """grad_w_hh += G^T H_prev (G: what reaches W_hh, [N, gates*H]; H_prev [N, P]). Equal
    lengths: h_{t-1} is ``out`` one step (B rows) earlier in this direction's walk, and h0 at
    its first step: two products on row ranges, no copy. Ragged: H_prev gathered by one
    kernel, then one product."""
    rows, width = out.shape
    if not grad_a.shape[1] or not width:
        return
    if not _is_equal_length(layer.batch_sizes):
        h_prev = DeviceArrays.empty((rows, width), grad_a.dtype)
        _launch_1d(kernels.previous_states, h_prev.size, out, h0, schedule, bool(reverse),
                   h_prev)
        gemm_into(grad_w_hh, grad_a, h_prev, a_transposed=True, accumulate=True)
        return
    batch = layer.batch
    later, earlier = (slice(0, rows - batch), slice(batch, rows)) if reverse else \
        (slice(batch, rows), slice(0, rows - batch))
    if rows > batch:
        gemm_into(grad_w_hh, grad_a[later], out[earlier], a_transposed=True, accumulate=True)
    first = slice(rows - batch, rows) if reverse else slice(0, batch)
    gemm_into(grad_w_hh, grad_a[first], h0, a_transposed=True, accumulate=True)


def rnn_forward_cuda(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, relu, out, h_n):
    # x [N, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih/b_hh [H] or None,
    # batch_sizes [T] (host), out [N, H] (rows layout), h_n [B, H]
    w_ih, w_hh, layer = _check_layer(w_ih, w_hh, batch_sizes)
    x, h0, b_ih, b_hh, out, h_n = _forward_arrays(layer, x, h0, (b_ih, b_hh), out, h_n)

    gemm_into(out, x, w_ih, b_transposed=True, bias=_input_projection_bias(b_ih, b_hh))
    if layer.hidden:
        _run_recurrence(kernels.recurrent_kernels, _FORWARD,
                        (h0, _flat(w_hh), out, h_n, _device_schedule(layer.batch_sizes),
                         bool(reverse), bool(relu)),
                        layer.batch, elman_loop(layer.hidden), layer.dtype)


def rnn_backward_cuda(x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, grad_out, grad_hn,
                      grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py; grad_b_ih/grad_b_hh [H] or None
    w_ih, w_hh, layer = _check_layer(w_ih, w_hh, batch_sizes)
    (x, h0, out, grad_out, grad_hn, grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih,
     grad_b_hh) = _backward_arrays(layer, x, h0, out, grad_out, grad_hn, grad_x, grad_h0,
                                   grad_w_ih, grad_w_hh, (grad_b_ih, grad_b_hh))

    grad_a = DeviceArrays.empty((layer.rows, layer.hidden), layer.dtype)    # dL/da [N, H]
    schedule = _device_schedule(layer.batch_sizes)
    if layer.hidden:
        _run_recurrence(kernels.recurrent_kernels, _BACKWARD,
                        (grad_out, out, grad_hn, _transposed(w_hh), grad_a, grad_h0, schedule,
                         bool(reverse), bool(relu)),
                        layer.batch, elman_loop(layer.hidden), layer.dtype)
    _add_input_grads(grad_x, accumulate_x, grad_w_ih, grad_a, x, w_ih)
    _add_recurrent_weight_grad(grad_w_hh, grad_a, out, h0, layer, schedule, reverse)
    if grad_b_ih is not None:
        _add_column_sums(grad_a, grad_b_ih, grad_b_hh)


# ----------------------------------------------------------------------------- LSTM and GRU
def lstm_loops(hidden, width, projecting):
    """(forward, backward) LoopShapes of an LSTM layer-direction (H=hidden, P=width)."""
    return (LoopShape(StepProduct(hidden, 4, width),                 # h_{t-1} W_hh^T, 4 gates
                      StepProduct(width, 1, hidden) if projecting else None),   # m W_hr^T
            LoopShape(StepProduct(width, 1, 4 * hidden),             # dA_t W_hh
                      StepProduct(hidden, 1, width) if projecting else None))   # dH_t W_hr


def gru_loops(hidden):
    """(forward, backward) LoopShapes of a GRU layer-direction."""
    return (LoopShape(StepProduct(hidden, 3, hidden)),                # h_{t-1} W_hh^T, 3 gates
            LoopShape(StepProduct(hidden, 1, 3 * hidden)))            # dA_t W_hh


def _check_projection(layer, w_hr, grad_w_hr=None, backward=False):
    """LSTM's W_hr [P, H] (and its gradient, backward): both arrays, or both None."""
    if backward and (w_hr is None) != (grad_w_hr is None):
        raise ValueError("Expected w_hr and grad_w_hr both arrays or both None")
    if w_hr is None:
        return None, None
    shape = (layer.width, layer.hidden)
    return (layer.array("w_hr", w_hr, shape),
            layer.array("grad_w_hr", grad_w_hr, shape, written=True) if backward else None)


def lstm_forward_cuda(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, out, h_n,
                      c_n, workspace):
    # x [N, I], h0 [B, P], c0 [B, H], w_ih [4H, I], w_hh [4H, P], b_ih/b_hh [4H] or None,
    # w_hr [P, H] or None (P == H then), batch_sizes [T] (host), out [N, P] (rows layout),
    # h_n [B, P], c_n [B, H], workspace [N, 5H] written: i, f, g, o, c_t of every row
    w_ih, w_hh, layer = _check_layer(w_ih, w_hh, batch_sizes, 4, projected=w_hr is not None)
    w_hr, _ = _check_projection(layer, w_hr)
    x, h0, b_ih, b_hh, out, h_n = _forward_arrays(layer, x, h0, (b_ih, b_hh), out, h_n)
    rows, batch, hidden, dtype = layer.rows, layer.batch, layer.hidden, layer.dtype
    c0 = layer.array("c0", c0, (batch, hidden))
    c_n = layer.array("c_n", c_n, (batch, hidden), written=True)
    workspace = layer.array("workspace", workspace, (rows, 5 * hidden), written=True)

    gemm_into(workspace[:, :4 * hidden], x, w_ih, b_transposed=True,
              bias=_input_projection_bias(b_ih, b_hh))                # x W_ih^T + b, [N, 4H]
    if not hidden:
        _zero(out, h_n)                     # with proj_size: the projection of nothing
        return
    projecting = w_hr is not None
    cell_out = DeviceArrays.empty((rows, hidden), dtype) if projecting else _placeholder(dtype, 2)
    _run_recurrence(gated_kernels.lstm_kernels, _FORWARD,
                    (h0, c0, _unit_major(w_hh, 4), _flat(w_hr) if projecting
                     else _placeholder(dtype), workspace, cell_out, out, h_n, c_n,
                     _device_schedule(layer.batch_sizes), bool(reverse), projecting),
                    batch, lstm_loops(hidden, layer.width, projecting)[_FORWARD], dtype)


def lstm_backward_cuda(x, h0, c0, w_ih, w_hh, w_hr, batch_sizes, reverse, out, workspace,
                       grad_out, grad_hn, grad_cn, grad_x, accumulate_x, grad_h0, grad_c0,
                       grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr):
    # shapes: see fastrnn/backends/__init__.py; grad_c0 [B, H] written, grad_w_hr [P, H] or None
    w_ih, w_hh, layer = _check_layer(w_ih, w_hh, batch_sizes, 4, projected=w_hr is not None)
    w_hr, grad_w_hr = _check_projection(layer, w_hr, grad_w_hr, backward=True)
    (x, h0, out, grad_out, grad_hn, grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih,
     grad_b_hh) = _backward_arrays(layer, x, h0, out, grad_out, grad_hn, grad_x, grad_h0,
                                   grad_w_ih, grad_w_hh, (grad_b_ih, grad_b_hh))
    rows, batch, hidden, width, dtype = (layer.rows, layer.batch, layer.hidden, layer.width,
                                         layer.dtype)
    c0 = layer.array("c0", c0, (batch, hidden))
    workspace = layer.array("workspace", workspace, (rows, 5 * hidden))
    grad_cn = layer.array("grad_cn", grad_cn, (batch, hidden))
    grad_c0 = layer.array("grad_c0", grad_c0, (batch, hidden), written=True)

    projecting = w_hr is not None
    grad_gates = DeviceArrays.empty((rows, 4 * hidden), dtype)     # dL/d(i, f, g, o) [N, 4H]
    grad_h = DeviceArrays.empty((rows, width), dtype) if projecting else _placeholder(dtype, 2)
    schedule = _device_schedule(layer.batch_sizes)
    if hidden:
        _run_recurrence(gated_kernels.lstm_kernels, _BACKWARD,
                        (grad_out, workspace, c0, grad_hn, grad_cn, _transposed(w_hh),
                         _transposed(w_hr) if projecting else _placeholder(dtype), grad_gates,
                         grad_h, grad_h0, grad_c0, schedule, bool(reverse), projecting),
                        batch, lstm_loops(hidden, width, projecting)[_BACKWARD], dtype)
    else:
        _zero(grad_h0)
    _add_input_grads(grad_x, accumulate_x, grad_w_ih, grad_gates, x, w_ih)
    _add_recurrent_weight_grad(grad_w_hh, grad_gates, out, h0, layer, schedule, reverse)
    if grad_b_ih is not None:
        _add_column_sums(grad_gates, grad_b_ih, grad_b_hh)
    if projecting and hidden:
        cell_out = DeviceArrays.empty((rows, hidden), dtype)              # o * tanh(c) [N, H]
        _launch_1d(gated_kernels.lstm_cell_outputs, cell_out.size, workspace, cell_out)
        gemm_into(grad_w_hr, grad_h, cell_out, a_transposed=True, accumulate=True)


def gru_forward_cuda(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, out, h_n, workspace):
    # x [N, I], h0 [B, H], w_ih [3H, I], w_hh [3H, H], b_ih/b_hh [3H] or None,
    # batch_sizes [T] (host), out [N, H] (rows layout), h_n [B, H],
    # workspace [N, 4H] written: r, z, n, h_{t-1} W_hn^T + b_hn of every row
    w_ih, w_hh, layer = _check_layer(w_ih, w_hh, batch_sizes, 3)
    x, h0, b_ih, b_hh, out, h_n = _forward_arrays(layer, x, h0, (b_ih, b_hh), out, h_n)
    hidden, dtype = layer.hidden, layer.dtype
    workspace = layer.array("workspace", workspace, (layer.rows, 4 * hidden), written=True)

    gemm_into(workspace[:, :3 * hidden], x, w_ih, b_transposed=True,
              bias=_input_projection_bias(b_ih, b_hh, summed=2 * hidden))   # [N, 3H]
    if hidden:
        _run_recurrence(gated_kernels.gru_kernels, _FORWARD,
                        (h0, _unit_major(w_hh, 3), _placeholder(dtype) if b_hh is None
                         else b_hh[2 * hidden:], b_hh is not None, workspace, out, h_n,
                         _device_schedule(layer.batch_sizes), bool(reverse)),
                        layer.batch, gru_loops(hidden)[_FORWARD], dtype)


def gru_backward_cuda(x, h0, w_ih, w_hh, batch_sizes, reverse, out, workspace, grad_out,
                      grad_hn, grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih,
                      grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py
    w_ih, w_hh, layer = _check_layer(w_ih, w_hh, batch_sizes, 3)
    (x, h0, out, grad_out, grad_hn, grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih,
     grad_b_hh) = _backward_arrays(layer, x, h0, out, grad_out, grad_hn, grad_x, grad_h0,
                                   grad_w_ih, grad_w_hh, (grad_b_ih, grad_b_hh))
    hidden = layer.hidden
    workspace = layer.array("workspace", workspace, (layer.rows, 4 * hidden))

    # [d_r, d_z, d_n * r, d_n] [N, 4H]: columns :3H reach W_hh, b_hh; :2H and 3H: W_ih, b_ih
    grad_gates = DeviceArrays.empty((layer.rows, 4 * hidden), layer.dtype)
    schedule = _device_schedule(layer.batch_sizes)
    if hidden:
        _run_recurrence(gated_kernels.gru_kernels, _BACKWARD,
                        (grad_out, out, h0, workspace, grad_hn, _transposed(w_hh), grad_gates,
                         grad_h0, schedule, bool(reverse)),
                        layer.batch, gru_loops(hidden)[_BACKWARD], layer.dtype)
    r_z, n = slice(0, 2 * hidden), slice(2 * hidden, 3 * hidden)
    _add_input_grads(grad_x, accumulate_x, grad_w_ih[r_z], grad_gates[:, r_z], x, w_ih[r_z])
    _add_input_grads(grad_x, True, grad_w_ih[n], grad_gates[:, 3 * hidden:], x, w_ih[n])
    _add_recurrent_weight_grad(grad_w_hh, grad_gates[:, :3 * hidden], out, h0, layer, schedule,
                               reverse)
    if grad_b_ih is not None:
        _add_column_sums(grad_gates[:, r_z], grad_b_ih[r_z], grad_b_hh[r_z])
        _add_column_sums(grad_gates[:, n], grad_b_hh[n])
        _add_column_sums(grad_gates[:, 3 * hidden:], grad_b_ih[n])


rnn_forward = rnn_forward_cuda
rnn_backward = rnn_backward_cuda
lstm_forward = lstm_forward_cuda
lstm_backward = lstm_backward_cuda
gru_forward = gru_forward_cuda
gru_backward = gru_backward_cuda
