"""Fixtures of the pytest-benchmark suite (benchmarks/test_rnn_speed.py).

Why: pytest-benchmark times one function at a time, so what the protocol needs around it lives
here, borrowed from ``python -m fastrnn bench``: every engine gets the same threads for the
whole session (FASTRNN_BENCH_THREADS, default 1; the bench's prepare_threads), each engine is
checked against fastrnn on each shape before it is timed, and every result carries the machine,
the libraries and the BLAS kernels in its ``extra_info``. Shapes come from FASTRNN_BENCH_SHAPES
(small | deepbench | all, default small), each once per cell of FASTRNN_BENCH_CELLS (a comma
list of rnn, lstm, gru; default rnn), and the ragged batches likewise; with
``--benchmark-disable`` (the CI smoke run) only the toy shapes run, once each: all of them for
the Elman RNN, the first for LSTM and GRU (their code paths are the same; the agreement of
every cell on every layout is tests/test_bench_cli.py's job).
"""
import os

import pytest

from fastrnn.bench import agreement, machine, shapes
from fastrnn.bench.engines import BY_NAME, Skip
from fastrnn.bench.run import prepare_threads, select_engines

THREADS = int(os.environ.get("FASTRNN_BENCH_THREADS", "1"))
SHAPES = os.environ.get("FASTRNN_BENCH_SHAPES", "small")
CELLS = os.environ.get("FASTRNN_BENCH_CELLS", "rnn").split(",")


def smoke_shapes(shape_list):
    return (shapes.with_cells(shape_list, ["rnn"])
            + shapes.with_cells(shape_list[:1], ["lstm", "gru"]))


def pytest_generate_tests(metafunc):
    disabled = metafunc.config.getoption("benchmark_disable", False)
    shape_set = "tiny" if disabled else SHAPES
    for fixture, shape_list in (("shape", shapes.SHAPE_SETS[shape_set]),
                                ("ragged_shape", shapes.ragged_shapes(shape_set))):
        if fixture in metafunc.fixturenames:
            shape_list = (smoke_shapes(shape_list) if disabled
                          else shapes.with_cells(shape_list, CELLS))
            metafunc.parametrize(fixture, shape_list, ids=[s.key for s in shape_list],
                                 scope="module")
    if "latency_shape" in metafunc.fixturenames:
        metafunc.parametrize("latency_shape", shapes.LATENCY,
                             ids=[s.label for s in shapes.LATENCY], scope="module")


@pytest.fixture(scope="session")
def unavailable():
    """{engine: why it cannot run here}, after the runnable ones got their threads."""
    runnable, reasons = select_engines(list(BY_NAME))
    prepare_threads(runnable, THREADS)
    return reasons


@pytest.fixture(scope="session")
def machine_info(unavailable):
    return {"threads": THREADS, "cpu": machine.cpu_name(), "libraries": machine.library_versions(),
            "blas": machine.blas_description()}


def _problem(shape):
    problem = agreement.make_problem(shape)
    return problem, agreement.expected_results(problem)


@pytest.fixture(scope="module")
def problem(shape):
    return _problem(shape)


@pytest.fixture(scope="module")
def ragged_problem(ragged_shape):
    return _problem(ragged_shape)


@pytest.fixture(scope="module")
def latency_problem(latency_shape):
    return _problem(latency_shape)


@pytest.fixture(scope="session")
def checked_runner(unavailable):
    """checked_runner(engine, (problem, expected)): the engine's runner on this problem,
    checked against fastrnn, or a skip saying why there is none."""
    def make(engine_name, problem_and_expected):
        if engine_name in unavailable:
            pytest.skip(f"{engine_name}: {unavailable[engine_name]}")
        problem, expected = problem_and_expected
        try:
            runner = BY_NAME[engine_name].make_runner(problem)
            agreement.check_agreement(runner.results(), expected)
        except Skip as exc:
            pytest.skip(f"{engine_name}: {exc}")
        return runner
    return make
