"""Thread control (fastrnn.set_num_threads / num_threads), the BLAS the kernels run on and the
OpenBLAS coretype fastrnn asks for, and the kernels' results under every thread and
instruction-set configuration they can run in (threaded steps, each step-kernel variant).

Coretype tests start a fresh interpreter: OpenBLAS reads OPENBLAS_CORETYPE only when it loads.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastrnn
from fastrnn import functional, threads
from fastrnn.backends import cpu

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")


def blas_thread_counts():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def restore_threads():
    """Every test leaves the BLAS thread counts as it found them."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=None):
        yield


# ----------------------------------------------------------------------------- the API
@pytest.mark.parametrize("n", [1, 2, 3])
def test_set_num_threads_sets_every_blas_library(n):
    fastrnn.set_num_threads(n)
    assert fastrnn.get_num_threads() == n
    assert blas_thread_counts() and all(count == n for count in blas_thread_counts())


def test_num_threads_restores_each_library_on_exit():
    fastrnn.set_num_threads(3)
    with fastrnn.num_threads(1):
        assert fastrnn.get_num_threads() == 1
        assert set(blas_thread_counts()) == {1}
    assert fastrnn.get_num_threads() == 3
    assert set(blas_thread_counts()) == {3}


def test_num_threads_restores_after_an_exception():
    fastrnn.set_num_threads(2)
    with pytest.raises(KeyError):
        with fastrnn.num_threads(1):
            raise KeyError("inside")
    assert fastrnn.get_num_threads() == 2


@pytest.mark.parametrize("bad, error, words", [
    (0, ValueError, "must be >= 1, got 0"),
    (-2, ValueError, "must be >= 1, got -2"),
    (1.5, TypeError, "must be an int, got float 1.5"),
    (True, TypeError, "must be an int, got bool True"),
    ("2", TypeError, "must be an int, got str '2'"),
])
def test_bad_thread_counts_are_refused(bad, error, words):
    with pytest.raises(error, match=words):
        fastrnn.set_num_threads(bad)
    with pytest.raises(error, match=words):
        with fastrnn.num_threads(bad):
            pass


def test_kernel_blas_is_scipys_openblas_with_thread_functions():
    library = threads.kernel_blas()
    assert library is not None
    assert library["filepath"] in [info["filepath"] for info in threads.blas_libraries()]
    if library["internal_api"] != "openblas":
        pytest.skip(f"SciPy uses {library['internal_api']} here, not OpenBLAS")
    assert "scipy" in library["filepath"]
    set_address, get_address = threads.kernel_blas_thread_functions()
    assert set_address != 0 and get_address != 0 and set_address != get_address


def test_kernels_put_back_the_thread_count_after_small_products():
    """Products below the threshold run on one thread, and the count comes back afterwards."""
    layer = fastrnn.RNN(8, 16, backend="cpu", seed=0)
    x = np.ones((5, 2, 8), dtype=np.float32)
    with fastrnn.num_threads(2):
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
        assert fastrnn.get_num_threads() == 2


# ----------------------------------------------------------------------------- results
SHAPES = [  # T, B, I, H, layers, bidirectional: odd sizes cover partial tiles and panels;
    # multiples of 32 (and 16, 8) take the in-place weight-gradient product of every variant
    (5, 3, 4, 7, 1, False), (7, 1, 3, 70, 2, True), (4, 9, 17, 40, 1, True),
    (6, 13, 5, 130, 2, False), (2, 17, 8, 33, 1, False), (4, 3, 32, 64, 2, True),
    (3, 7, 16, 48, 1, True), (5, 2, 64, 96, 1, False)]


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def forward_backward(backend, weights, x, hx, grad_out, grad_hn, nonlinearity):
    out, h_n, context = functional.rnn_forward(x, weights, hx, nonlinearity=nonlinearity,
                                               backend=backend)
    grad_x, grad_hx, grads = functional.rnn_backward(context, grad_out, grad_hn)
    return [out, h_n, grad_x, grad_hx] + [grads[name] for name in sorted(grads)]


