"""The benchmark command: its table, its JSON record, its chart, its errors, a torch-less run.

The command runs in a fresh interpreter on the two toy shapes (``--shapes tiny``) with one
repeat and tiny samples, so these tests take seconds; what they check is the structure and
the bookkeeping (FLOPs, speedups as ratios of the medians), not the speed.
"""
import json
import subprocess
import sys

import pytest

from fastrnn import bench

QUICK = ["--shapes", "tiny", "--repeats", "1", "--min-sample", "0.001", "--no-progress"]
TORCHLESS = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['fastrnn'] + "
             "sys.argv[1:]; runpy.run_module('fastrnn', run_name='__main__')")


def run_bench(args, without_torch=False):
    """``python -m fastrnn bench ARGS``, the command the README gives."""
    command = [sys.executable] + (["-c", TORCHLESS] if without_torch else ["-m", "fastrnn"])
    return subprocess.run(command + ["bench"] + args, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run with every CPU backend, its stdout and its JSON record."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    done = run_bench(QUICK + ["--backends", "numpy,cpu,torch", "--json", str(path)])
    assert done.returncode == 0, done.stderr
    with open(path) as record:
        return done.stdout, json.load(record)


def test_table_has_every_column_and_a_row_per_shape_and_backend(quick_run):
    stdout, _ = quick_run
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("shape (T,B,I,H,L,bi)"))
    for column in bench.TABLE_COLUMNS:
        assert column in header
    for shape in bench.TINY:
        row = next(line for line in lines if line.startswith(shape.label))
        assert row.split()[1] == "numpy"
    assert sum(1 for line in lines if line.split()[:1] == ["sgemm"]) == len(bench.TINY)
    assert sum(1 for line in lines if " cpu " in f" {line} ") == len(bench.TINY)


def test_header_names_cpu_threads_and_blas_kernels(quick_run):
    stdout, record = quick_run
    assert "1 BLAS thread(s)" in stdout
    assert f"CPU: {record['machine']['cpu']}" in stdout
    assert "fastrnn kernels: step kernel" in stdout and "coretype" in stdout
    assert "torch's BLAS:" in stdout


def test_json_records_machine_settings_libraries_and_blas(quick_run):
    _, record = quick_run
    assert record["schema"] == "fastrnn-bench/1"
    assert record["machine"]["cpu"] and record["machine"]["logical_cores"] >= 1
    assert record["settings"] == {"shapes": "tiny", "threads": 1, "repeats": 1, "clock": "wall",
                                  "dtype": "float32", "min_sample_s": 0.001, "settle_s": 0.0,
                                  "backends": ["numpy", "cpu", "torch"]}
    for library in ("python", "fastrnn", "numpy", "scipy", "threadpoolctl", "torch"):
        assert record["libraries"][library]
    kernels = record["blas"]["fastrnn_kernels (scipy)"]
    assert kernels["num_threads"] == 1 and kernels["architecture"]
    assert "coretype_choice" in kernels
    assert all(library["num_threads"] == 1 for library in record["blas"]["all_loaded"])
    assert record["blas"]["torch"]["num_threads"] == 1
    assert record["blas"]["fastrnn_step_kernel"] in ("avx512", "avx2", "generic")
    assert 0 < record["noise"]["median_cpu_share"] <= 1.5


def test_json_results_hold_every_median_and_consistent_ratios(quick_run):
    _, record = quick_run
    assert [r["shape"]["label"] for r in record["results"]] == [s.label for s in bench.TINY]
    for result, shape in zip(record["results"], bench.TINY):
        assert result["flops"] == {"forward": shape.forward_flops(),
                                   "forward_backward": 3 * shape.forward_flops()}
        assert result["sgemm"]["ceiling_gflops"] == max(result["sgemm"]["gflops"].values())
        backends = result["backends"]
        assert list(backends) == ["numpy", "cpu", "torch"]
        for name, entry in backends.items():
            for mode in bench.MODES:
                assert entry[mode]["median_ms"] > 0 and len(entry[mode]["samples_ms"]) == 1
                gflops = shape.flops(mode) / entry[mode]["median_ms"] / 1e6
                assert entry["gflops"][mode] == pytest.approx(gflops)
        cpu, numpy_, torch_ = backends["cpu"], backends["numpy"], backends["torch"]
        for mode in bench.MODES:
            assert cpu["speedup"]["over_numpy"][mode] == pytest.approx(
                numpy_[mode]["median_ms"] / cpu[mode]["median_ms"])
            assert cpu["speedup"]["over_torch"][mode] == pytest.approx(
                torch_[mode]["median_ms"] / cpu[mode]["median_ms"])
        assert "speedup" not in numpy_


