"""One bench run: pick the engines, give them their threads, check, time, summarise.

Why in this order: threads are set before any engine computes (JAX's must even be set before
JAX starts, and fastrnn's BLAS must be loaded before its limit is set); every engine is checked
against fastrnn on each shape before it is timed; then all of a shape's engines are timed in
one alternating measurement, the limit among them. The result is one JSON-ready dict, which
every output format is written from. Sections: throughput (the shapes, once per cell, with
the limit), ragged (a ragged batch with lengths against the same padded, once per cell; no
limit) and latency (the Elman RNN's per-call cost).
"""
import datetime
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import agreement, limit, machine, shapes, timing
from .engines import BY_NAME, ENGINES, Skip, baseline_name

SECTIONS = ("throughput", "ragged", "latency")
SCHEMA = "fastrnn-bench/3"
LIMIT = "limit"
LIMIT_CALLS = "limit calls"      # the limit's calls on 1 x 1 operands, subtracted from it


@dataclass
class Settings:
    shapes: list
    shape_set: str = "small"
    cells: tuple = ("rnn",)
    engines: tuple = ()            # names; empty: every default engine
    sections: tuple = SECTIONS
    threads: int = 1
    repeats: int = 5
    clock: str = "wall"
    min_sample_s: float = 0.05
    settle_s: float = 0.0
    progress: bool = True


def select_engines(names):
    """(engines that can run here, {name: why not} for the others), in the registry's order."""
    wanted = [e for e in ENGINES if (e.name in names if names else e.default)]
    reasons = {engine.name: engine.unavailable() for engine in wanted}
    runnable = [e for e in wanted if reasons[e.name] is None]
    return runnable, {name: reason for name, reason in reasons.items() if reason is not None}


def prepare_threads(engines, threads):
    """fastrnn.set_num_threads first: it loads the kernels (which choose the OpenBLAS kernels
    of SciPy's BLAS before it loads; an earlier ``import scipy.linalg`` would take that choice
    away) and sets every BLAS. Then each engine family gets ``threads`` threads, and
    fastrnn.set_num_threads runs again, so a BLAS that a peer's import loaded is limited too.
    Returns {engine: note} where one applies."""
    import fastrnn
    fastrnn.set_num_threads(threads)
    notes = {}
    for engine in engines:
        note = engine.prepare(threads)
        if note:
            notes[engine.name] = note
    fastrnn.set_num_threads(threads)
    return notes


def checked_runners(problem, engines, section):
    """({name: Runner} of the engines that agree with fastrnn on this problem, {name: why not})."""
    expected = agreement.expected_results(problem)
    runners, skipped = {}, {}
    for engine in engines:
        try:
            runner = engine.make_runner(problem)
            agreement.check_agreement(runner.results(), expected)
            runners[engine.name] = runner
        except Skip as exc:
            skipped[engine.name] = str(exc)
        except Exception as exc:       # a peer failing on one shape must not end the run
            skipped[engine.name] = f"failed: {type(exc).__name__}: {exc}"
    if section == "throughput":
        runners[LIMIT] = limit.make_runner(problem.shape)
        runners[LIMIT_CALLS] = limit.make_overhead_runner(problem.shape)
    return runners, skipped


def _median(values):
    return float(np.median(values))


def net_limit(medians, modes):
    """Takes the limit's calls' own cost (LIMIT_CALLS) out of the limit's medians, in place;
    returns {mode: that cost}. A limit within 2% of its calls' cost cannot be told from them
    and is dropped."""
    costs = {mode: medians.pop((LIMIT_CALLS, mode)) for mode in modes
             if (LIMIT_CALLS, mode) in medians}
    for mode, cost in costs.items():
        if (LIMIT, mode) in medians:
            net = medians[(LIMIT, mode)] - cost
            if net > 0.02 * medians[(LIMIT, mode)]:
                medians[(LIMIT, mode)] = net
            else:
                del medians[(LIMIT, mode)]
    return costs


def summarise(shape, samples, calls, reference, modes):
    """Per engine and mode: median, every sample, calls per sample, CPU/wall, the threads the
    library reported; ``rel`` = time / the reference engine's; ``share_of_limit`` = the
    limit's time / this time (CPU engines); GFLOP/s of the shape's products. The limit's
    median is net of its calls' cost (``calls_ms``)."""
    medians = {key: _median([s.seconds for s in values]) for key, values in samples.items()}
    limit_calls = net_limit(medians, modes)
    result = {}
    for name in dict.fromkeys(name for name, _ in medians):
        entry = {}
        for mode in modes:
            if (name, mode) not in medians:
                continue
            mine = samples[(name, mode)]
            entry[mode] = {"median_ms": medians[(name, mode)] * 1e3,
                           "samples_ms": [s.seconds * 1e3 for s in mine],
                           "calls_per_sample": calls[(name, mode)],
                           "cpu_per_wall": _median([s.cpu_per_wall for s in mine]),
                           "threads_reported": sorted({s.threads for s in mine
                                                       if s.threads is not None}),
                           "gflops": shapes.flops(shape, mode) / medians[(name, mode)] / 1e9}
            if name == LIMIT and mode in limit_calls:
                entry[mode]["calls_ms"] = limit_calls[mode] * 1e3
            ref = reference(name)
            if ref and (ref, mode) in medians and ref != name:
                entry[mode]["rel"] = medians[(name, mode)] / medians[(ref, mode)]
            if name != LIMIT and BY_NAME[name].device == "cpu" and (LIMIT, mode) in medians:
                entry[mode]["share_of_limit"] = medians[(LIMIT, mode)] / medians[(name, mode)]
        if entry:
            result[name] = entry
    return result


