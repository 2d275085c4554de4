"""The 'cuda' backend on tiny shapes against the NumPy reference, in CI under Numba's CUDA
simulator (tests/conftest.py switches it on; with FASTRNN_TEST_REAL_GPU=1 they run on the GPU).

Two levels: the backend contract itself (packed inputs built here, ragged and equal lengths,
both time-loop strategies) and the public layer with ``lengths=``. The simulator runs Python
threads, one block at a time, and its grid barrier only syncs one block: so the grid-barrier
kernel runs here with ONE block, except at T=1 where no step of the forward reads another
block's output. Launch sizes are kept small: the simulator costs ~1 ms per thread-step.
The subprocess tests run real numba (no simulator): every kernel must compile to PTX for
sm_90 (tests/cuda_sm90.py), and the backend must explain why it cannot run where numba-cuda
or a GPU is missing.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn.backends import backend_status, reference
import cuda_sm90
from cuda_helpers import device_pointer, forbid_host_copies
from cuda_launches import h100_limits, record_plans, spy_launches
from cuda_sm90 import run_python
from helpers import assert_close, random_array

CUDA_REASON = backend_status()["cuda"]
pytestmark = pytest.mark.skipif(CUDA_REASON is not None, reason=f"cuda backend: {CUDA_REASON}")

if CUDA_REASON is None:
    from numba import cuda as numba_cuda
    from fastrnn.backends import cuda as backend
    from fastrnn.backends import cuda_kernels

RTOL = {"float32": 1e-5, "float64": 1e-12}
RAGGED = (4, 3, 3, 1)            # sorted lengths: batch_sizes [4, 3, 3, 1], a tie, a length of 1


def batch_sizes_of(sorted_lengths):
    lengths = np.asarray(sorted_lengths)
    return np.array([(lengths > t).sum() for t in range(lengths.max())], dtype=np.int64)


def packed_inputs(rng, lengths, I, H, dtype, bias=True):
    """Random arguments of one layer-direction over a packed batch of the given sorted lengths."""
    batch_sizes = batch_sizes_of(lengths)
    N, B = int(batch_sizes.sum()), len(lengths)
    return dict(batch_sizes=batch_sizes, x=random_array(rng, (N, I), dtype),
                h0=random_array(rng, (B, H), dtype),
                w_ih=(0.5 * random_array(rng, (H, I), dtype)).astype(dtype),
                w_hh=(0.5 * random_array(rng, (H, H), dtype)).astype(dtype),
                b_ih=random_array(rng, H, dtype) if bias else None,
                b_hh=random_array(rng, H, dtype) if bias else None,
                grad_out=random_array(rng, (N, H), dtype), grad_hn=random_array(rng, (B, H), dtype))


WEIGHTS = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")


def run_layer_direction(module, arrays, inputs, reverse, relu):
    """Forward + backward of one layer-direction through ``module``'s contract, with ``out`` and
    ``grad_out`` the second half of [N, 2H] buffers and every gradient added to ones."""
    N, H = inputs["grad_out"].shape
    dtype = inputs["x"].dtype
    dev = {name: None if value is None or name == "batch_sizes" else arrays.asarray(value)
           for name, value in inputs.items()}
    batch_sizes = inputs["batch_sizes"]
    out_both = arrays.asarray(np.full((N, 2 * H), 7, dtype))
    grad_out_both = arrays.asarray(np.concatenate([np.zeros_like(inputs["grad_out"]),
                                                   inputs["grad_out"]], axis=1))
    out, grad_out = out_both[:, H:], grad_out_both[:, H:]
    h_n = arrays.asarray(np.full(inputs["h0"].shape, 7, dtype))
    module.rnn_forward(*(dev[name] for name in WEIGHTS), batch_sizes, reverse, relu, out, h_n)
    grads = {name: None if inputs[name] is None else arrays.asarray(np.ones_like(inputs[name]))
             for name in WEIGHTS}
    module.rnn_backward(dev["x"], dev["h0"], dev["w_ih"], dev["w_hh"], batch_sizes, reverse, relu,
                        out, grad_out, dev["grad_hn"], grads["x"], True, grads["h0"],
                        grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"])
    results = {name: arrays.to_host(value) for name, value in grads.items() if value is not None}
    results.update(out=arrays.to_host(out_both), h_n=arrays.to_host(h_n))
    return results


def check_layer_direction(rng, lengths, I, H, dtype, reverse, relu, bias=True):
    inputs = packed_inputs(rng, lengths, I, H, dtype, bias)
    expected = run_layer_direction(reference, reference.ARRAYS, inputs, reverse, relu)
    actual = run_layer_direction(backend, backend.ARRAYS, inputs, reverse, relu)
    assert np.all(actual["out"][:, :H] == 7), "the other half of the output buffer was touched"
    assert set(actual) == set(expected)
    for name in expected:
        assert_close(actual[name], expected[name], dtype, RTOL[dtype])


# (lengths, I, H): B*H = 32 gives one thread per output, B*H = 10 or 15 two threads per output
@pytest.mark.parametrize("strategy,on_chip,relu,dtype,reverse,bias,shape", [
    ("rows", None, False, "float32", False, True, (RAGGED, 2, 8)),
    ("rows", None, True, "float64", True, False, (RAGGED, 3, 5)),
    ("rows", None, False, "float64", True, True, ((3, 3), 3, 5)),
    ("grid", True, False, "float64", True, True, (RAGGED, 2, 8)),
    ("grid", True, True, "float32", False, True, ((3, 1, 1), 3, 5)),
    ("grid", False, False, "float32", True, False, ((3, 2, 2), 3, 5)),
    ("grid", False, True, "float64", False, True, ((2, 2, 2), 1, 3)),
])
def test_layer_direction_matches_reference(monkeypatch, strategy, on_chip, relu, dtype, reverse,
                                           bias, shape):
    plans = record_plans(monkeypatch)
    with backend.forced_recurrence(strategy, on_chip):
        check_layer_direction(np.random.default_rng(0), *shape, dtype, reverse, relu, bias)
    assert [plan.strategy for plan in plans] == [strategy, strategy]     # forward, backward
    assert all(plan.weights_on_chip == (on_chip is not False) for plan in plans)


@pytest.mark.parametrize("reverse", [False, True])
def test_rows_kernel_with_one_block_per_batch_row(monkeypatch, reverse):
    """Blocks whose rows have ended idle through the later steps, in both walks."""
    monkeypatch.setattr(backend, "ROW_OUTPUTS_PER_BLOCK", 1)     # 3 batch rows: 3 blocks
    assert elman_plan(3, 4, 4, None).grid == (3, 1)
    check_layer_direction(np.random.default_rng(1), (3, 2, 1), 2, 4, "float32", reverse, False)


def test_ragged_weight_gradient_pairs_each_row_with_its_own_previous_state():
    """previous_states: in a ragged batch row r's predecessor is not a fixed number of rows
    earlier; each packed row must get its own sequence's previous state (or h0)."""
    arrays, lengths = backend.ARRAYS, (3, 1, 1)          # batch_sizes [3, 1, 1]: offsets 0, 3, 4
    out = np.arange(5 * 2, dtype=np.float64).reshape(5, 2)
    h0 = -np.arange(1, 7, dtype=np.float64).reshape(3, 2)
    expected = {False: out[[0, 0, 0, 0, 3]], True: out[[3, 0, 0, 4, 0]]}
    expected[False][:3] = h0                            # forward: step 0 starts from h0
    expected[True][1:3], expected[True][4] = h0[1:], h0[0]  # reverse: ends start from h0
    for reverse in (False, True):
        h_prev = arrays.empty((5, 2), "float64")
        schedule = backend._device_schedule(batch_sizes_of(lengths))
        backend._launch_1d(cuda_kernels.previous_states, 10, arrays.asarray(out),
                           arrays.asarray(h0), schedule, reverse, h_prev)
        assert np.array_equal(arrays.to_host(h_prev), expected[reverse]), reverse


