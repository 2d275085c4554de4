"""The report in four formats: text (the terminal, <= 100 columns), markdown, csv and json.

Why one table model: each section is built once as (columns, rows of cells) and rendered by
text or markdown, so the two cannot drift; csv is one row per engine, shape, cell and mode
with every number; json is the whole record (every sample, the machine, the libraries, the
BLAS). The throughput and ragged tables are one builder: the ragged one adds the lengths and
has no limit.
"""
import csv
import io
import json
import textwrap

import numpy as np

from .engines import BY_NAME
from .run import SECTIONS

WIDTH = 100
FORMATS = ("text", "csv", "json", "markdown")
SUFFIXES = {".txt": "text", ".csv": "csv", ".json": "json", ".md": "markdown"}


# ----------------------------------------------------------------------------- cells
def _time(value):
    return "-" if value is None else (f"{value:.4g}" if value < 1e4 else f"{value:.0f}")


def _ratio(value):
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def _percent(value):
    return "-" if value is None else f"{100 * value:.0f}%"


# ----------------------------------------------------------------------------- header
def _blas_line(library):
    owner = {"scipy": "SciPy's (fastrnn's kernels)", "numpy": "NumPy's"}.get(
        library["bundled_by"], library["filepath"])
    return (f"{owner} {library['internal_api']} {library['version']} {library['coretype']} "
            f"kernels, {library['num_threads']} thread(s)")