def throughput_reference(name):
    return baseline_name(BY_NAME[name]) if name in BY_NAME else "fastrnn"


def latency_reference(name):
    return "torch" if name in BY_NAME and BY_NAME[name].device == "cpu" else "torch-cuda"


def section_shapes(section, settings):
    """The shapes a section times: throughput and ragged once per cell; latency: Elman."""
    if section == "latency":
        return shapes.LATENCY
    if section == "ragged":
        return shapes.with_cells(shapes.ragged_shapes(settings.shape_set), settings.cells)
    return shapes.with_cells(settings.shapes, settings.cells)


def shape_record(shape):
    """The shape as the report keeps it: its fields, label, key and its lengths if any."""
    lengths = shape.lengths()
    return {**asdict(shape), "label": shape.label, "key": shape.key,
            "lengths_label": shape.lengths_label,
            "lengths": None if lengths is None else lengths.tolist()}


def run_section(section, shape_list, engines, settings, clock, progress):
    """[per-shape result], {engine: {shape key: why it was left out}} and every sample."""
    modes = ("forward",) if section == "latency" else timing.MODES
    reference = latency_reference if section == "latency" else throughput_reference
    engines = [e for e in engines if section in e.sections]
    results, skipped, all_samples = [], {}, []
    for shape in shape_list:
        progress.set_description(f"{section} {shape.key}")
        runners, left_out = checked_runners(agreement.make_problem(shape), engines, section)
        for name, reason in left_out.items():
            skipped.setdefault(name, {})[shape.key] = reason
            progress.update(settings.repeats)
        samples, calls = timing.measure(runners, modes, clock, settings.repeats,
                                        settings.min_sample_s, settings.settle_s,
                                        on_turn=lambda: progress.update(1))
        results.append({"shape": shape_record(shape),
                        "flops": {mode: shapes.flops(shape, mode) for mode in modes},
                        "engines": summarise(shape, samples, calls, reference, modes)})
        all_samples += samples.values()
    return results, skipped, all_samples


def noise(samples, threads):
    """How busy the machine was: the share of the wall time the process ran (CPU time / wall
    / threads, median over samples; 1.0 is a quiet machine), the share of samples in which it
    ran less than 90% of the time (with one thread: samples another process cut into), and
    the median spread of samples around their median. ``samples``: one list of Samples per
    engine, mode and shape."""
    shares = [s.cpu_per_wall / threads for values in samples for s in values]
    spreads = [_median(np.abs(np.array([s.seconds for s in values])
                              / _median([s.seconds for s in values]) - 1)) for values in samples]
    return {"median_cpu_share": _median(shares) if shares else None,
            "busy_samples": float(np.mean(np.array(shares) < 0.9)) if shares else None,
            "median_spread": _median(spreads) if spreads else None}


def thread_warnings(report):
    """One line per engine that reported another thread count than asked, or whose samples
    used clearly more CPU than that many threads can. (Seen: JAX on toy shapes with one
    thread, unpinned, used 1.3 CPUs: its runtime thread works while the caller's thread
    returns; pinned to one core, as the protocol asks, it cannot.)"""
    threads, warnings = report["settings"]["threads"], []
    for section in SECTIONS:
        for result in report.get(section, []):
            for name, entry in result["engines"].items():
                for mode, m in entry.items():
                    if m["threads_reported"] and m["threads_reported"] != [threads]:
                        warnings.append(f"{name} reported {m['threads_reported']} threads "
                                        f"({section} {result['shape']['key']} {mode})")
                    if m["cpu_per_wall"] > 1.15 * threads + 0.05:
                        warnings.append(f"{name} used {m['cpu_per_wall']:.2f} CPUs per wall "
                                        f"second ({section} {result['shape']['key']} {mode}); "
                                        f"pin the bench to {threads} CPU(s) with taskset")
    return warnings


def run(settings, progress):
    """Measures everything ``settings`` ask for; returns the report (a JSON-ready dict)."""
    started = time.perf_counter()
    engines, unavailable = select_engines(settings.engines)
    thread_notes = prepare_threads(engines, settings.threads)
    clock = timing.Clock(settings.clock)
    report = {"schema": SCHEMA, "command": sys.argv,
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "machine": machine.machine_description(),
              "settings": {"shape_set": settings.shape_set, "cells": list(settings.cells),
                           "sections": list(settings.sections),
                           "engines": [e.name for e in engines], "threads": settings.threads,
                           "repeats": settings.repeats, "clock": settings.clock,
                           "dtype": "float32", "min_sample_s": settings.min_sample_s,
                           "settle_s": settings.settle_s},
              "limit_how": limit.HOW, "unavailable": unavailable, "thread_notes": thread_notes,
              "skipped": {}}
    all_samples = []
    for section in settings.sections:
        report[section], skipped, samples = run_section(
            section, section_shapes(section, settings), engines, settings, clock, progress)
        all_samples += samples
        for name, reasons in skipped.items():
            report["skipped"].setdefault(name, {}).update(reasons)
    report["noise"] = noise(all_samples, settings.threads)
    report["libraries"] = machine.library_versions()
    report["blas"] = machine.blas_description()
    report["machine"]["loadavg_end"] = machine.load_average()
    report["thread_warnings"] = thread_warnings(report)
    report["duration_s"] = time.perf_counter() - started
    return report
