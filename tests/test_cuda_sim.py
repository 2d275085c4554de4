"""The 'cuda' backend on tiny shapes against the NumPy reference, in CI under Numba's CUDA
simulator (tests/conftest.py switches it on; with FASTRNN_TEST_REAL_GPU=1 they run on the GPU).

The simulator runs Python threads, one block at a time, and its grid barrier only syncs one
block: so the grid-barrier kernel runs here with ONE block, except at T=1 where no step reads
another block's output. Launch sizes are kept small: the simulator costs ~1 ms per thread-step.
The subprocess tests run real numba (no simulator): the kernels must type-check and lower for
sm_90, and the backend must explain why it cannot run where numba-cuda or a GPU is missing.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import backend_status, reference
from helpers import assert_close, random_array

CUDA_REASON = backend_status()["cuda"]
pytestmark = pytest.mark.skipif(CUDA_REASON is not None, reason=f"cuda backend: {CUDA_REASON}")

if CUDA_REASON is None:
    from numba import cuda as numba_cuda
    from fastrnn.backends import cuda as backend
    from fastrnn.backends import cuda_kernels

RTOL = {"float32": 1e-5, "float64": 1e-12}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device_pointer(a):
    """Address of a device array's first element (simulator device arrays are host memory)."""
    if hasattr(a, "__cuda_array_interface__"):
        return a.__cuda_array_interface__["data"][0]
    return a.__array_interface__["data"][0]


def layer_direction_inputs(rng, T, B, I, H, dtype, bias=True):
    return dict(x=random_array(rng, (T, B, I), dtype), h0=random_array(rng, (B, H), dtype),
                w_ih=(0.5 * random_array(rng, (H, I), dtype)).astype(dtype),
                w_hh=(0.5 * random_array(rng, (H, H), dtype)).astype(dtype),
                bias=random_array(rng, H, dtype) if bias else None,
                grad_out=random_array(rng, (T, B, H), dtype),
                grad_hn=random_array(rng, (B, H), dtype))


def run_layer_direction(module, arrays, inputs, reverse, relu):
    """Forward + backward of one layer-direction through ``module``'s contract, with ``out`` and
    ``grad_out`` the second half of [T, B, 2H] buffers and every gradient added to ones."""
    T, B, H = inputs["grad_out"].shape
    dtype = inputs["x"].dtype
    dev = {name: None if value is None else arrays.asarray(value) for name, value in inputs.items()}
    out_both = arrays.asarray(np.full((T, B, 2 * H), 7, dtype))
    grad_out_both = arrays.asarray(np.concatenate([np.zeros_like(inputs["grad_out"]),
                                                   inputs["grad_out"]], axis=2))
    out, grad_out = out_both[:, :, H:], grad_out_both[:, :, H:]
    module.rnn_forward(dev["x"], dev["h0"], dev["w_ih"], dev["w_hh"], dev["bias"], out,
                       reverse, relu)
    like = {"x": "x", "h0": "h0", "w_ih": "w_ih", "w_hh": "w_hh"}
    like.update({"b_ih": "bias", "b_hh": "bias"} if inputs["bias"] is not None else {})
    grads = {name: arrays.asarray(np.ones(inputs[source].shape, dtype))
             for name, source in like.items()}
    module.rnn_backward(dev["x"], dev["h0"], dev["w_ih"], dev["w_hh"], out, grad_out,
                        dev["grad_hn"], reverse, relu, grads["x"], True, grads["h0"],
                        grads["w_ih"], grads["w_hh"], grads.get("b_ih"), grads.get("b_hh"))
    results = {name: arrays.to_host(value) for name, value in grads.items()}
    results["out"] = arrays.to_host(out_both)
    return results