def header_lines(report):
    s, m, libs = report["settings"], report["machine"], report["libraries"]
    kernels, torch = report["blas"]["fastrnn_kernels"], report["blas"]["torch"]
    lines = [f"fastrnn {libs['fastrnn']} bench: {s['threads']} thread(s), {s['dtype']}, median "
             f"of {s['repeats']} samples ({s['clock']} clock), engines alternating in one "
             f"process",
             f"CPU: {m['cpu']}, {m['logical_cores']} logical cores, this process allowed on "
             f"CPUs {m['allowed_cpus']}; load average {m['loadavg_start']} at start, "
             f"{m['loadavg_end']} at end",
             "Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if k != "fastrnn")]
    lines += ["BLAS: " + _blas_line(library) for library in report["blas"]["libraries"]]
    if kernels:
        lines.append(f"fastrnn's step kernel: {kernels.get('step_kernel')}; kernels' OpenBLAS "
                     f"coretype: {kernels.get('coretype_choice')}")
    if torch:
        lines.append(f"torch: {torch['blas']}, CPU capability {torch['cpu_capability']}, "
                     f"{torch['num_threads']} thread(s)")
    if report["blas"]["xla_flags"]:
        lines.append(f"XLA_FLAGS={report['blas']['xla_flags']}")
    lines.append("Engines: " + ", ".join(f"{name} ({BY_NAME[name].note})"
                                         for name in s["engines"]))
    lines += [f"Not run: {name}: {reason}" for name, reason in report["unavailable"].items()]
    lines += [f"Threads of {name}: {note}" for name, note in report["thread_notes"].items()]
    lines.append("Limit: " + report["limit_how"])
    return lines


def cpu_per_wall(report):
    """{engine: median over its samples' medians of CPU time / wall time} (about the number
    of threads that really worked)."""
    values = {}
    for section in SECTIONS:
        for result in report.get(section, []):
            for name, entry in result["engines"].items():
                values.setdefault(name, []).extend(m["cpu_per_wall"] for m in entry.values())
    return {name: float(np.median(v)) for name, v in values.items()}


def _shape_list(keys):
    return ", ".join(keys) if len(keys) <= 3 else f"{len(keys)} shapes ({keys[0]}, ...)"


def skipped_lines(report):
    """One line per engine and reason it was left out, naming the shapes."""
    lines = []
    for name, reasons in report["skipped"].items():
        shapes_by_reason = {}
        for key, reason in reasons.items():
            shapes_by_reason.setdefault(reason, []).append(key)
        lines += [f"Not timed: {name} on {_shape_list(keys)}: {reason}"
                  for reason, keys in shapes_by_reason.items()]
    return lines


def footer_lines(report):
    noise, threads = report["noise"], report["settings"]["threads"]
    lines = skipped_lines(report)
    if threads == 1 and noise["median_cpu_share"] is not None:
        lines.append(f"Noise: the process ran {100 * noise['median_cpu_share']:.0f}% of the wall "
                     f"time (median over samples); {100 * noise['busy_samples']:.0f}% of the "
                     f"samples ran less than 90% of it (another process took the CPU: with "
                     f"--clock wall their ratios are noisy, --clock cpu is steadier); samples "
                     f"spread {100 * noise['median_spread']:.1f}% around their median.")
    elif noise["median_spread"] is not None:
        lines.append(f"Noise: samples spread {100 * noise['median_spread']:.1f}% around their "
                     f"median.")
    lines.append("CPU time / wall time while timing (about the threads really used): "
                 + ", ".join(f"{name} {value:.2f}" for name, value in cpu_per_wall(report).items()))
    lines += [f"WARNING threads: {w}" for w in report["thread_warnings"]] or [
        f"Threads: every engine reported {threads} thread(s) where it can tell, and none used "
        f"more CPU than that many threads can."]
    lines.append(f"Took {report['duration_s']:.0f} s. Take single-thread figures pinned to "
                 f"one core: taskset -c 0 python -m fastrnn bench")
    return lines


# ----------------------------------------------------------------------------- tables
THROUGHPUT_LEGEND = ("Throughput, ms per call. rel = time / fastrnn's (above 1x: slower than "
                     "fastrnn). %lim = the limit's time / this time (100%: as fast as the "
                     "shape's matrix products alone, 4H/3H wide for LSTM/GRU; '-' where they "
                     "are too small to time).")
RAGGED_LEGEND = ("Ragged batches, ms per call, forward and forward + backward. fastrnn: "
                 "lengths=, only each sequence's own steps; fastrnn-padded: the same batch "
                 "padded to its longest sequence, no lengths; torch: a PackedSequence (packing "
                 "and unpacking timed); onnxruntime: sequence_lens. rel = time / fastrnn's. "
                 "On the 'all T' row every length is T: fastrnn-padded's rel below 1x is what "
                 "giving lengths costs.")
LATENCY_LEGEND = ("Latency, us per call, B=1, I=H=64, no grad. vs torch = time / torch.nn.RNN's."
                  " fastrnn.step at T=16: 16 calls of step, as a generation loop makes them.")


def _mode_cells(name, entry, mode, with_limit):
    if mode not in entry:
        cells = ["fwd only" if name in BY_NAME else "-", "", ""]
    else:
        m = entry[mode]
        cells = [_time(m["median_ms"]), _ratio(m.get("rel")), _percent(m.get("share_of_limit"))]
    return cells if with_limit else cells[:2]


def _blank_repeats(block, previous):
    """The block's values, blank where it and every value left of it repeat the row above."""
    cells, changed = [], False
    for value, old in zip(block, previous):
        changed = changed or value != old
        cells.append(value if changed else "")
    return cells


def engine_table(results, with_limit=True):
    """One row per shape, cell and engine: forward and forward + backward ms, rel (and %lim);
    the ragged table (``with_limit=False``) names the lengths after the shape."""
    columns = [("shape T,B,I,H,L,dir", "<")] + [("lengths", "<")] * (not with_limit) \
        + [("cell", "<"), ("engine", "<")]
    for mode in ("fwd", "f+b"):
        columns += [(f"{mode} ms", ">"), ("rel", ">")] + [("%lim", ">")] * with_limit
    rows, previous = [], [None] * 3
    for result in results:
        shape = result["shape"]
        block = [shape["label"]] + [shape["lengths_label"]] * (not with_limit) + [shape["cell"]]
        for name, entry in result["engines"].items():
            rows.append(_blank_repeats(block, previous) + [name]
                        + _mode_cells(name, entry, "forward", with_limit)
                        + _mode_cells(name, entry, "forward_backward", with_limit))
            previous = block
    return columns, rows


def throughput_table(report):
    return engine_table(report["throughput"])


def ragged_table(report):
    return engine_table(report["ragged"], with_limit=False)


def latency_table(report):
    columns = [("engine", "<")]
    for result in report["latency"]:
        columns += [(f"T={result['shape']['T']} us", ">"), ("vs torch", ">")]
    engines = list(dict.fromkeys(n for r in report["latency"] for n in r["engines"]))
    rows = []
    for name in engines:
        row = [name]
        for result in report["latency"]:
            m = result["engines"].get(name, {}).get("forward")
            row += ["-", "-"] if m is None else [_time(m["median_ms"] * 1e3), _ratio(m.get("rel"))]
        rows.append(row)
    return columns, rows


def render_text(columns, rows):
    widths = [max(len(title), *(len(row[i]) for row in rows)) if rows else len(title)
              for i, (title, _) in enumerate(columns)]
    line = lambda cells: "  ".join(f"{cell:{align}{width}}" for cell, (_, align), width
                                   in zip(cells, columns, widths)).rstrip()
    return [line([title for title, _ in columns])] + [line(row) for row in rows]


def render_markdown(columns, rows):
    escape = lambda cell: cell.replace("|", "\\|") or " "
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "|".join("---" if align == "<" else "--:" for _, align in columns) + "|"]
    return lines + ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]