def test_a_run_without_torch_says_torch_was_skipped(tmp_path):
    path = tmp_path / "no_torch.json"
    done = run_bench(QUICK + ["--json", str(path)], without_torch=True)
    assert done.returncode == 0, done.stderr
    assert "torch: skipped (torch is not installed" in done.stdout
    record = json.loads(path.read_text())
    assert "torch" in record["skipped"] and "torch" not in record["settings"]["backends"]
    for result in record["results"]:
        assert "torch" not in result["backends"]
        assert "over_torch" not in result["backends"]["cpu"]["speedup"]
        assert "torch" not in result["sgemm"]["gflops"]


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedups.png"
    done = run_bench(QUICK + ["--backends", "numpy", "cpu", "--plot", str(path)])
    assert done.returncode == 0, done.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["--backends", "numpy,tensorflow"], "unknown backend(s) ['tensorflow']"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--clock", "cpu", "--threads", "2"], "--clock cpu adds up the time of all threads"),
    (["--shapes", "huge"], "invalid choice: 'huge'"),
    (["--settle", "-1"], "--settle must be >= 0, got -1.0"),
    (["--shape", "10,2,8"], "expected T,B,I,H[,layers[,bi|no]], got '10,2,8'"),
    (["--shape", "10,2,8,0"], "sizes must be >= 1, got '10,2,8,0'"),
    (["--shape", "10,2,8,8,1,yes"], "expected T,B,I,H[,layers[,bi|no]]"),
])
def test_bad_arguments_are_refused_with_a_clear_message(args, message):
    done = run_bench(args)
    assert done.returncode == 2
    assert message in done.stderr


def test_flop_count_of_a_stacked_bidirectional_shape():
    shape = bench.Shape(50, 32, 128, 256, layers=2, bidirectional=True)
    layer0 = 2 * (2 * 50 * 32 * 256 * (128 + 256))       # two directions, input 128
    layer1 = 2 * (2 * 50 * 32 * 256 * (512 + 256))       # input: both directions' outputs
    assert shape.forward_flops() == layer0 + layer1 == 1_887_436_800
    assert shape.flops("forward_backward") == 3 * shape.forward_flops()


def test_shape_sets_hold_the_issue_shapes():
    labels = [s.label for s in bench.SHAPE_SETS["small"]]
    assert labels == ["672,1,32,32,1,no", "96,1,64,64,1,no", "100,16,64,64,1,no",
                      "100,32,256,256,1,no", "100,64,512,512,1,no", "50,32,128,256,2,bi"]
    deepbench = {(s.T, s.B, s.I, s.H) for s in bench.SHAPE_SETS["deepbench"]}
    assert deepbench == {(50, b, h, h) for h in (1760, 2048, 2560) for b in (16, 32, 64, 128)}
    assert bench.SHAPE_SETS["all"] == bench.SHAPE_SETS["small"] + bench.SHAPE_SETS["deepbench"]


def test_custom_shapes_replace_the_set(tmp_path):
    path = tmp_path / "custom.json"
    done = run_bench(QUICK + ["--backends", "cpu", "--shape", "3,2,5,6", "--shape", "4,1,3,5,2,bi",
                              "--json", str(path)])
    assert done.returncode == 0, done.stderr
    record = json.loads(path.read_text())
    assert record["settings"]["shapes"] == "custom"
    shapes = [r["shape"] for r in record["results"]]
    assert [s["label"] for s in shapes] == ["3,2,5,6,1,no", "4,1,3,5,2,bi"]
    assert shapes[1]["layers"] == 2 and shapes[1]["bidirectional"] is True
