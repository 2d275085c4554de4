# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CPU kernels of every cell (Elman, LSTM, GRU): one layer, one direction, over a packed batch
(the layout and contract of fastrnn/backends/__init__.py). The compiled module fastrnn._rnn_cpu.

Why one module for all cells, with one source file per cell (elman_cpu.pxi, lstm_cpu.pxi,
gru_cpu.pxi, included below): the choices a kernel runs with are state of the compiled module
(which float32 step-kernel variant runs, the size thresholds of ``set_tuning``, where to read
the BLAS's thread count), and one module keeps them one for every cell: ``use_step_kernel``
or ``set_tuning`` changes all cells at once. What the cells share lives in .pxd/.h files:
buffer_checks.pxd (every array checked once per call), packed_steps.pxd (the walk over the
packed steps, step plans), cell_shared.pxd (biases, final states, gradient start, the products
after the loop), cpu_products.pxd (who computes each product), step_gemm.h (the float32 step
kernel and its variants) and gate_cells.h (the gated cells' elementwise passes).

Why it is built this way (design.md, "what makes it fast"), for every cell:
- one compiled call per layer-direction; every array is checked once here and the time loop
  runs without the GIL; no per-step Python or allocation;
- the input projection of all N tokens is ONE product, written straight into its destination
  (the Elman output, first filled with the folded biases; the gated cells' workspace, whose
  gate pass adds them); each step then adds h_prev W_hh^T in place and applies the activation
  (Elman: in the product's epilogue; gated cells: one fused elementwise pass over the step's
  gates);
- float32 steps run the fused step kernel (step_gemm.h): W_hh packed once per call (or used
  in place when the call has so few rows that packing would cost more). A time loop is a
  "plan" of blocks per step (step_jobs.h), which is how variable lengths enter: in reverse some
  rows continue from step t+1 and others start from h0; in backward some rows receive no
  product and others send theirs to grad_h0. Big steps are shared by a thread team of our own
  (thread_team.h); float64 steps run the same plans as BLAS products plus loops;
- small float32 products (input projection, dX, grad_h0, weight gradients of small layers)
  run on the step kernel's tiles and never reach the BLAS; big ones go to SciPy's BLAS, which
  threads them as the user set it. The BLAS's thread count is only read, never changed
  (cpu_products.pxd);
- weight gradients, dX and the bias gradients are single products over all N rows after the
  loop (cell_shared.pxd pairs each row with its own h_prev row);
- ``out`` may be one half of a bidirectional [N, 2P] buffer: every product takes the row
  stride as its leading dimension, so no concatenation is ever needed.
BLAS is SciPy's (scipy.linalg.cython_blas). float32 and float64 share one source through
Cython's fused type.
"""
cimport numpy as cnp

from buffer_checks cimport float_type, rows_view, take, take_batch_sizes, take_optional_vector
from cell_shared cimport step_threads
from cpu_products cimport product_config, product_sizes
from packed_steps cimport packed_walk
from step_gemm cimport current_step_kernel, select_step_kernel

cnp.import_array()


# ---- configuration --------------------------------------------------------------------------
def step_kernel_name():
    """The instruction-set variant the float32 step kernel runs ("avx512", "avx2", "generic")."""
    return current_step_kernel().name.decode()


def use_step_kernel(str name):
    """Makes ``name`` ("avx512", "avx2", "generic" or "best") the float32 step kernel of every
    cell; returns the previous name. ValueError when this CPU cannot run it. For tests and
    benchmarks."""
    previous = step_kernel_name()
    if not select_step_kernel(name.encode()):
        raise ValueError(f"step kernel {name!r} cannot run on this CPU "
                         "(expected one of 'avx512', 'avx2', 'generic', 'best' that it supports)")
    return previous


ctypedef int (*thread_count_fn)() noexcept nogil
cdef thread_count_fn blas_thread_count = NULL


def use_blas_thread_count(size_t address):
    """The address of the kernels' BLAS ``get_num_threads()`` C function (0: unknown, then
    everything runs on the calling thread). The kernels only read the count: big steps and
    products use that many threads."""
    global blas_thread_count
    blas_thread_count = <thread_count_fn>address


cdef int threads_allowed() noexcept nogil:
    return max(blas_thread_count(), 1) if blas_thread_count != NULL else 1


def planned_step_threads(Py_ssize_t batch, Py_ssize_t hidden):
    """How many threads would share each step of an Elman layer of this batch and hidden size
    now (a gated cell's step is G times wider). For tests and benchmarks."""
    cdef product_config cfg = call_config()
    return step_threads(&cfg, batch, <double>hidden * hidden)


# The sizes at which the work changes hands. own_max_macs: products below 2^24 multiply-adds
# (about 0.2 ms on one core) are too small to repay a thread hand-off (the old BLAS threshold
# of 2^25 FLOPs). step_threading_min_macs: a step (B * H * H) is shared among the threads
# from 2^21: at B=32, H=256 (~25 us a step on one core) 2 threads ran 1.4-1.7x faster than 1
# on a quiet machine; at 2^20 the forward gained only 1.25x, too little to risk the hand-off
# at every step on a busy machine. direct_max_rows, in_place_max_rows: calls with so few rows
# that packing W costs more than it saves (step_gemm_impl.h's direct_gemm); the A W^T form
# pays a horizontal sum per output, the A W form nothing, so it stays in place for longer.
cdef product_sizes tuning = product_sizes(
    own_max_macs=1 << 24, step_threading_min_macs=1 << 21, product_threading_min_macs=1 << 24,
    direct_max_rows=2, in_place_max_rows=16, rank_k_max_output=256 * 256,
    blas_max_dim=2147483647)


def get_tuning():
    """{field: value} of the size thresholds above (for tests and benchmarks)."""
    return tuning


def set_tuning(**changes):
    """Changes size thresholds (e.g. blas_max_dim=7 to exercise the split BLAS products, or
    direct_max_rows=0 to always pack); returns the previous values of those changed. Not for
    use while kernels run in other threads."""
    global tuning
    cdef dict current = tuning
    unknown = set(changes) - set(current)
    if unknown:
        raise ValueError(f"unknown tuning fields {sorted(unknown)}; expected {sorted(current)}")
    if not 1 <= changes.get("blas_max_dim", 1) <= 2147483647:
        raise ValueError("blas_max_dim must be in [1, 2**31 - 1]")
    tuning = {**current, **changes}
    return {name: current[name] for name in changes}


cdef product_config call_config() noexcept nogil:
    return product_config(kernel=current_step_kernel(), threads=threads_allowed(), sizes=tuning)


# ---- one checked call -----------------------------------------------------------------------
cdef struct layer_call:            # the arrays of one call, checked; data in the call's dtype
    packed_walk walk               # T, batch_sizes [T], offsets, reverse
    Py_ssize_t B, N
    Py_ssize_t input_size          # I
    Py_ssize_t H                   # units (hidden_size)
    Py_ssize_t P                   # width of h: H, or the LSTM's proj_size
    Py_ssize_t G                   # gates: 1 (Elman), 4 (LSTM), 3 (GRU); G*H rows of weights
    bint equal_lengths, relu
    const char* x                  # [N, I]
    const char* h0                 # [B, P]
    const char* c0                 # [B, H]        LSTM
    const char* w_ih               # [G*H, I]
    const char* w_hh               # [G*H, P]
    const char* b_ih               # [G*H] or NULL
    const char* b_hh               # [G*H] or NULL
    const char* w_hr               # [P, H] or NULL (LSTM projection)
    char* out                      # [N, P] rows ld_out apart (forward: written)
    Py_ssize_t ld_out
    char* h_n                      # [B, P]   forward: written
    char* c_n                      # [B, H]   LSTM forward: written
    char* workspace                # [N, (G+1)*H] gated cells: forward writes, backward reads
    const char* grad_out           # [N, P] rows ld_grad_out apart
    Py_ssize_t ld_grad_out
    const char* grad_hn            # [B, P]
    const char* grad_cn            # [B, H]   LSTM
    char* grad_x                   # [N, I]   written, or added to (accumulate_x)
    bint accumulate_x
    char* grad_h0                  # [B, P]   written
    char* grad_c0                  # [B, H]   LSTM: written
    char* grad_w_ih                # [G*H, I] added to
    char* grad_w_hh                # [G*H, P] added to
    char* grad_b_ih                # [G*H] or NULL, added to
    char* grad_b_hh                # [G*H] or NULL, added to
    char* grad_w_hr                # [P, H] or NULL, added to


cdef str gates_text(const layer_call* call):
    """The number of weight rows in letters, for messages: "H", "3H", "4H"."""
    return "H" if call.G == 1 else f"{call.G}H"


cdef str state_text(const layer_call* call):
    """The width of h in letters: "P" with a projection, else "H"."""
    return "P" if call.w_hr != NULL else "H"


cdef int take_inputs(layer_call* call, int typenum, Py_ssize_t gates, x, h0, batch_sizes,
                     bint reverse) except -1:
    """Checks x and h0, which fix N, I, B and P, and batch_sizes, which fixes T."""
    cdef rows_view v
    take(x, "x", typenum, 2, -1, -1, "(N, I)", True, False, &v)
    call.x, call.N, call.input_size = v.data, v.rows, v.cols
    take(h0, "h0", typenum, 2, -1, -1, "(B, P)" if gates == 4 else "(B, H)", True, False, &v)
    call.h0, call.B, call.P = v.data, v.rows, v.cols
    call.G, call.H, call.w_hr, call.c0 = gates, call.P, NULL, NULL
    call.walk.batch_sizes = take_batch_sizes(batch_sizes, call.N, call.B, &call.walk.T,
                                             &call.equal_lengths)
    call.walk.reverse, call.walk.offsets, call.relu = reverse, NULL, False
    return 0


cdef int take_weights(layer_call* call, int typenum, w_ih, w_hh, b_ih, b_hh) except -1:
    """Checks w_ih [G*H, I], w_hh [G*H, P] and the optional biases [G*H] (both or neither)."""
    cdef rows_view v
    cdef Py_ssize_t rows = call.G * call.H
    cdef str gh = gates_text(call)
    take(w_ih, "w_ih", typenum, 2, rows, call.input_size, f"({gh}, I)", True, False, &v)
    call.w_ih = v.data
    take(w_hh, "w_hh", typenum, 2, rows, call.P, f"({gh}, {state_text(call)})", True, False, &v)
    call.w_hh = v.data
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"b_ih and b_hh must both be arrays [{gh}] or both be None (no bias)")
    call.b_ih = take_optional_vector(b_ih, "b_ih", typenum, rows, f"({gh},)", False)
    call.b_hh = take_optional_vector(b_hh, "b_hh", typenum, rows, f"({gh},)", False)
    return 0


cdef int take_out(layer_call* call, int typenum, out, bint written) except -1:
    """Checks out [N, P]: the layer's output, rows evenly spaced (e.g. half of [N, 2P])."""
    cdef rows_view v
    take(out, "out", typenum, 2, call.N, call.P, f"(N, {state_text(call)})", False, written, &v)
    call.out, call.ld_out = v.data, v.ld
    return 0


cdef int take_state_gradients(layer_call* call, int typenum, grad_out, grad_hn, grad_x,
                              bint accumulate_x, grad_h0) except -1:
    """Checks grad_out [N, P] (rows evenly spaced), grad_hn [B, P], grad_x [N, I] and
    grad_h0 [B, P] (both written)."""
    cdef rows_view v
    cdef str p = state_text(call)
    take(grad_out, "grad_out", typenum, 2, call.N, call.P, f"(N, {p})", False, False, &v)
    call.grad_out, call.ld_grad_out = v.data, v.ld
    take(grad_hn, "grad_hn", typenum, 2, call.B, call.P, f"(B, {p})", True, False, &v)
    call.grad_hn = v.data
    take(grad_x, "grad_x", typenum, 2, call.N, call.input_size, "(N, I)", True, True, &v)
    call.grad_x, call.accumulate_x = v.data, accumulate_x
    take(grad_h0, "grad_h0", typenum, 2, call.B, call.P, f"(B, {p})", True, True, &v)
    call.grad_h0 = v.data
    return 0


cdef int take_weight_gradients(layer_call* call, int typenum, grad_w_ih, grad_w_hh, grad_b_ih,
                               grad_b_hh) except -1:
    """Checks grad_w_ih [G*H, I], grad_w_hh [G*H, P] and grad_b_ih/grad_b_hh [G*H] (each may
    be None), all added to."""
    cdef rows_view v
    cdef Py_ssize_t rows = call.G * call.H
    cdef str gh = gates_text(call)
    take(grad_w_ih, "grad_w_ih", typenum, 2, rows, call.input_size, f"({gh}, I)", True, True, &v)
    call.grad_w_ih = v.data
    take(grad_w_hh, "grad_w_hh", typenum, 2, rows, call.P, f"({gh}, {state_text(call)})",
         True, True, &v)
    call.grad_w_hh = v.data
    call.grad_b_ih = take_optional_vector(grad_b_ih, "grad_b_ih", typenum, rows, f"({gh},)", True)
    call.grad_b_hh = take_optional_vector(grad_b_hh, "grad_b_hh", typenum, rows, f"({gh},)", True)
    return 0


cdef int take_workspace(layer_call* call, int typenum, workspace, bint written) except -1:
    """Checks the gated cells' workspace [N, (G+1)*H], C-contiguous (written by forward)."""
    cdef rows_view v
    take(workspace, "workspace", typenum, 2, call.N, (call.G + 1) * call.H,
         f"(N, {call.G + 1}H)", True, written, &v)
    call.workspace = v.data
    return 0


# ---- the cells ------------------------------------------------------------------------------
include "elman_cpu.pxi"
include "lstm_cpu.pxi"
include "gru_cpu.pxi"
