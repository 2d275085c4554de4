"""Fixtures of the pytest-benchmark suite (benchmarks/test_rnn_speed.py).

Why: pytest-benchmark times one function at a time, so what the protocol needs around it
lives here: the BLAS threads are fixed for the whole session (FASTRNN_BENCH_THREADS, default
1) and every result carries the machine, the libraries and the BLAS kernels in its
``extra_info``. Shapes come from FASTRNN_BENCH_SHAPES (small | deepbench | all, default
small); with ``--benchmark-disable`` (the CI smoke run) only the two toy shapes run, once.
The backends and their timed calls are the ones ``python -m fastrnn bench`` uses.
"""
import os

import pytest

from fastrnn import bench

THREADS = int(os.environ.get("FASTRNN_BENCH_THREADS", "1"))
SHAPES = os.environ.get("FASTRNN_BENCH_SHAPES", "small")


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        disabled = metafunc.config.getoption("benchmark_disable", False)
        shapes = bench.SHAPE_SETS["tiny" if disabled else SHAPES]
        metafunc.parametrize("shape", shapes, ids=[s.label for s in shapes], scope="module")


@pytest.fixture(scope="session")
def availability():
    """{backend: None or why it cannot run here}."""
    return bench.backend_availability(list(bench.BACKENDS))


@pytest.fixture(scope="session")
def machine(availability):
    """Fixes the threads once, then describes what the benchmarks run on."""
    runnable = [name for name, reason in availability.items() if reason is None]
    bench.set_threads(THREADS, runnable)
    return {"threads": THREADS, "cpu": bench.cpu_name(), "libraries": bench.library_versions(),
            "blas": bench.blas_description(runnable)}


@pytest.fixture(scope="module")
def inputs(shape):
    """Weights, input and output gradient of one shape, shared by every backend."""
    return bench.shape_inputs(shape)


@pytest.fixture
def runner(shape, backend, inputs, availability, machine):
    if availability[backend] is not None:
        pytest.skip(f"{backend}: {availability[backend]}")
    return bench.make_runner(backend, shape, *inputs)
