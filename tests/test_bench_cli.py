"""``python -m fastrnn bench``: its outputs, its bookkeeping, the limit and the engines' checks.

The command runs in a fresh interpreter on the two toy shapes (``--shapes tiny``) and the two
toy ragged batches, for every cell, one repeat and tiny samples, so these tests take seconds;
they check structure, arithmetic on the medians and agreement with fastrnn, never speed.
Peers are tested when installed: torch (torch, fastrnn.torch), onnx + onnxruntime, jax;
matplotlib for the chart.
"""
import dataclasses
import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.bench import agreement, limit, report, run, shapes, timing
from fastrnn.bench.engines import BY_NAME, Skip

ENV = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}   # no fake GPU
QUICK = ["--shapes", "tiny", "--repeats", "1", "--min-sample", "0.001", "--no-progress"]
ALL_CELLS = ["--cells", "rnn,lstm", "gru"]             # both spellings of a list
TORCHLESS = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['fastrnn'] + "
             "sys.argv[1:]; runpy.run_module('fastrnn', run_name='__main__')")


def pin_to_one_cpu():
    """What ``taskset -c N`` does: the protocol for single-thread figures (JAX unpinned uses
    a second core's worth of time on toy shapes, and the bench rightly warns)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_bench(args, without_torch=False, pinned=False):
    command = [sys.executable] + (["-c", TORCHLESS] if without_torch else ["-m", "fastrnn"])
    return subprocess.run(command + ["bench"] + args, capture_output=True, text=True,
                          timeout=600, env=ENV, preexec_fn=pin_to_one_cpu if pinned else None)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One run, pinned to one CPU, with every engine installed here and every cell, in every
    format."""
    folder = tmp_path_factory.mktemp("bench")
    paths = {fmt: folder / f"run{suffix}" for suffix, fmt in report.SUFFIXES.items()}
    done = run_bench(QUICK + ALL_CELLS
                     + [arg for path in paths.values() for arg in ("-o", str(path))], pinned=True)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(paths["json"].read_text()), paths


# ----------------------------------------------------------------------------- outputs
def test_text_report_fits_100_columns(quick_run):
    stdout, _, paths = quick_run
    assert stdout == paths["text"].read_text()
    assert max(len(line) for line in stdout.splitlines()) <= 100


def _table(lines, title, results):
    """The rows of the text table whose header starts with ``title``: (header, rows)."""
    header = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[header], lines[header + 1:header + 1 + sum(len(r["engines"]) for r in results)]


def _column(header, rows, name):
    """Each row's word under the column titled ``name`` ('' where the cell is blank)."""
    start = header.index(name)
    return [(row[start:].split() or [""])[0] if row[start:start + 1].strip() else ""
            for row in rows]


def test_text_report_has_a_row_per_shape_cell_and_engine(quick_run):
    stdout, record, _ = quick_run
    header, rows = _table(stdout.splitlines(), "shape T,B,I,H,L,dir  cell", record["throughput"])
    assert header.split() == ["shape", "T,B,I,H,L,dir", "cell", "engine", "fwd", "ms", "rel",
                              "%lim", "f+b", "ms", "rel", "%lim"]
    engines = [name for r in record["throughput"] for name in r["engines"]]
    assert _column(header, rows, "engine") == engines
    assert [row.split()[0] for row in rows if not row.startswith(" ")] == \
        [s.label for s in shapes.TINY]
    first_rows = [r["shape"]["cell"] if i == 0 else "" for r in record["throughput"]
                  for i in range(len(r["engines"]))]
    assert _column(header, rows, "cell") == first_rows
    assert [r["shape"]["key"] for r in record["throughput"]] == \
        [s.key for s in shapes.with_cells(shapes.TINY, shapes.CELLS)]
    for row, engine in zip(rows, engines):
        assert ("fwd only" in row) == (engine == "onnxruntime")