@pytest.mark.parametrize("on_chip", [True, False])
def test_grid_kernel_with_several_blocks_at_one_step(monkeypatch, on_chip):
    """At T=1 the forward never reads another block's output, so the simulator runs a grid of
    several blocks faithfully: this checks how blocks split W_hh's rows (H=5 over 3 blocks)."""
    limits = backend.DeviceLimits(3, lambda threads, shared_bytes: 3)
    monkeypatch.setattr(backend, "_device_limits", lambda kernel, args: limits)
    inputs = packed_inputs(np.random.default_rng(2), (1, 1), 3, 5, "float64")
    args = [inputs[name] for name in WEIGHTS] + [inputs["batch_sizes"], False, False]
    expected_out, expected_hn = np.empty((2, 5)), np.empty((2, 5))
    reference.rnn_forward(*args, expected_out, expected_hn)
    arrays = backend.ARRAYS
    out, h_n = arrays.empty((2, 5), "float64"), arrays.empty((2, 5), "float64")
    with backend.forced_recurrence("grid", on_chip):
        assert elman_plan(2, 5, 8, lambda: limits).grid == (1, 3)
        backend.rnn_forward(*(arrays.asarray(a) for a in args[:6]), *args[6:], out, h_n)
    assert_close(arrays.to_host(out), expected_out, "float64", RTOL["float64"])
    assert_close(arrays.to_host(h_n), expected_hn, "float64", RTOL["float64"])


