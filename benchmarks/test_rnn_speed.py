"""pytest-benchmark suite: every engine on every shape and cell, forward (inference, grad off)
and forward + backward, one benchmark group per shape and cell; the limit (the shape's matrix
products alone) as one more entry of each group; the ragged batches (fastrnn with lengths,
padded, and the packed peers); and the latency shapes (T=1, T=16 at B=1).

    pytest benchmarks                                  # the small shapes, 1 thread
    FASTRNN_BENCH_SHAPES=deepbench FASTRNN_BENCH_THREADS=2 pytest benchmarks
    FASTRNN_BENCH_CELLS=lstm,gru pytest benchmarks     # the gated cells
    pytest benchmarks --benchmark-disable -q           # CI smoke run: toy shapes, once each

For ratios measured the way the project reports them (one process, engines alternating, the
limit alongside), use ``python -m fastrnn bench``.
"""
import pytest

from fastrnn.bench import limit, shapes
from fastrnn.bench.engines import ENGINES
from fastrnn.bench.timing import MODES, timed_calls

THROUGHPUT = [e.name for e in ENGINES if "throughput" in e.sections]
RAGGED = [e.name for e in ENGINES if "ragged" in e.sections]
LATENCY = [e.name for e in ENGINES if "latency" in e.sections]


def run_benchmark(benchmark, runner, mode):
    calls = timed_calls(runner)
    if mode not in calls:
        pytest.skip(f"the engine has no {mode.replace('_', ' + ')}")
    call, context = calls[mode]
    with context():
        benchmark(call)


def describe(benchmark, machine_info, group, name, **extra):
    benchmark.group, benchmark.name = group, name
    benchmark.extra_info.update(machine_info)
    benchmark.extra_info.update(extra)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", THROUGHPUT)
def test_throughput(benchmark, shape, engine, mode, problem, checked_runner, machine_info):
    runner = checked_runner(engine, problem)
    describe(benchmark, machine_info, shape.key, f"{engine} {mode.replace('_', '+')}",
             shape=shape.key, engine=engine, mode=mode, flops=shapes.flops(shape, mode))
    run_benchmark(benchmark, runner, mode)


@pytest.mark.parametrize("mode", MODES)
def test_limit(benchmark, shape, mode, machine_info):
    describe(benchmark, machine_info, shape.key, f"limit {mode.replace('_', '+')}",
             shape=shape.key, engine="limit", mode=mode, how=limit.HOW)
    run_benchmark(benchmark, limit.make_runner(shape), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", RAGGED)
def test_ragged(benchmark, ragged_shape, engine, mode, ragged_problem, checked_runner,
                machine_info):
    runner = checked_runner(engine, ragged_problem)
    describe(benchmark, machine_info, f"ragged {ragged_shape.key}",
             f"{engine} {mode.replace('_', '+')}", shape=ragged_shape.key, engine=engine,
             mode=mode, flops=shapes.flops(ragged_shape, mode))
    run_benchmark(benchmark, runner, mode)


@pytest.mark.parametrize("engine", LATENCY)
def test_latency(benchmark, latency_shape, engine, latency_problem, checked_runner,
                 machine_info):
    runner = checked_runner(engine, latency_problem)
    describe(benchmark, machine_info, f"latency {latency_shape.label}", engine,
             shape=latency_shape.label, engine=engine, mode="forward")
    run_benchmark(benchmark, runner, "forward")