def test_ragged_table_has_fastrnn_padded_and_the_packed_peers(quick_run):
    stdout, record, _ = quick_run
    header, rows = _table(stdout.splitlines(), "shape T,B,I,H,L,dir  lengths", record["ragged"])
    assert header.split() == ["shape", "T,B,I,H,L,dir", "lengths", "cell", "engine", "fwd", "ms",
                              "rel", "f+b", "ms", "rel"]
    assert [r["shape"]["key"] for r in record["ragged"]] == \
        [s.key for s in shapes.with_cells(shapes.TINY_RAGGED, shapes.CELLS)]
    assert [word for word in _column(header, rows, "lengths") if word] == ["2..9", "all"]
    for result in record["ragged"]:
        engines, shape = result["engines"], result["shape"]
        assert list(engines)[:2] == ["fastrnn", "fastrnn-padded"] and "limit" not in engines
        assert "jax" not in engines
        assert ("fastrnn.torch" in engines) == (shape["cell"] == "rnn" and "torch" in engines)
        lengths = shape["lengths"]
        assert len(lengths) == shape["B"] and max(lengths) == shape["T"]
        assert min(lengths) == shape["shortest"]
        tokens_share = sum(lengths) / (shape["T"] * shape["B"])
        padded = shapes.flops(shapes.Shape(shape["T"], shape["B"], shape["I"], shape["H"],
                                           cell=shape["cell"]), "forward_backward")
        assert result["flops"]["forward_backward"] == int(padded * tokens_share)
    assert "fastrnn-padded" not in {name for r in record["throughput"] for name in r["engines"]}


def test_engines_left_out_are_only_those_without_the_cell_or_packing(quick_run):
    stdout, record, _ = quick_run
    expected, every_shape = {}, shapes.TINY + shapes.TINY_RAGGED
    if "fastrnn.torch" in record["settings"]["engines"]:
        expected["fastrnn.torch"] = {s.key: f"fastrnn.torch has no {s.cell.upper()} in this "
                                     f"version" for s in shapes.with_cells(every_shape,
                                                                           ("lstm", "gru"))}
    if "jax" in record["settings"]["engines"]:
        expected["jax"] = {s.key: "lax.scan has no packed sequences (a masked scan would run "
                           "the padded batch)"
                           for s in shapes.with_cells(shapes.TINY_RAGGED, shapes.CELLS)}
    assert record["skipped"] == expected
    words = " ".join(stdout.split())
    for name in expected:
        assert f"Not timed: {name} on " in words


def test_header_names_machine_threads_blas_and_the_limit(quick_run):
    stdout, record, _ = quick_run
    assert stdout.startswith(f"fastrnn {record['libraries']['fastrnn']} bench: 1 thread(s)")
    words = " ".join(stdout.split())
    assert f"CPU: {record['machine']['cpu']}" in words
    assert "BLAS: SciPy's (fastrnn's kernels) openblas" in words
    assert "Limit: the shape's matrix products alone" in words
    assert "Noise: the process ran" in words
    assert "CPU time / wall time while timing" in words


def test_json_records_settings_machine_libraries_and_threads(quick_run):
    _, record, _ = quick_run
    assert record["schema"] == run.SCHEMA
    settings = record["settings"]
    assert settings["threads"] == 1 and settings["repeats"] == 1
    assert settings["sections"] == ["throughput", "ragged", "latency"]
    assert settings["cells"] == ["rnn", "lstm", "gru"]
    assert settings["engines"][0] == "fastrnn" and "fastrnn-numpy" not in settings["engines"]
    assert record["machine"]["cpu"] and record["machine"]["logical_cores"] >= 1
    if hasattr(os, "sched_setaffinity"):
        assert len(record["machine"]["allowed_cpus"]) == 1            # the run was pinned
    kernels_blas = [lib for lib in record["blas"]["libraries"] if lib["bundled_by"] == "scipy"]
    assert kernels_blas and kernels_blas[0]["num_threads"] == 1 and kernels_blas[0]["coretype"]
    assert all(lib["num_threads"] == 1 for lib in record["blas"]["libraries"])
    fastrnn_entry = record["throughput"][0]["engines"]["fastrnn"]
    assert fastrnn_entry["forward"]["threads_reported"] == [1]
    assert record["thread_warnings"] == []