class TestGemm:
    """The tiled product on shapes spanning several tiles in M, N and K."""

    def host(self, a):
        return backend.ARRAYS.to_host(a)

    def test_small_tile_projection_with_bias_into_strided_rows(self):
        rng, arrays = np.random.default_rng(3), backend.ARRAYS
        x, w, bias = (random_array(rng, s, "float64") for s in ((20, 10), (18, 10), 18))
        both = arrays.zeros((20, 36), "float64")
        backend.gemm_into(both[:, 18:], arrays.asarray(x), arrays.asarray(w), b_transposed=True,
                          bias=arrays.asarray(bias), tile=cuda_kernels.SMALL_TILE)
        assert_close(self.host(both)[:, 18:], x @ w.T + bias, "float64", RTOL["float64"])
        assert np.all(self.host(both)[:, :18] == 0)

    def test_small_tile_accumulating_products(self):
        rng, arrays = np.random.default_rng(4), backend.ARRAYS
        g, x, w = (random_array(rng, s, "float32") for s in ((20, 18), (20, 10), (18, 10)))
        grad_x, grad_w = (random_array(rng, s, "float32") for s in ((20, 10), (18, 10)))
        grad_x_dev, grad_w_dev = arrays.asarray(grad_x), arrays.asarray(grad_w)
        backend.gemm_into(grad_x_dev, arrays.asarray(g), arrays.asarray(w), accumulate=True,
                          tile=cuda_kernels.SMALL_TILE)                     # += G W
        backend.gemm_into(grad_w_dev, arrays.asarray(g), arrays.asarray(x), a_transposed=True,
                          accumulate=True, tile=cuda_kernels.SMALL_TILE)    # += G^T X
        assert_close(self.host(grad_x_dev), grad_x + g @ w, "float32", RTOL["float32"])
        assert_close(self.host(grad_w_dev), grad_w + g.T @ x, "float32", RTOL["float32"])

    def test_large_tile_two_row_tiles(self):
        rng, arrays = np.random.default_rng(5), backend.ARRAYS
        x, w = random_array(rng, (70, 17), "float32"), random_array(rng, (3, 17), "float32")
        out = arrays.empty((70, 3), "float32")
        backend.gemm_into(out, arrays.asarray(x), arrays.asarray(w), b_transposed=True,
                          tile=cuda_kernels.LARGE_TILE)
        assert_close(self.host(out), x @ w.T, "float32", RTOL["float32"])

    @pytest.mark.parametrize("b_transposed", [False, True])
    def test_wide_products_split_into_launches_within_the_grid_limit(self, monkeypatch,
                                                                     b_transposed):
        """Grid y is 16-bit: columns past MAX_GRID_Y tiles go to further launches."""
        monkeypatch.setattr(backend, "MAX_GRID_Y", 1)              # one 16-column tile a launch
        rng, arrays = np.random.default_rng(5), backend.ARRAYS
        a, b = random_array(rng, (3, 4), "float64"), random_array(rng, (4, 40), "float64")
        bias, c = random_array(rng, 40, "float64"), random_array(rng, (3, 40), "float64")
        c_dev = arrays.asarray(c)
        launches = spy_launches(monkeypatch)
        backend.gemm_into(c_dev, arrays.asarray(a), arrays.asarray(b.T if b_transposed else b),
                          b_transposed=b_transposed, bias=arrays.asarray(bias), accumulate=True,
                          tile=cuda_kernels.SMALL_TILE)
        assert len(launches) == 3
        assert_close(self.host(c_dev), c + a @ b + bias, "float64", RTOL["float64"])

    def test_mismatched_shapes_are_refused(self):
        c, a, b = (backend.ARRAYS.empty(s, "float32") for s in ((6, 2), (6, 3), (4, 2)))
        with pytest.raises(ValueError, match=r"op\(a\) is 6x3, op\(b\) 4x2, c 6x2"):
            backend.gemm_into(c, a, b)

    def test_tile_choice(self):
        assert backend.choose_tile(100, 64) == cuda_kernels.SMALL_TILE
        assert backend.choose_tile(6400, 512) == cuda_kernels.LARGE_TILE