def _sections(report):
    """[(legend, columns, rows)] for the sections the report holds."""
    sections = []
    if report.get("throughput"):
        sections.append((THROUGHPUT_LEGEND, *throughput_table(report)))
    if report.get("ragged"):
        sections.append((RAGGED_LEGEND, *ragged_table(report)))
    if report.get("latency"):
        sections.append((LATENCY_LEGEND, *latency_table(report)))
    return sections


def _wrap(text):
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


# ----------------------------------------------------------------------------- formats
def format_text(report):
    lines = [wrapped for line in header_lines(report) for wrapped in _wrap(line)]
    for legend, columns, rows in _sections(report):
        lines += [""] + _wrap(legend) + render_text(columns, rows)
    lines.append("")
    lines += [wrapped for line in footer_lines(report) for wrapped in _wrap(line)]
    return "\n".join(lines) + "\n"


def format_markdown(report):
    lines = ["# fastrnn bench", ""] + [f"- {line}" for line in header_lines(report)]
    for legend, columns, rows in _sections(report):
        lines += ["", legend, ""] + render_markdown(columns, rows)
    lines += [""] + [f"- {line}" for line in footer_lines(report)]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("section", "shape", "T", "B", "I", "H", "layers", "bidirectional", "cell",
              "lengths", "engine", "mode", "median_ms", "rel", "share_of_limit", "gflops",
              "cpu_per_wall", "calls_per_sample", "samples")


def format_csv(report):
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for section in SECTIONS:
        for result in report.get(section, []):
            shape = result["shape"]
            for name, entry in result["engines"].items():
                for mode, m in entry.items():
                    writer.writerow({"section": section, "shape": shape["label"],
                                     **{k: shape[k] for k in ("T", "B", "I", "H", "layers",
                                                               "bidirectional", "cell")},
                                     "lengths": shape["lengths_label"],
                                     "engine": name, "mode": mode, "median_ms": m["median_ms"],
                                     "rel": m.get("rel", ""),
                                     "share_of_limit": m.get("share_of_limit", ""),
                                     "gflops": m["gflops"], "cpu_per_wall": m["cpu_per_wall"],
                                     "calls_per_sample": m["calls_per_sample"],
                                     "samples": len(m["samples_ms"])})
    return out.getvalue()


def format_json(report):
    return json.dumps(report, indent=1) + "\n"


FORMATTERS = {"text": format_text, "csv": format_csv, "json": format_json,
              "markdown": format_markdown}


def format_report(report, fmt):
    return FORMATTERS[fmt](report)