def test_json_ratios_are_the_ratios_of_the_medians(quick_run):
    _, record, _ = quick_run
    for result in record["throughput"] + record["ragged"]:
        engines = result["engines"]
        assert "fastrnn" in engines and "limit calls" not in engines   # subtracted, not shown
        for name, entry in engines.items():
            for mode, m in entry.items():
                net = float(np.median(m["samples_ms"])) - m.get("calls_ms", 0.0)
                assert m["median_ms"] == pytest.approx(net)
                if name != "fastrnn":
                    assert m["rel"] == pytest.approx(
                        m["median_ms"] / engines["fastrnn"][mode]["median_ms"])
                if name != "limit" and mode in engines.get("limit", {}):
                    assert m["share_of_limit"] == pytest.approx(
                        engines["limit"][mode]["median_ms"] / m["median_ms"])
    for result in record["latency"]:
        assert [result["shape"]["T"], result["shape"]["B"]] in ([1, 1], [16, 1])
        if "torch" in result["engines"]:
            torch_ms = result["engines"]["torch"]["forward"]["median_ms"]
            fastrnn_ms = result["engines"]["fastrnn"]["forward"]["median_ms"]
            assert result["engines"]["fastrnn"]["forward"]["rel"] == \
                pytest.approx(fastrnn_ms / torch_ms)


def test_csv_has_one_row_per_engine_shape_and_mode(quick_run):
    _, record, paths = quick_run
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert list(rows[0]) == list(report.CSV_FIELDS)
    expected = [(section, r["shape"]["label"], r["shape"]["cell"], r["shape"]["lengths_label"],
                 name, mode, m["median_ms"])
                for section in run.SECTIONS for r in record[section]
                for name, entry in r["engines"].items() for mode, m in entry.items()]
    assert [(row["section"], row["shape"], row["cell"], row["lengths"], row["engine"],
             row["mode"]) for row in rows] == [e[:6] for e in expected]
    assert [float(row["median_ms"]) for row in rows] == pytest.approx([e[6] for e in expected])
    assert {row["cell"] for row in rows} == {"rnn", "lstm", "gru"}
    assert {row["lengths"] for row in rows if row["section"] == "ragged"} == {"2..9", "all 5"}


def test_markdown_tables_are_well_formed(quick_run):
    _, record, paths = quick_run
    tables, previous = [], ""
    for line in paths["markdown"].read_text().splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    assert len(tables) == 3                                   # throughput, ragged, latency
    for table in tables:
        widths = {line.count("|") - line.count("\\|") for line in table}
        assert len(widths) == 1
        assert set(table[1]) <= set("|-:")
    for table, section in zip(tables, ("throughput", "ragged")):
        assert len(table) - 2 == sum(len(r["engines"]) for r in record[section])
    assert tables[1][0].startswith("| shape T,B,I,H,L,dir | lengths | cell | engine |")
    assert tables[2][0].startswith("| engine |")


@pytest.mark.parametrize("fmt, parse", [("json", json.loads),
                                        ("csv", lambda t: list(csv.DictReader(io.StringIO(t))))])
def test_stdout_in_another_format_parses(fmt, parse):
    done = run_bench(QUICK + ["--engines", "fastrnn", "--sections", "throughput",
                              "--format", fmt])
    assert done.returncode == 0, done.stderr
    parsed = parse(done.stdout)
    assert parsed


def test_a_run_without_torch_says_torch_was_not_run(tmp_path):
    path = tmp_path / "no_torch.json"
    done = run_bench(QUICK + ["--engines", "fastrnn", "torch", "fastrnn.torch",
                              "--json", str(path)], without_torch=True)
    assert done.returncode == 0, done.stderr
    assert "Not run: torch: torch is not installed" in done.stdout
    record = json.loads(path.read_text())
    assert record["settings"]["engines"] == ["fastrnn"]
    assert set(record["unavailable"]) == {"torch", "fastrnn.torch"}
    # the limit of a toy shape may be dropped (too close to its calls' own cost on a busy machine)
    assert all(set(r["engines"]) - {"limit"} == {"fastrnn"} for r in record["throughput"])
    assert all(set(r["engines"]) == {"fastrnn"} for r in record["ragged"])