def elman_plan(batch, hidden, itemsize, device_limits):
    return backend.plan_recurrence(batch, backend.elman_loop(hidden), itemsize, device_limits)


class TestPlan:
    """The strategy rule, with an H100's numbers (132 SMs, 228 KiB of shared memory per SM)."""

    @staticmethod
    def no_device_limits():
        raise AssertionError("the rows strategy must not ask for the grid kernel's limits")

    @pytest.mark.parametrize("batch,hidden,itemsize", [(1, 32, 4), (64, 64, 4), (1, 109, 4),
                                                       (16, 76, 8)])
    def test_rows_while_w_hh_fits_one_block(self, batch, hidden, itemsize):
        plan = elman_plan(batch, hidden, itemsize, self.no_device_limits)
        assert plan.strategy == "rows" and plan.units_per_block == hidden
        assert plan.shared_bytes <= backend.SHARED_BYTES_PER_BLOCK
        assert plan.unit_blocks == 1 and plan.row_blocks * plan.rows_per_block >= batch

    @pytest.mark.parametrize("batch,hidden,itemsize", [(1, 110, 4), (16, 78, 8)])
    def test_grid_once_it_does_not(self, batch, hidden, itemsize):
        assert elman_plan(batch, hidden, itemsize, h100_limits()).strategy == "grid"

    @pytest.mark.parametrize("batch,hidden,itemsize,on_chip", [
        (1, 2048, 4, True),        # inference: W_hh stays on chip over ~400 blocks
        (64, 512, 4, True),
        (64, 2560, 4, False),      # each extra block re-reads h_{t-1}: W_hh from L2 is cheaper
        (1, 2048, 8, False),       # float64 W_hh (32 MiB) fits no cooperative grid
    ])
    def test_grid_layout(self, batch, hidden, itemsize, on_chip):
        plan = elman_plan(batch, hidden, itemsize, h100_limits())
        cooperative_blocks = h100_limits()().cooperative_blocks
        assert plan.strategy == "grid" and plan.weights_on_chip == on_chip
        units, blocks = plan.units_per_block, plan.unit_blocks
        assert blocks * units >= hidden > (blocks - 1) * units       # every unit, no empty block
        assert plan.row_blocks == 1
        assert blocks <= cooperative_blocks(plan.threads, plan.shared_bytes)
        assert plan.shared_bytes <= backend.SHARED_BYTES_PER_BLOCK
        assert plan.threads % plan.lanes == 0
        assert plan.lanes == 1 or plan.lanes * batch * units <= plan.threads

    def test_forcing(self):
        with backend.forced_recurrence("grid"):
            assert elman_plan(2, 8, 4, h100_limits()).strategy == "grid"
        with backend.forced_recurrence("grid", weights_on_chip=False):
            assert not elman_plan(1, 2048, 4, h100_limits()).weights_on_chip
        with backend.forced_recurrence("rows"), pytest.raises(ValueError, match="'rows' strategy"):
            elman_plan(2, 512, 4, h100_limits())
        with backend.forced_recurrence("grid", weights_on_chip=True), \
                pytest.raises(ValueError, match="cannot keep W_hh"):
            elman_plan(1, 2048, 8, h100_limits())
        with pytest.raises(ValueError, match="strategy must be"):
            with backend.forced_recurrence("persistent"):
                pass
        assert elman_plan(2, 8, 4, h100_limits()).strategy == "rows"   # restored


