"""Thread control (fastrnn.set_num_threads / num_threads / get_num_threads), the BLAS the
kernels run on, and the process-wide state fastrnn must leave alone: the BLAS's thread count
while layers run in other threads (issue 9, item 16) and the environment OpenBLAS loads with
(item 17). The kernels' results with two step threads are checked in test_cpu_kernels.py and
test_cpu_lengths.py.
"""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastrnn
from fastrnn import threads
from fastrnn.backends import cpu

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")


def blas_thread_counts():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def restore_threads():
    """Every test leaves the BLAS thread counts as it found them."""
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


def test_kernel_blas_is_scipys_with_a_thread_count_the_kernels_can_read():
    library = threads.kernel_blas()
    assert library is not None
    assert library["filepath"] in [info["filepath"] for info in threads.blas_libraries()]
    if library["internal_api"] != "openblas":
        pytest.skip(f"SciPy uses {library['internal_api']} here, not OpenBLAS")
    assert "scipy" in library["filepath"]
    from fastrnn import _blas
    assert _blas.kernel_blas_thread_count_address() != 0
    with fastrnn.num_threads(2):
        assert cpu._rnn_cpu.planned_step_threads(64, 1760) == 2   # the kernels see the count


def test_thread_api_does_not_import_the_backends():
    """The arrows point one way: backends may use the thread API, never the reverse."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, fastrnn.threads; fastrnn.threads.set_num_threads(1);"
         " print('fastrnn.backends.cpu' in sys.modules, 'fastrnn._rnn_cpu' in sys.modules)"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- item 16
def test_thread_count_set_while_another_thread_runs_layers_is_never_undone():
    """One thread runs small layers (products of a size the kernels once ran with the BLAS
    lowered to one thread, then restored) without pause; the main thread changes the count and
    reads it back after a few of those calls. A kernel that saved and restored the count
    would, sooner or later, put back the old value."""
    layer = fastrnn.RNN(64, 64, backend="cpu", seed=0)
    x = np.ones((40, 8, 64), dtype=np.float32)
    stop, calls, errors = threading.Event(), [0], []

    def run_layers():
        try:
            while not stop.is_set():
                out, _ = layer(x)
                layer.backward(np.ones_like(out))
                calls[0] += 1
        except Exception as exc:   # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=run_layers)
    fastrnn.set_num_threads(2)
    worker.start()
    try:
        for i in range(60):
            wanted = 1 + i % 2
            fastrnn.set_num_threads(wanted)
            seen = calls[0]
            while calls[0] < seen + 2 and worker.is_alive():
                threading.Event().wait(0.0005)
            assert fastrnn.get_num_threads() == wanted, f"undone after {i} changes"
            assert set(blas_thread_counts()) == {wanted}
    finally:
        stop.set()
        worker.join()
    assert not errors, errors


def test_different_layers_in_two_threads_at_once_give_what_each_gives_alone():
    """The kernels keep no state between or across calls (scratch memory is per call), so two
    layers running at the same time in two threads (the GIL released) are not disturbed."""
    rng = np.random.default_rng(3)
    layers = [fastrnn.RNN(16, 64, 2, bidirectional=True, backend="cpu", seed=s) for s in (0, 1)]
    inputs = [rng.standard_normal((30, 4, 16)).astype(np.float32) for _ in layers]
    lengths = [np.array([30, 12, 7, 1]), None]

    def run(index):
        layer = layers[index]
        out, h_n = layer(inputs[index], lengths=lengths[index])
        grad_x, _ = layer.backward(np.ones_like(out))
        return [out, h_n, grad_x]

    alone = [run(0), run(1)]
    mismatches, errors = [], []

    def repeat(index):
        try:
            for _ in range(15):
                if not all(np.array_equal(a, b) for a, b in zip(run(index), alone[index])):
                    mismatches.append(index)
        except Exception as exc:   # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=repeat, args=(i,)) for i in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and not mismatches, (errors, mismatches)


# ----------------------------------------------------------------------------- item 17
PROBE = """
import json, os
import numpy as np          # NumPy sets and unsets OPENBLAS_MAIN_FREE while it loads its own BLAS
changed = []
real_putenv, real_unsetenv = os.putenv, os.unsetenv
os.putenv = lambda key, value: (changed.append(("set", key, value)), real_putenv(key, value))
os.unsetenv = lambda key: (changed.append(("unset", key)), real_unsetenv(key))
import fastrnn
from fastrnn.backends import cpu
layer = fastrnn.RNN(4, 8, backend="cpu")
out, _ = layer(np.ones((3, 2, 4), np.float32))
layer.backward(np.ones_like(out))
print(json.dumps({"changed": changed, "setup": cpu.openblas_setup_report(),
                  "coretype": cpu.coretype_report(),
                  "env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}))
"""


def probe(env_changes):
    """Imports fastrnn and runs a layer in a fresh interpreter that records every change to
    its environment from then on; returns what it saw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS", "FASTRNN"))}
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_and_running_fastrnn_changes_no_environment_variable():
    result = probe({})
    assert result["changed"] == []
    assert result["env"] == {}
    assert all("not set" in why for why in result["setup"].values())
    assert "OpenBLAS own choice" in result["coretype"]


def test_the_users_openblas_variables_are_reported_and_left_alone():
    result = probe({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_THREAD_TIMEOUT": "16"})
    assert result["changed"] == []
    assert result["env"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_THREAD_TIMEOUT": "16"}
    assert result["setup"] == {"OPENBLAS_CORETYPE": "OPENBLAS_CORETYPE=Haswell set by the user",
                               "OPENBLAS_THREAD_TIMEOUT": "OPENBLAS_THREAD_TIMEOUT=16 set by "
                                                          "the user"}
    if (threads.kernel_blas() or {}).get("internal_api") == "openblas":
        assert result["coretype"].startswith("Haswell (OPENBLAS_CORETYPE=Haswell set by the user")