def check_layer_direction(rng, T, B, I, H, dtype, reverse, relu, bias=True):
    inputs = layer_direction_inputs(rng, T, B, I, H, dtype, bias)
    expected = run_layer_direction(reference, reference.ARRAYS, inputs, reverse, relu)
    actual = run_layer_direction(backend, backend.ARRAYS, inputs, reverse, relu)
    assert np.all(actual["out"][:, :, :H] == 7), "the other half of the output buffer was touched"
    for name in expected:
        assert_close(actual[name], expected[name], dtype, RTOL[dtype])


# shape (T, B, I, H): B*H = 24 gives one thread per output, B*H = 10 two threads per output
@pytest.mark.parametrize("strategy,on_chip,relu,dtype,reverse,bias,shape", [
    ("rows", None, False, "float32", False, True, (4, 3, 2, 8)),
    ("rows", None, True, "float64", True, False, (3, 2, 3, 5)),
    ("grid", True, False, "float64", True, True, (4, 3, 2, 8)),
    ("grid", True, True, "float32", False, True, (3, 2, 3, 5)),
    ("grid", False, False, "float32", True, False, (3, 2, 3, 5)),
    ("grid", False, True, "float64", False, True, (2, 1, 1, 3)),
])
def test_layer_direction_matches_reference(monkeypatch, strategy, on_chip, relu, dtype, reverse,
                                           bias, shape):
    plans = record_plans(monkeypatch)
    with backend.forced_recurrence(strategy, on_chip):
        check_layer_direction(np.random.default_rng(0), *shape, dtype, reverse, relu, bias)
    assert [plan.strategy for plan in plans] == [strategy, strategy]     # forward, backward
    assert all(plan.weights_on_chip == (on_chip is not False) for plan in plans)


def record_plans(monkeypatch):
    """The list the plans of all later time-loop launches are appended to."""
    plans, run = [], backend._run_recurrence
    monkeypatch.setattr(backend, "_run_recurrence", lambda *args: plans.append(run(*args)))
    return plans


def test_rows_kernel_with_one_block_per_batch_row(monkeypatch):
    monkeypatch.setattr(backend, "ROW_OUTPUTS_PER_BLOCK", 1)     # 3 batch rows: 3 blocks
    assert backend.plan_recurrence(3, 4, 4, None).grid == (3, 1)
    check_layer_direction(np.random.default_rng(1), 3, 3, 2, 4, "float32", False, False)


@pytest.mark.parametrize("on_chip", [True, False])
def test_grid_kernel_with_several_blocks_at_one_step(monkeypatch, on_chip):
    """At T=1 the forward never reads another block's output, so the simulator runs a grid of
    several blocks faithfully: this checks how blocks split W_hh's rows (H=5 over 3 blocks)."""
    limits = backend.DeviceLimits(3, lambda threads, shared_bytes: 3)
    monkeypatch.setattr(backend, "_device_limits", lambda kernel, args: limits)
    rng = np.random.default_rng(2)
    inputs = layer_direction_inputs(rng, 1, 2, 3, 5, "float64")
    expected = np.empty((1, 2, 5))
    reference.rnn_forward(inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
                          inputs["bias"], expected, False, False)
    arrays = backend.ARRAYS
    out = arrays.empty((1, 2, 5), "float64")
    with backend.forced_recurrence("grid", on_chip):
        assert backend.plan_recurrence(2, 5, 8, lambda: limits).grid == (1, 3)
        args = (arrays.asarray(inputs[k]) for k in ("x", "h0", "w_ih", "w_hh", "bias"))
        backend.rnn_forward(*args, out, False, False)
    assert_close(arrays.to_host(out), expected, "float64", RTOL["float64"])


