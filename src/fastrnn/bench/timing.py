"""Timing: samples of many calls, engines taking turns, and what each sample saw.

Why this way (design.md, "Performance protocol"): the machines are shared and noisy, so every
engine is measured in ONE process, the engines take turns within each repeat (the order
rotates, so a burst of load hits all of them alike), and the median of the repeats is kept.
A sample repeats a call until it lasts ``min_sample_s`` (a 2 us call is timed over thousands
of calls, so the clock's resolution and the loop's ~50 ns do not matter). Each sample also
records the process's CPU time over its wall time (about the number of threads that really
worked: more than ``--threads`` means an engine ran more threads than asked; well below 1 with
one thread means the process was descheduled) and the thread count the engine's library
reports, read inside the sample, right after its calls.
"""
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Optional

MODES = ("forward", "forward_backward")


@dataclass
class Sample:
    seconds: float               # per call, by the chosen clock
    cpu_per_wall: float          # process CPU time / wall time during the sample
    threads: Optional[int]       # what the engine's library said, inside the sample


class Clock:
    """Times by wall clock, or by this process's CPU time (``--clock cpu``: a descheduled
    process does not count; only meaningful with one thread)."""

    def __init__(self, kind="wall"):
        self.kind = kind

    def sample(self, call, calls, context, threads):
        with context():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            reported = threads()
        seconds = wall if self.kind == "wall" else cpu
        return Sample(seconds / calls, cpu / wall if wall > 0 else 0.0, reported)

    def calls_for(self, call, context, min_sample_s):
        """How many calls make a sample of ``min_sample_s``. The first call is the warm-up (the
        agreement check has already run the engine once); a call shorter than an eighth of
        a sample is re-timed over 8x more calls until the estimate is that long."""
        no_threads = lambda: None
        calls, seconds = 1, self.sample(call, 1, context, no_threads).seconds
        while seconds * calls < min_sample_s / 8 and calls < 1 << 20:
            calls *= 8
            seconds = self.sample(call, calls, context, no_threads).seconds
        return max(1, math.ceil(min_sample_s / max(seconds, 1e-9)))


def timed_calls(runner):
    """{mode: (call, context)} for the modes the runner has."""
    calls = {"forward": (runner.forward, runner.no_grad)}
    if runner.forward_backward is not None:
        calls["forward_backward"] = (runner.forward_backward, contextlib.nullcontext)
    return calls


def measure(runners, modes, clock, repeats, min_sample_s, settle_s=0.0, on_turn=None):
    """{(engine, mode): [Sample] * repeats}, engines taking turns in a rotating order.

    ``settle_s``: a pause before each engine's turn. With several threads, the previous
    engine's idle threads keep spinning for a while (OpenBLAS ~0.1 s, OpenMP pools) and would
    take the cores from the next one: on (50,16,1760,1760) with 2 threads, fastrnn's forward
    right after NumPy's ran 2x slower than alone."""
    plan = {(name, mode): call_context for name, runner in runners.items()
            for mode, call_context in timed_calls(runner).items() if mode in modes}
    calls = {key: clock.calls_for(call, context, min_sample_s)
             for key, (call, context) in plan.items()}
    samples = {key: [] for key in plan}
    names = list(runners)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settle_s)
            for mode in modes:
                if (name, mode) in plan:
                    call, context = plan[(name, mode)]
                    samples[(name, mode)].append(
                        clock.sample(call, calls[(name, mode)], context, runners[name].threads))
            if on_turn is not None:
                on_turn()
    return samples, calls