def assert_cpu_matches_reference(shape, nonlinearity, dtype="float32", seed=0):
    T, B, I, H, layers, bidirectional = shape
    D = 2 if bidirectional else 1
    layer = fastrnn.RNN(I, H, layers, nonlinearity=nonlinearity, bidirectional=bidirectional,
                        dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = (0.5 * rng.standard_normal((layers * D, B, H))).astype(dtype)
    grad_out = rng.standard_normal((T, B, D * H)).astype(dtype)
    grad_hn = rng.standard_normal((layers * D, B, H)).astype(dtype)
    args = (layer.state_dict(), x, hx, grad_out, grad_hn, nonlinearity)
    expected = forward_backward("numpy", *args)
    got = forward_backward("cpu", *args)
    tolerance = 1e-5 if dtype == "float32" else 1e-10
    for name, g, e in zip(["output", "h_n", "grad_x", "grad_hx"] + ["param"] * 99, got, expected):
        assert relative_error(g, e) < tolerance, (name, shape, nonlinearity)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape", SHAPES)
def test_steps_shared_by_two_threads_match_the_reference(monkeypatch, shape, nonlinearity):
    monkeypatch.setattr(cpu, "STEP_THREADING_MIN_MACS", 0)     # share even these small steps
    with fastrnn.num_threads(2):
        assert cpu._step_threads(shape[1], shape[3]) == 2
        assert_cpu_matches_reference(shape, nonlinearity)


def test_weight_gradients_shared_by_two_threads_match_the_reference():
    """T*B = 256 rows make dW_ih 2^25 FLOPs, the size from which products use the threads."""
    with fastrnn.num_threads(2):
        assert_cpu_matches_reference((8, 32, 256, 256, 1, False), "tanh")


def test_small_steps_stay_on_one_thread():
    with fastrnn.num_threads(2):
        assert cpu._step_threads(16, 64) == 1
        assert cpu._step_threads(64, 1760) == 2


STEP_KERNELS = ["avx512", "avx2", "generic"]


@pytest.fixture
def step_kernel(request):
    """Runs a test with one step-kernel variant, if this CPU runs it; then back to the best."""
    from fastrnn import _rnn_cpu
    try:
        previous = _rnn_cpu.use_step_kernel(request.param)
    except ValueError as exc:
        pytest.skip(str(exc))
    yield request.param
    _rnn_cpu.use_step_kernel(previous)


@pytest.mark.parametrize("step_kernel", STEP_KERNELS, indirect=True)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_step_kernel_variant_matches_the_reference(step_kernel, shape, nonlinearity):
    from fastrnn import _rnn_cpu
    assert _rnn_cpu.step_kernel_name() == step_kernel
    assert_cpu_matches_reference(shape, nonlinearity)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_float64_matches_the_reference(shape):
    assert_cpu_matches_reference(shape, "tanh", dtype="float64")


def test_unknown_step_kernel_is_refused():
    from fastrnn import _rnn_cpu
    before = _rnn_cpu.step_kernel_name()
    with pytest.raises(ValueError, match="step kernel 'sse9' cannot run on this CPU"):
        _rnn_cpu.use_step_kernel("sse9")
    assert _rnn_cpu.step_kernel_name() == before


# ----------------------------------------------------------------------------- coretype
PROBE = """
import json, os, sys
{prelude}
import fastrnn
from fastrnn import threads
from fastrnn.backends import cpu
print(json.dumps({{"kernels": threads.kernel_blas()["architecture"],
                  "report": cpu.coretype_report(),
                  "setup": cpu.openblas_setup_report(),
                  "env_after": os.environ.get("OPENBLAS_CORETYPE"),
                  "timeout_env_after": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}}))
"""


def probe(env_changes, prelude=""):
    """Imports fastrnn in a fresh interpreter; returns what its kernels' BLAS picked."""
    env = {k: v for k, v in os.environ.items()
           if k not in [name for variable, (override, _) in cpu.LOAD_SETTINGS.items()
                        for name in (variable, override)]}
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", PROBE.format(prelude=prelude)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_openblas = pytest.mark.skipif(
    (threads.kernel_blas() or {}).get("internal_api") != "openblas",
    reason="the coretype is an OpenBLAS setting and SciPy's BLAS is not OpenBLAS here")


@needs_openblas
def test_fastrnn_requests_avx512_kernels_when_the_cpu_has_them():
    result = probe({})
    if cpu._cpu_runs_avx512():
        assert result["kernels"] == "SkylakeX"
        assert "SkylakeX requested by fastrnn" in result["report"]
    else:
        assert "does not run AVX-512" in result["report"]
    assert result["env_after"] is None          # nobody else sees the variable


@needs_openblas
def test_fastrnn_shortens_openblas_thread_spinning_unless_told_otherwise():
    assert "16 (2^16 cycles) requested by fastrnn" in probe({})["setup"]["OPENBLAS_THREAD_TIMEOUT"]
    assert probe({})["timeout_env_after"] is None
    user = probe({"OPENBLAS_THREAD_TIMEOUT": "20"})
    assert user["setup"]["OPENBLAS_THREAD_TIMEOUT"] == "OPENBLAS_THREAD_TIMEOUT=20 set by the user"
    assert user["timeout_env_after"] == "20"
    off = probe({"FASTRNN_OPENBLAS_THREAD_TIMEOUT": "off"})
    assert "OpenBLAS's default" in off["setup"]["OPENBLAS_THREAD_TIMEOUT"]


@needs_openblas
def test_coretype_setting_asks_for_another_coretype():
    result = probe({cpu.CORETYPE_SETTING: "Haswell"})
    assert result["kernels"] == "Haswell"
    assert f"Haswell requested by {cpu.CORETYPE_SETTING}" in result["report"]
    assert result["env_after"] is None


@needs_openblas
def test_users_openblas_coretype_wins():
    result = probe({"OPENBLAS_CORETYPE": "Haswell", cpu.CORETYPE_SETTING: "SkylakeX"})
    assert result["kernels"] == "Haswell"
    assert "OPENBLAS_CORETYPE=Haswell set by the user" in result["report"]
    assert result["env_after"] == "Haswell"     # the user's variable is left in place


@needs_openblas
def test_coretype_choice_can_be_turned_off():
    result = probe({cpu.CORETYPE_SETTING: "off"})
    assert f"OpenBLAS's default ({cpu.CORETYPE_SETTING}=off)" in result["report"]


@needs_openblas
def test_report_says_when_scipy_was_loaded_first():
    result = probe({cpu.CORETYPE_SETTING: "Haswell"}, prelude="import scipy.linalg")
    assert "loaded before fastrnn's kernels" in result["report"]
    assert "loaded before fastrnn's kernels" in result["setup"]["OPENBLAS_THREAD_TIMEOUT"]
    assert result["kernels"] != "Haswell" or not cpu._cpu_runs_avx512()