class TestGemm:
    """The tiled product on shapes spanning several tiles in M, N and K."""

    def host(self, a):
        return backend.ARRAYS.to_host(a)

    def test_small_tile_projection_with_bias_into_strided_rows(self):
        rng, arrays = np.random.default_rng(3), backend.ARRAYS
        x, w, bias = (random_array(rng, s, "float64") for s in ((4, 5, 10), (18, 10), 18))
        both = arrays.zeros((4, 5, 36), "float64")
        backend.gemm_into(both[:, :, 18:], arrays.asarray(x), arrays.asarray(w[None]),
                          b_transposed=True, bias=arrays.asarray(bias),
                          tile=cuda_kernels.SMALL_TILE)
        assert_close(self.host(both)[:, :, 18:], x @ w.T + bias, "float64", RTOL["float64"])
        assert np.all(self.host(both)[:, :, :18] == 0)

    def test_small_tile_accumulating_products(self):
        rng, arrays = np.random.default_rng(4), backend.ARRAYS
        g, x, w = (random_array(rng, s, "float32") for s in ((4, 5, 18), (4, 5, 10), (18, 10)))
        grad_x, grad_w = (random_array(rng, s, "float32") for s in ((4, 5, 10), (18, 10)))
        grad_x_dev, grad_w_dev = arrays.asarray(grad_x), arrays.asarray(grad_w)
        backend.gemm_into(grad_x_dev, arrays.asarray(g), arrays.asarray(w[None]), accumulate=True,
                          tile=cuda_kernels.SMALL_TILE)                     # += G W
        backend.gemm_into(grad_w_dev[None], arrays.asarray(g), arrays.asarray(x),
                          a_transposed=True, accumulate=True, tile=cuda_kernels.SMALL_TILE)
        assert_close(self.host(grad_x_dev), grad_x + g @ w, "float32", RTOL["float32"])
        expected_w = grad_w + g.reshape(20, 18).T @ x.reshape(20, 10)      # += G^T X
        assert_close(self.host(grad_w_dev), expected_w, "float32", RTOL["float32"])

    def test_large_tile_two_row_tiles(self):
        rng, arrays = np.random.default_rng(5), backend.ARRAYS
        x, w = random_array(rng, (7, 10, 17), "float32"), random_array(rng, (3, 17), "float32")
        out = arrays.empty((7, 10, 3), "float32")
        backend.gemm_into(out, arrays.asarray(x), arrays.asarray(w[None]), b_transposed=True,
                          tile=cuda_kernels.LARGE_TILE)
        assert_close(self.host(out), x @ w.T, "float32", RTOL["float32"])

    def test_mismatched_shapes_are_refused(self):
        c, a, b = (backend.ARRAYS.empty(s, "float32") for s in ((2, 3, 2), (2, 3, 3), (1, 4, 2)))
        with pytest.raises(ValueError, match=r"op\(a\) is 6x3, op\(b\) 4x2, c 6x2"):
            backend.gemm_into(c, a, b)

    def test_tile_choice(self):
        assert backend.choose_tile(100, 64) == cuda_kernels.SMALL_TILE
        assert backend.choose_tile(6400, 512) == cuda_kernels.LARGE_TILE