def test_custom_shapes_replace_the_set(tmp_path):
    path = tmp_path / "custom.json"
    done = run_bench(QUICK + ["--engines", "fastrnn", "--sections", "throughput",
                              "--shape", "3,2,5,6", "--shape", "4,1,3,5,2,bi", "-o", str(path)])
    assert done.returncode == 0, done.stderr
    record = json.loads(path.read_text())
    assert record["settings"]["shape_set"] == "custom"
    assert "latency" not in record
    assert [r["shape"]["label"] for r in record["throughput"]] == ["3,2,5,6,1,uni",
                                                                    "4,1,3,5,2,bi"]


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    done = run_bench(QUICK + ["--engines", "fastrnn", "fastrnn-numpy", "--plot", str(path)])
    assert done.returncode == 0, done.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--engines", "fastrnn,tensorflow"], "unknown engine(s) tensorflow"),
    (["--sections", "speed"], "unknown section(s) speed"),
    (["--cells", "rnn,elman"], "unknown cell(s) elman; expected some of rnn, lstm, gru"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--clock", "cpu", "--threads", "2"], "--clock cpu adds up the time of all threads"),
    (["--shapes", "huge"], "invalid choice: 'huge'"),
    (["--settle", "-1"], "--settle must be >= 0, got -1.0"),
    (["--format", "xml"], "invalid choice: 'xml'"),
    (["-o", "run.xml"], "cannot tell the format of 'run.xml'"),
    (["--shape", "10,2,8"], "expected T,B,I,H[,layers[,bi|uni]], got '10,2,8'"),
    (["--shape", "10,2,8,0"], "sizes must be >= 1, got '10,2,8,0'"),
])
def test_bad_options_are_one_line_and_exit_2(args, message):
    done = run_bench(args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert done.stderr.startswith("python -m fastrnn bench: error: ")


# ----------------------------------------------------------------------------- shapes, limit
def test_products_of_a_stacked_bidirectional_shape():
    shape = shapes.Shape(3, 2, 5, 4, layers=2, bidirectional=True)
    forward = [(p.kind, p.m, p.k, p.n, p.count) for p in shapes.forward_products(shape)]
    layer0 = [("input projection", 6, 5, 4, 1), ("step", 2, 4, 4, 3)] * 2
    layer1 = [("input projection", 6, 8, 4, 1), ("step", 2, 4, 4, 3)] * 2
    assert forward == layer0 + layer1
    backward = [(p.kind, p.m, p.k, p.n, p.count) for p in shapes.backward_products(shape)]
    assert backward[:4] == [("step gradient", 2, 4, 4, 3), ("dX", 6, 4, 5, 1),
                            ("dW_ih", 4, 6, 5, 1), ("dW_hh", 4, 6, 4, 1)]
    assert backward[8:10] == [("step gradient", 2, 4, 4, 3), ("dX", 6, 4, 8, 1)]
    # FLOPs: 2*T*B*H*(I_l + H) per layer-direction forward; backward twice that
    assert shapes.flops(shape, "forward") == 2 * (2 * 6 * 4 * (5 + 4)) + 2 * (2 * 6 * 4 * (8 + 4))
    assert shapes.flops(shape, "forward_backward") == 3 * shapes.flops(shape, "forward")


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3)])
def test_a_gated_cells_products_are_g_times_wider_on_the_gate_side(cell, gates):
    elman = shapes.Shape(3, 2, 5, 4, layers=2, bidirectional=True)
    gated = dataclasses.replace(elman, cell=cell)
    widen = {"input projection": "n", "step": "n", "step gradient": "k", "dX": "k",
             "dW_ih": "m", "dW_hh": "m"}
    for mine, theirs in zip(shapes.products(gated, "forward_backward"),
                            shapes.products(elman, "forward_backward")):
        axis = widen[mine.kind]
        assert mine == dataclasses.replace(theirs, **{axis: gates * getattr(theirs, axis)})
    for mode in timing.MODES:
        assert shapes.flops(gated, mode) == gates * shapes.flops(elman, mode)