class TestArrays:
    def test_copies_and_elementwise(self):
        rng, arrays = np.random.default_rng(6), backend.ARRAYS
        a = random_array(rng, (3, 4, 5), "float32")
        dev = arrays.asarray(a)
        assert arrays.is_device_array(dev) and not arrays.is_device_array(a)
        assert device_pointer(arrays.asarray(dev)) == device_pointer(dev)          # no copy
        strided = dev[:, :, 1:4]
        assert np.array_equal(arrays.to_host(strided), a[:, :, 1:4])
        assert np.array_equal(arrays.to_host(arrays.contiguous(strided)), a[:, :, 1:4])
        assert arrays.contiguous(dev) is dev
        assert np.array_equal(arrays.to_host(arrays.swap_batch_time(strided)),
                              a[:, :, 1:4].swapaxes(0, 1))
        target = arrays.zeros((3, 4, 8), "float32")
        arrays.copy_into(target[:, :, 2:5], strided)
        assert np.array_equal(arrays.to_host(target)[:, :, 2:5], a[:, :, 1:4])
        assert np.all(arrays.to_host(target)[:, :, [0, 1, 5, 6, 7]] == 0)
        assert np.array_equal(arrays.to_host(arrays.multiply(dev, dev)), a * a)
        assert np.array_equal(arrays.to_host(arrays.add(strided, strided)), 2 * a[:, :, 1:4])
        converted = arrays.asarray(dev, "float64")
        assert converted.dtype == np.float64 and np.array_equal(arrays.to_host(converted), a)
        with pytest.raises(ValueError, match="one shape"):
            arrays.add(dev, strided)

    def test_take_and_put_rows_match_numpy(self):
        rng, arrays = np.random.default_rng(7), backend.ARRAYS
        a = random_array(rng, (6, 3), "float64")
        index = np.array([4, 0, 5, 2], dtype=np.int64)
        host = reference.ARRAYS
        taken = arrays.take_rows(arrays.asarray(a)[:, :], index)
        assert np.array_equal(arrays.to_host(taken), host.take_rows(a, index))
        rows = random_array(rng, (4, 3), "float64")
        put = arrays.put_rows((7, 3), index, arrays.asarray(rows))
        assert np.array_equal(arrays.to_host(put), host.put_rows((7, 3), index, rows))
        strided = arrays.asarray(random_array(rng, (6, 8), "float32"))[:, 2:5]
        assert np.array_equal(arrays.to_host(arrays.take_rows(strided, index)),
                              arrays.to_host(strided)[index])

    @pytest.mark.parametrize("call,error,message", [
        (lambda A, a: A.take_rows(a, np.array([0, 6])), IndexError, r"rows are 0\.\.5, got 0\.\.6"),
        (lambda A, a: A.take_rows(a, np.array([-1])), IndexError, "index out of range"),
        (lambda A, a: A.take_rows(a, np.array([0.0])), TypeError, "1-D integer array"),
        (lambda A, a: A.take_rows(a, A.asarray(np.array([0]))), TypeError, "host NumPy"),
        (lambda A, a: A.put_rows((6, 3), np.array([1, 1]), a[:2]), ValueError, "repeated"),
        (lambda A, a: A.put_rows((6, 3), np.array([1, 2]), a[:3]), ValueError,
         r"rows of shape \(2, 3\)"),
        (lambda A, a: A.put_rows((6, 3), np.array([1, 9]), a[:2]), IndexError, "out of range"),
    ])
    def test_row_operations_refuse_bad_indices(self, monkeypatch, call, error, message):
        arrays = backend.ARRAYS
        a = arrays.asarray(np.zeros((6, 3)))
        launches = spy_launches(monkeypatch)
        with pytest.raises(error, match=message):
            call(arrays, a)
        assert launches == []


# ----------------------------------------------------------------------------- the boundary
def contract_arguments(dtype="float32"):
    """Valid device arguments of rnn_forward and rnn_backward (lengths 3, 2: N = 5, B = 2)."""
    inputs = packed_inputs(np.random.default_rng(8), (3, 2), 3, 4, dtype)
    arrays = backend.ARRAYS
    dev = {name: arrays.asarray(value) for name, value in inputs.items() if name != "batch_sizes"}
    dev.update(batch_sizes=inputs["batch_sizes"], out=arrays.zeros((5, 4), dtype),
               h_n=arrays.zeros((2, 4), dtype), grad_x=arrays.zeros((5, 3), dtype),
               grad_h0=arrays.zeros((2, 4), dtype), grad_w_ih=arrays.zeros((4, 3), dtype),
               grad_w_hh=arrays.zeros((4, 4), dtype), grad_b_ih=arrays.zeros(4, dtype),
               grad_b_hh=arrays.zeros(4, dtype))
    return dev


def call_forward(args):
    backend.rnn_forward(*(args[name] for name in WEIGHTS), args["batch_sizes"], False, False,
                        args["out"], args["h_n"])


def call_backward(args):
    backend.rnn_backward(args["x"], args["h0"], args["w_ih"], args["w_hh"], args["batch_sizes"],
                         False, False, args["out"], args.get("grad_out"), args["grad_hn"],
                         args["grad_x"], False, args["grad_h0"], args["grad_w_ih"],
                         args["grad_w_hh"], args["grad_b_ih"], args["grad_b_hh"])


class ReadOnlyExport:
    """A device array exported read-only through __cuda_array_interface__."""

    def __init__(self, array):
        self.__cuda_array_interface__ = {"shape": tuple(array.shape), "typestr": array.dtype.str,
                                         "data": (device_pointer(array), True), "version": 3,
                                         "strides": None}