class TestPlan:
    """The strategy rule, with an H100's numbers (132 SMs, 228 KiB of shared memory per SM)."""

    @staticmethod
    def h100():
        def cooperative_blocks(threads, shared_bytes):
            return 132 * min(2048 // threads, 32, 233472 // max(shared_bytes + 1024, 1))
        return lambda: backend.DeviceLimits(132, cooperative_blocks)

    @staticmethod
    def no_device_limits():
        raise AssertionError("the rows strategy must not ask for the grid kernel's limits")

    @pytest.mark.parametrize("batch,hidden,itemsize", [(1, 32, 4), (64, 64, 4), (1, 109, 4),
                                                       (16, 76, 8)])
    def test_rows_while_w_hh_fits_one_block(self, batch, hidden, itemsize):
        plan = backend.plan_recurrence(batch, hidden, itemsize, self.no_device_limits)
        assert plan.strategy == "rows" and plan.units_per_block == hidden
        assert plan.shared_bytes <= backend.SHARED_BYTES_PER_BLOCK
        assert plan.unit_blocks == 1 and plan.row_blocks * plan.rows_per_block >= batch

    @pytest.mark.parametrize("batch,hidden,itemsize", [(1, 110, 4), (16, 78, 8)])
    def test_grid_once_it_does_not(self, batch, hidden, itemsize):
        assert backend.plan_recurrence(batch, hidden, itemsize, self.h100()).strategy == "grid"

    @pytest.mark.parametrize("batch,hidden,itemsize,on_chip", [
        (1, 2048, 4, True),        # inference: W_hh stays on chip over ~400 blocks
        (64, 512, 4, True),
        (64, 2560, 4, False),      # each extra block re-reads h_{t-1}: W_hh from L2 is cheaper
        (1, 2048, 8, False),       # float64 W_hh (32 MiB) fits no cooperative grid
    ])
    def test_grid_layout(self, batch, hidden, itemsize, on_chip):
        plan = backend.plan_recurrence(batch, hidden, itemsize, self.h100())
        cooperative_blocks = self.h100()().cooperative_blocks
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
            assert backend.plan_recurrence(2, 8, 4, self.h100()).strategy == "grid"
        with backend.forced_recurrence("grid", weights_on_chip=False):
            assert not backend.plan_recurrence(1, 2048, 4, self.h100()).weights_on_chip
        with backend.forced_recurrence("rows"), pytest.raises(ValueError, match="'rows' strategy"):
            backend.plan_recurrence(2, 512, 4, self.h100())
        with backend.forced_recurrence("grid", weights_on_chip=True), \
                pytest.raises(ValueError, match="cannot keep W_hh"):
            backend.plan_recurrence(1, 2048, 8, self.h100())
        with pytest.raises(ValueError, match="strategy must be"):
            with backend.forced_recurrence("persistent"):
                pass
        assert backend.plan_recurrence(2, 8, 4, self.h100()).strategy == "rows"   # restored


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


def make_pair(**kwargs):
    """The same layer on the reference and on the cuda backend."""
    return (fastrnn.RNN(backend="numpy", seed=7, **kwargs),
            fastrnn.RNN(backend="cuda", seed=7, **kwargs))


def test_two_layer_bidirectional_layer_numpy_in_numpy_out():
    rng = np.random.default_rng(8)
    ref, dev = make_pair(input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                         batch_first=True, nonlinearity="relu", dtype="float64")
    x, hx = random_array(rng, (2, 3, 3), "float64"), random_array(rng, (4, 2, 4), "float64")
    expected, actual = ref(x, hx), dev(x, hx)
    for e, a in zip(expected, actual):
        assert isinstance(a, np.ndarray)
        assert_close(a, e, "float64", RTOL["float64"])
    grad_out, grad_hn = (random_array(rng, s, "float64") for s in ((2, 3, 8), (4, 2, 4)))
    for e, a in zip(ref.backward(grad_out, grad_hn), dev.backward(grad_out, grad_hn)):
        assert isinstance(a, np.ndarray)
        assert_close(a, e, "float64", RTOL["float64"])
    device_grads = dev.grads
    for name, expected_grad in ref.grads.items():
        assert_close(backend.ARRAYS.to_host(device_grads[name]), expected_grad, "float64",
                     RTOL["float64"])


def test_device_arrays_in_and_out_without_host_copies(monkeypatch):
    rng = np.random.default_rng(9)
    ref, dev = make_pair(input_size=3, hidden_size=5)
    x, hx = random_array(rng, (3, 2, 3), "float32"), random_array(rng, (1, 2, 5), "float32")
    grad_out = random_array(rng, (3, 2, 5), "float32")
    dev(x)                                        # moves the parameters to the device once
    x_dev, hx_dev, grad_out_dev = (numba_cuda.to_device(a) for a in (x, hx, grad_out))

    def no_host_copy(*args, **kwargs):
        raise AssertionError("a host <-> device copy during a device-array call")
    monkeypatch.setattr(numba_cuda, "to_device", no_host_copy)
    monkeypatch.setattr(type(x_dev), "copy_to_host", no_host_copy)
    out, h_n = dev(x_dev, hx_dev)
    assert device_pointer(dev._context.layers[0].layer_input) == device_pointer(x_dev)
    grad_x, grad_hx = dev.backward(grad_out_dev)
    monkeypatch.undo()

    assert all(backend.ARRAYS.is_device_array(a) for a in (out, h_n, grad_x, grad_hx))
    expected_out, expected_hn = ref(x, hx)
    expected_grad_x, expected_grad_hx = ref.backward(grad_out)
    for actual, expected in ((out, expected_out), (h_n, expected_hn), (grad_x, expected_grad_x),
                             (grad_hx, expected_grad_hx)):
        assert_close(actual.copy_to_host(), expected, "float32", RTOL["float32"])


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
def run_python(code, **env):
    """Run ``code`` in a fresh interpreter (the simulator switched off) and parse its last line."""
    environment = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", **env}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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


def test_kernels_compile_for_sm90_without_a_gpu():
    """Typing and LLVM lowering with real numba (the simulator checks neither); the last step,
    NVVM to PTX, needs the CUDA toolkit and is left to the GPU machine."""
    report = run_python("""
        import json, types as pytypes
        from numba import types
        try:                                    # numba-cuda internals (0.30): may move
            import numba.cuda.dispatcher as dispatcher
            from numba.cuda.compiler import _compile_pyfunc_with_fixup
            dispatcher.get_current_device
        except (ImportError, AttributeError) as exc:
            print(json.dumps({"internals missing": str(exc)}))
            raise SystemExit
        # device functions ask the current device for its compute capability: pretend sm_90
        dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
        from fastrnn.backends import cuda_kernels as K

        def lower(kernel, signature):
            library, _ = _compile_pyfunc_with_fixup(
                kernel.py_func, signature, device=False, cc=(9, 0), debug=False, lineinfo=False,
                fastmath=False, opt=True, abi="numba", abi_info=None, forceinline=False,
                launch_bounds=None, lto=False)
            return library

        report = {}
        for name, tile in (("float32", K.LARGE_TILE), ("float64", K.SMALL_TILE)):
            dt = getattr(types, name)
            C1, C2 = types.Array(dt, 1, "C"), types.Array(dt, 2, "C")
            C3, A3 = types.Array(dt, 3, "C"), types.Array(dt, 3, "A")
            flag, count = types.boolean, types.int64
            for grid_wide in (False, True):
                forward, backward = K.recurrent_kernels(name, grid_wide)
                report[f"{name} forward {grid_wide}"] = lower(
                    forward, (C2, C1, A3, flag, flag, count, count, count, flag)).use_cooperative
                report[f"{name} backward {grid_wide}"] = lower(
                    backward, (A3, A3, C2, C1, C3, C2, flag, flag, count, count, count, flag)
                ).use_cooperative
            gemm = K.gemm_kernel(name, tile)
            for a, c in ((C3, A3), (A3, C3)):
                ir = lower(gemm, (a, flag, C3, flag, C1, flag, c, flag)).get_llvm_str()
            report[f"{name} gemm float64 arithmetic"] = " double " in ir and "fadd double" in ir
            lower(K.column_sums_kernel(name), (C3, C1, C1))
            lower(K.swap_first_axes, (A3, C3))
            lower(K.elementwise, (C1, C1, C1, flag))
            lower(K.fill, (C1, dt))
        print(json.dumps(report))
    """)
    if "internals missing" in report:
        pytest.skip(f"numba-cuda's internal compile API changed: {report['internals missing']}")
    for dtype in ("float32", "float64"):
        for direction in ("forward", "backward"):
            assert report[f"{dtype} {direction} False"] is False   # rows: any grid size
            assert report[f"{dtype} {direction} True"] is True     # grid: cooperative launch
    assert report["float32 gemm float64 arithmetic"] is False
    assert report["float64 gemm float64 arithmetic"] is True