def test_a_ragged_shape_has_shuffled_spread_lengths_and_its_tokens_flops():
    shape = shapes.Shape(200, 64, 256, 256, shortest=10)
    lengths = shape.lengths()
    assert sorted(lengths) == list(np.linspace(10, 200, 64).round().astype(int))
    assert list(lengths) != sorted(lengths)                       # the caller's order
    assert np.array_equal(lengths, shape.lengths())               # seeded
    assert shape.tokens == lengths.sum() and shape.lengths_label == "10..200"
    padded = dataclasses.replace(shape, shortest=0)
    assert padded.lengths() is None and padded.tokens == 200 * 64 and padded.lengths_label == ""
    assert shapes.flops(shape, "forward") == \
        shapes.flops(padded, "forward") * lengths.sum() // (200 * 64)
    equal = dataclasses.replace(shape, T=5, shortest=5, cell="gru")
    assert list(equal.lengths()) == [5] * 64 and equal.key == "gru 5,64,256,256,1,uni all 5"


def _op(matrix, transposed):
    return np.swapaxes(matrix, -1, -2) if transposed else matrix


@pytest.mark.parametrize("product", [
    shapes.Product("input projection", 6, 5, 4, trans_b=True),
    shapes.Product("step", 2, 4, 4, count=3),
    shapes.Product("dX", 6, 4, 5),
    shapes.Product("dW_ih", 4, 6, 5, trans_a=True),
    shapes.Product("step", 1, 3, 3, count=4, trans_b=True),
])
def test_each_limit_product_computes_op_a_times_op_b(product):
    call = limit.ProductCall(product, np.random.default_rng(0))
    call.run()
    a, b = call.a.astype(np.float64), call.b.astype(np.float64)
    want = np.matmul(_op(a, product.trans_a), _op(b, product.trans_b))
    assert call.out.shape == ((product.count,) if product.count > 1 else ()) + \
        (product.m, product.n)
    np.testing.assert_allclose(call.out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", shapes.CELLS)
def test_limit_runner_runs_exactly_the_shapes_products(monkeypatch, cell):
    ran = []
    monkeypatch.setattr(limit.ProductCall, "_one_sgemm", lambda self: ran.append(self.product))
    monkeypatch.setattr(limit.ProductCall, "_stacked_matmul",
                        lambda self: ran.append(self.product))
    shape = shapes.Shape(3, 2, 5, 4, layers=2, bidirectional=True, cell=cell)
    runner = limit.make_runner(shape)
    runner.forward()
    assert ran == shapes.forward_products(shape)
    ran.clear()
    runner.forward_backward()
    assert ran == shapes.products(shape, "forward_backward")


def test_shape_sets_hold_the_design_shapes():
    labels = [s.label for s in shapes.SHAPE_SETS["small"]]
    assert labels == ["672,1,32,32,1,uni", "96,1,64,64,1,uni", "100,16,64,64,1,uni",
                      "100,32,256,256,1,uni", "100,64,512,512,1,uni", "50,32,128,256,2,bi"]
    deepbench = {(s.T, s.B, s.I, s.H) for s in shapes.SHAPE_SETS["deepbench"]}
    assert deepbench == {(50, b, h, h) for h in (1760, 2048, 2560) for b in (16, 32, 64, 128)}
    assert [(s.T, s.B, s.I, s.H) for s in shapes.LATENCY] == [(1, 1, 64, 64), (16, 1, 64, 64)]


# ----------------------------------------------------------------------------- bookkeeping
def _samples(*seconds):
    return [timing.Sample(s, 1.0, 1) for s in seconds]


def test_summarise_takes_medians_and_divides_them():
    shape = shapes.Shape(4, 2, 3, 5)
    samples = {("fastrnn", "forward"): _samples(2.0, 1.0, 9.0),      # median 2
               ("torch", "forward"): _samples(6.0, 5.0, 7.0),        # median 6
               ("limit", "forward"): _samples(1.0, 1.0, 1.0)}        # median 1
    calls = {key: 10 for key in samples}
    result = run.summarise(shape, samples, calls, run.throughput_reference, ("forward",))
    assert result["fastrnn"]["forward"]["median_ms"] == 2000.0
    assert "rel" not in result["fastrnn"]["forward"]
    assert result["torch"]["forward"]["rel"] == 3.0
    assert result["fastrnn"]["forward"]["share_of_limit"] == 0.5
    assert result["torch"]["forward"]["share_of_limit"] == pytest.approx(1 / 6)
    assert result["limit"]["forward"]["rel"] == 0.5
    assert "share_of_limit" not in result["limit"]["forward"]
    assert result["fastrnn"]["forward"]["gflops"] == pytest.approx(
        shapes.flops(shape, "forward") / 2.0 / 1e9)


@pytest.mark.parametrize("limit_s, net_ms, share", [
    (10.0, 8000.0, 2.0),         # 10 s of products and calls, 2 s of calls: 8 s of products
    (2.01, None, None),          # within 2% of the calls' cost: no limit, no share
])
def test_the_limit_is_net_of_its_calls_cost(limit_s, net_ms, share):
    samples = {("fastrnn", "forward"): _samples(4.0), ("limit", "forward"): _samples(limit_s),
               ("limit calls", "forward"): _samples(2.0)}
    result = run.summarise(shapes.Shape(4, 2, 3, 5), samples, dict.fromkeys(samples, 1),
                           run.throughput_reference, ("forward",))
    assert "limit calls" not in result
    assert result.get("limit", {}).get("forward", {}).get("median_ms") == net_ms
    assert result["fastrnn"]["forward"].get("share_of_limit") == share
    if net_ms is not None:
        assert result["limit"]["forward"]["calls_ms"] == 2000.0


def test_noise_counts_the_samples_another_process_cut_into():
    cut = [timing.Sample(1.0, share, 1) for share in (1.0, 0.5, 0.99, 0.8)]
    steady = [timing.Sample(seconds, 1.0, 1) for seconds in (1.0, 1.1, 0.8)]
    result = run.noise([cut, steady], threads=1)
    assert result["busy_samples"] == pytest.approx(2 / 7)
    assert result["median_cpu_share"] == 1.0
    assert result["median_spread"] == pytest.approx(0.05)     # medians 0 and 0.1


def test_thread_warnings_name_the_engine_that_ran_too_many_threads():
    entry = lambda cpu, threads: {"forward": {"cpu_per_wall": cpu, "threads_reported": threads}}
    record = {"settings": {"threads": 1},
              "throughput": [{"shape": {"key": "rnn 8,2,8,8,1,uni"},
                              "engines": {"fastrnn": entry(1.0, [1]), "jax": entry(1.9, []),
                                          "torch": entry(1.0, [2])}}]}
    warnings = run.thread_warnings(record)
    assert len(warnings) == 2
    assert warnings[0].startswith("jax used 1.90 CPUs per wall second")
    assert warnings[0].endswith("pin the bench to 1 CPU(s) with taskset")
    assert warnings[1].startswith("torch reported [2] threads")


def test_a_sample_times_the_asked_number_of_calls():
    counter = []
    sample = timing.Clock("wall").sample(lambda: counter.append(1), 7, contextlib.nullcontext,
                                         lambda: 3)
    assert len(counter) == 7 and sample.threads == 3 and sample.seconds >= 0


# ----------------------------------------------------------------------------- engines agree
UNI, BI = shapes.Shape(7, 3, 5, 6), shapes.Shape(5, 2, 4, 3, layers=2, bidirectional=True)
RAGGED = shapes.Shape(6, 4, 3, 5, shortest=2)
# Elman on both layouts and ragged; each gated cell on one layout and ragged (the tiny CLI run
# checks the other layouts of every cell through the same check).
CASES = [UNI, BI, RAGGED] + shapes.with_cells([UNI], ["lstm"]) \
    + shapes.with_cells([BI], ["gru"]) + shapes.with_cells([RAGGED], ["lstm", "gru"])
PEERS = {"fastrnn": None, "fastrnn-numpy": None, "fastrnn-padded": None, "torch": "torch",
         "fastrnn.torch": "torch", "onnxruntime": "onnxruntime", "jax": "jax"}


def expected_skip(engine, shape):
    """Why an engine must refuse a problem, or None when it must solve it."""
    if engine == "fastrnn-padded" and not shape.shortest:
        return "times ragged batches only"
    if engine == "fastrnn.torch" and shape.cell != "rnn":
        return f"fastrnn.torch has no {shape.cell.upper()}"
    if engine == "jax" and shape.shortest:
        return "lax.scan has no packed sequences"
    return None


@pytest.fixture(scope="module", params=CASES, ids=[s.key for s in CASES])
def problem(request):
    problem = agreement.make_problem(request.param)
    return problem, agreement.expected_results(problem)


@pytest.mark.parametrize("engine", list(PEERS))
def test_engine_agrees_with_fastrnn_or_says_why_not(engine, problem):
    if PEERS[engine]:
        pytest.importorskip(PEERS[engine])
    if engine == "onnxruntime":
        pytest.importorskip("onnx")
    problem, expected = problem
    skip = expected_skip(engine, problem.shape)
    if skip:
        with pytest.raises(Skip, match=skip):
            BY_NAME[engine].make_runner(problem)
        return
    results = BY_NAME[engine].make_runner(problem).results()
    states = {"h_n", "c_n"} if problem.shape.cell == "lstm" else {"h_n"}
    must = {"output"} | (states if engine != "fastrnn-padded" else set()) \
        | ({"grad_input", "grad_weight_hh_l0"} if engine != "onnxruntime" else set())
    assert must <= set(results)
    name, error = agreement.worst_error(results, expected)
    assert error < 1e-4, f"{engine}: {name} off by {error}"


def test_a_ragged_problem_is_zero_past_each_length():
    problem = agreement.make_problem(RAGGED)
    expected = agreement.expected_results(problem)
    padding = agreement.past_lengths(problem.lengths, RAGGED.T)
    assert padding.any() and not padding.all()
    for name in ("output", "grad_input"):
        assert not np.any(np.where(padding, expected[name], 0))
    assert not np.any(np.where(padding, problem.x, 0))


def test_a_wrong_engine_is_refused_with_the_array_it_got_wrong(problem):
    problem, expected = problem
    results = BY_NAME["fastrnn"].make_runner(problem).results()
    results["h_n"] = results["h_n"] * 1.01
    with pytest.raises(Skip, match="disagrees with fastrnn: h_n is off by 1.0e-02"):
        agreement.check_agreement(results, expected)


def test_the_step_runner_is_checked_like_any_engine(monkeypatch):
    import fastrnn
    problem = agreement.make_problem(shapes.LATENCY[1])
    expected = agreement.expected_results(problem)
    step_by_call = lambda layer, x_t, h: layer(x_t[None], h)[1]     # what step must return
    monkeypatch.setattr(fastrnn.RNN, "step", step_by_call, raising=False)
    agreement.check_agreement(BY_NAME["fastrnn.step"].make_runner(problem).results(), expected)
    monkeypatch.setattr(fastrnn.RNN, "step", lambda layer, x_t, h: h, raising=False)
    with pytest.raises(Skip, match="h_n"):
        agreement.check_agreement(BY_NAME["fastrnn.step"].make_runner(problem).results(),
                                  expected)
