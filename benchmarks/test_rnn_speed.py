"""pytest-benchmark suite: every backend on every shape, forward (inference: nothing kept for
backward) and forward + backward, one benchmark group per shape.

    pytest benchmarks                                  # the small shapes, 1 BLAS thread
    FASTRNN_BENCH_SHAPES=deepbench FASTRNN_BENCH_THREADS=2 pytest benchmarks
    pytest benchmarks --benchmark-disable -q           # CI smoke run: toy shapes, once each

For ratios measured the way the project reports them (one process, backends alternating,
sgemm ceiling alongside), use ``python -m fastrnn bench``.
"""
import pytest

from fastrnn import bench


@pytest.mark.parametrize("mode", bench.MODES)
@pytest.mark.parametrize("backend", bench.BACKENDS)
def test_rnn(benchmark, shape, backend, mode, runner, machine):
    benchmark.group = shape.label
    benchmark.name = f"{backend} {mode.replace('_', '+')}"
    benchmark.extra_info.update(machine)
    benchmark.extra_info.update(shape=shape.label, backend=backend, mode=mode,
                                flops=shape.flops(mode))
    benchmark(getattr(runner, mode))