def big_endian(a):
    host = backend.ARRAYS.to_host(a)
    return numba_cuda.to_device(host.astype(host.dtype.newbyteorder(">")))


BAD_ARGUMENTS = [      # (entry, argument, corruption, error, message)
    ("forward", "x", lambda a: backend.ARRAYS.to_host(a), TypeError,
     "Expected x to be a CUDA device array .* got numpy.ndarray"),
    ("forward", "x", lambda a: a[:4], ValueError, r"Expected x of shape \(5, 3\), got \(4, 3\)"),
    ("forward", "h0", lambda a: backend.ARRAYS.asarray(a, "float64"), TypeError,
     "Expected h0 of dtype float32 .* got float64"),
    ("forward", "w_hh", lambda a: a[:, :3], ValueError, r"Expected w_hh of shape \(H, H\)"),
    ("forward", "w_ih", lambda a: a[:3], ValueError, r"Expected w_ih of shape \(4, I\)"),
    ("forward", "w_ih", big_endian, ValueError, "native byte order, got a big-endian float32"),
    ("forward", "b_hh", lambda a: None, ValueError, "b_ih and b_hh both arrays or both None"),
    ("forward", "out", lambda a: backend.ARRAYS.zeros((4, 5), "float32").T, ValueError,
     "Expected out .* contiguous last axis"),
    ("forward", "out", ReadOnlyExport, ValueError, "Expected out to be writable"),
    ("forward", "h_n", lambda a: backend.ARRAYS.zeros((4, 2), "float32").T, ValueError,
     "Expected h_n to be C-contiguous"),
    ("forward", "batch_sizes", lambda a: np.array([1, 2, 2]), ValueError, "non-increasing"),
    ("forward", "batch_sizes", lambda a: np.array([2, 2, 0, 1]), ValueError, "every entry >= 1"),
    ("forward", "batch_sizes", lambda a: np.array([2.0, 2.0, 1.0]), ValueError, "1-D int64"),
    ("forward", "batch_sizes", lambda a: backend.ARRAYS.asarray(a), TypeError, "host NumPy int64"),
    ("forward", "batch_sizes", lambda a: np.array([2, 2], dtype=np.int64), ValueError,
     r"Expected x of shape \(4, 3\), got \(5, 3\)"),
    ("backward", "grad_out", lambda a: backend.ARRAYS.zeros((5, 8), "float32")[:, ::2],
     ValueError, "Expected grad_out .* contiguous last axis"),
    ("backward", "grad_x", lambda a: backend.ARRAYS.zeros((5, 6), "float32")[:, :3], ValueError,
     "Expected grad_x to be C-contiguous"),
    ("backward", "grad_w_hh", lambda a: backend.ARRAYS.zeros((4, 4), "float64"), TypeError,
     "Expected grad_w_hh of dtype float32"),
    ("backward", "grad_b_ih", lambda a: backend.ARRAYS.zeros(5, "float32"), ValueError,
     r"Expected grad_b_ih of shape \(4,\), got \(5,\)"),
    ("backward", "grad_hn", lambda a: backend.ARRAYS.to_host(a), TypeError,
     "Expected grad_hn to be a CUDA device array"),
]


@pytest.mark.parametrize("entry,name,corrupt,error,message", BAD_ARGUMENTS,
                         ids=[f"{e[0]}-{e[1]}-{i}" for i, e in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_are_refused_before_any_launch(monkeypatch, entry, name, corrupt, error,
                                                     message):
    args = contract_arguments()
    args["grad_out"] = args["grad_out"] if entry == "backward" else None
    args[name] = corrupt(args[name])
    launches = spy_launches(monkeypatch)
    with pytest.raises(error, match=message):
        (call_forward if entry == "forward" else call_backward)(args)
    assert launches == []


def test_a_big_endian_host_array_is_converted_above_the_backend():
    """fastrnn.functional converts another byte order on the host (issue 9 item 11) before
    the upload, so the layer gives what a native array gives."""
    layer = fastrnn.RNN(3, 4, backend="cuda", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 3)).astype(np.float32)
    expected, _ = layer(x)
    out, _ = layer(x.astype(">f4"))
    np.testing.assert_array_equal(out, expected)


# ----------------------------------------------------------------------------- the layer
def make_pair(**kwargs):
    """The same layer on the reference and on the cuda backend."""
    return (fastrnn.RNN(backend="numpy", seed=7, **kwargs),
            fastrnn.RNN(backend="cuda", seed=7, **kwargs))


def compare_layers(ref, dev, x, hx, lengths, dtype, rng):
    """Forward and backward of both layers from NumPy input; every gradient."""
    host = backend.ARRAYS.to_host
    expected, actual = ref(x, hx, lengths=lengths), dev(x, hx, lengths=lengths)
    for e, a in zip(expected, actual):
        assert_close(host(a), e, dtype, RTOL[dtype])
    grad_out, grad_hn = (random_array(rng, e.shape, dtype) for e in expected)
    for e, a in zip(ref.backward(grad_out, grad_hn), dev.backward(grad_out, grad_hn)):
        assert_close(host(a), e, dtype, RTOL[dtype])
    for name, expected_grad in ref.grads.items():
        assert_close(backend.ARRAYS.to_host(dev.grads[name]), expected_grad, dtype, RTOL[dtype])


@pytest.mark.parametrize("strategy,kwargs,lengths", [
    ("rows", dict(num_layers=2, bidirectional=True, batch_first=True, nonlinearity="relu",
                  dtype="float64"), [2, 3, 1]),
    ("grid", dict(bidirectional=True, dtype="float32"), [1, 3, 2]),
    ("rows", dict(num_layers=2, dtype="float32"), None),
    ("grid", dict(bidirectional=True, dtype="float64", nonlinearity="relu"), [3, 3, 3]),
])
def test_layer_with_lengths_matches_reference(monkeypatch, strategy, kwargs, lengths):
    rng = np.random.default_rng(8)
    ref, dev = make_pair(input_size=3, hidden_size=4, **kwargs)
    dtype, directions = kwargs["dtype"], 2 if kwargs.get("bidirectional") else 1
    x = random_array(rng, (3, 3, 3), dtype)
    hx = random_array(rng, (kwargs.get("num_layers", 1) * directions, 3, 4), dtype)
    plans = record_plans(monkeypatch)
    with backend.forced_recurrence(strategy):
        compare_layers(ref, dev, x, hx, lengths, dtype, rng)
    assert plans and all(plan.strategy == strategy for plan in plans)


def test_numpy_in_numpy_out():
    layer = fastrnn.RNN(3, 4, backend="cuda")
    out, h_n = layer(np.zeros((2, 1, 3), np.float32))
    grad_x, grad_hx = layer.backward(np.ones((2, 1, 4), np.float32))
    assert all(isinstance(a, np.ndarray) for a in (out, h_n, grad_x, grad_hx))


@pytest.mark.parametrize("lengths", [None, [3, 1]])
def test_device_arrays_in_and_out_without_host_copies(monkeypatch, lengths):
    rng = np.random.default_rng(9)
    ref, dev = make_pair(input_size=3, hidden_size=5, bidirectional=True)
    x, hx = random_array(rng, (3, 2, 3), "float32"), random_array(rng, (2, 2, 5), "float32")
    grad_out = random_array(rng, (3, 2, 10), "float32")
    dev(x)                                        # moves the parameters to the device once
    x_dev, hx_dev, grad_out_dev = (numba_cuda.to_device(a) for a in (x, hx, grad_out))

    forbid_host_copies(monkeypatch, type(x_dev))
    out, h_n = dev(x_dev, hx_dev, lengths=lengths)
    if lengths is None:      # the context's own device copy (issue 9 item 5), not a host one
        assert backend.ARRAYS.is_device_array(dev._context.x)
        assert device_pointer(dev._context.x) != device_pointer(x_dev)
    grad_x, grad_hx = dev.backward(grad_out_dev)
    monkeypatch.undo()

    assert all(backend.ARRAYS.is_device_array(a) for a in (out, h_n, grad_x, grad_hx))
    expected_out, expected_hn = ref(x, hx, lengths=lengths)
    expected_grad_x, expected_grad_hx = ref.backward(grad_out)
    for actual, expected in ((out, expected_out), (h_n, expected_hn), (grad_x, expected_grad_x),
                             (grad_hx, expected_grad_hx)):
        assert_close(actual.copy_to_host(), expected, "float32", RTOL["float32"])


def test_strided_device_input_with_lengths():
    """A strided device view (every other feature, batch_first) goes through the contiguous
    copy above the backend; the kernels never see its strides."""
    rng = np.random.default_rng(10)
    ref, dev = make_pair(input_size=3, hidden_size=4, batch_first=True)
    x = random_array(rng, (2, 3, 6), "float32")
    lengths = np.array([2, 3])
    out, h_n = dev(numba_cuda.to_device(x)[:, :, ::2], lengths=lengths)
    expected_out, expected_hn = ref(x[:, :, ::2], lengths=lengths)
    assert_close(out.copy_to_host(), expected_out, "float32", RTOL["float32"])
    assert_close(h_n.copy_to_host(), expected_hn, "float32", RTOL["float32"])


def test_auto_backend_follows_the_input():
    """A layer built with backend='auto' runs device input on cuda (parameters move to the
    device) and keeps giving NumPy output for NumPy input on the cpu backend."""
    rng = np.random.default_rng(4)
    layer = fastrnn.RNN(3, 5, seed=0)
    x = random_array(rng, (3, 2, 3), "float32")
    host_out, _ = layer(x)
    device_out, _ = layer(numba_cuda.to_device(x))
    assert backend.ARRAYS.is_device_array(device_out)
    assert backend.ARRAYS.is_device_array(layer.weight_hh_l0)
    assert_close(device_out.copy_to_host(), host_out, "float32", RTOL["float32"])
    assert isinstance(layer.state_dict()["weight_hh_l0"], np.ndarray)


def test_empty_batch():
    layer = fastrnn.RNN(3, 4, bidirectional=True, backend="cuda")
    out, h_n = layer(np.zeros((2, 0, 3), np.float32))
    assert out.shape == (2, 0, 8) and h_n.shape == (2, 0, 4)
    grad_x, grad_hx = layer.backward(np.zeros((2, 0, 8), np.float32))
    assert grad_x.shape == (2, 0, 3) and grad_hx.shape == (2, 0, 4)
    assert all(np.all(backend.ARRAYS.to_host(g) == 0) for g in layer.grads.values())


@pytest.mark.parametrize("x_shape,x_dtype,hx_shape,message", [
    ((2, 1, 3), "float64", None, "Expected input of dtype float32"),
    ((2, 1, 7), "float32", None, "input.size(-1) must be equal to input_size"),
    ((1, 2, 1, 3), "float32", None, "Expected input to be 2D or 3D, got 4D"),
    ((2, 4, 3), "float32", (1, 4, 7), "Expected hidden size (1, 4, 4), got [1, 4, 7]"),
    ((2, 3), "float32", (1, 1, 4), "For unbatched 2-D input, hx should also be 2-D"),
])
def test_device_input_errors_match_host_input(x_shape, x_dtype, hx_shape, message):
    layer = fastrnn.RNN(3, 4, backend="cuda")
    x = np.zeros(x_shape, x_dtype)
    hx = None if hx_shape is None else np.zeros(hx_shape, np.float32)
    with pytest.raises((TypeError, ValueError)) as on_host:
        layer(x, hx)
    with pytest.raises(type(on_host.value)) as on_device:
        layer(numba_cuda.to_device(x), None if hx is None else numba_cuda.to_device(hx))
    assert message in str(on_host.value)
    assert str(on_device.value) == str(on_host.value)


# ----------------------------------------------------------------------------- real numba
def test_without_numba_the_package_and_cpu_backend_work():
    report = run_python("""
        import json, sys
        sys.modules["numba"] = None           # as if numba-cuda were not installed
        import numpy as np, fastrnn
        out, _ = fastrnn.RNN(2, 3, backend="cpu")(np.zeros((2, 1, 2), np.float32))
        try:
            fastrnn.RNN(2, 3, backend="cuda")
            error = None
        except fastrnn.BackendUnavailable as exc:
            error = str(exc)
        status = fastrnn.backend_status()["cuda"]
        print(json.dumps({"out": out.shape, "status": status, "error": error}))
    """)
    assert report["out"] == [2, 1, 3]
    assert "numba-cuda is not installed" in report["status"]
    assert "pip install fastrnn[cuda]" in report["status"]
    assert report["error"] == f"backend 'cuda' is not available: {report['status']}"


def test_without_a_gpu_the_reason_comes_from_the_driver():
    report = run_python("""
        import json
        from numba import cuda
        import fastrnn
        print(json.dumps({"gpu": cuda.is_available(), "status": fastrnn.backend_status()["cuda"]}))
    """)
    if report["gpu"]:
        pytest.skip("this machine has a usable GPU")
    assert report["status"].startswith("numba-cuda cannot use a GPU here: ")
    assert "driver" in report["status"].lower()


# 12 kernels per dtype: gemm, column sums, swap, gather, scatter, previous states, elementwise,
# fill, and the forward and backward time loops of both strategies
(sm90_compile, sm90_report, test_every_kernel_types_and_lowers_for_sm90,
 test_every_kernel_compiles_to_ptx_for_sm90, test_kernel_index_arithmetic_is_64_bit) = \
    cuda_sm90.module_checks("elman", expected=12)
