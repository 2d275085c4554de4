"""Two threads on a machine whose other core is busy: fastrnn and torch.nn.RNN, 1 vs 2 threads.

Why: the default thread count is one per core (OpenBLAS's choice, which fastrnn leaves alone),
and a shared machine often has another job on a core. Threads that split every time step meet
at a barrier per step, so a descheduled partner stalls them; this measures how much each
library loses then. A busy-loop process is pinned to every CPU but the first for the whole
run; the forward + backward of one shape is timed, engines and thread counts taking turns.

    python benchmarks/busy_core.py [--shape 100,32,256,256] [--repeats 9]
"""
import argparse
import multiprocessing
import os
import time

import numpy as np

import fastrnn


def _spin():
    while True:
        pass


def _start_competitor():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 CPUs")
    competitor = multiprocessing.Process(target=_spin, daemon=True)
    competitor.start()
    os.sched_setaffinity(competitor.pid, cpus[1:])
    return competitor


def _fastrnn_call(T, B, I, H):
    rnn = fastrnn.RNN(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)

    def call():
        out, _ = rnn(x)
        rnn.backward(np.ones_like(out))
    return call, fastrnn.set_num_threads


def _torch_call(T, B, I, H):
    import torch
    rnn = torch.nn.RNN(I, H)
    x = torch.randn(T, B, I, requires_grad=True)

    def call():
        out, _ = rnn(x)
        out.sum().backward()
    return call, torch.set_num_threads


def _ms_per_call(call, set_threads, threads, calls=5):
    set_threads(threads)
    call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="100,32,256,256", help="T,B,I,H")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    T, B, I, H = (int(v) for v in args.shape.split(","))
    engines = {"fastrnn": _fastrnn_call(T, B, I, H)}
    try:
        engines["torch"] = _torch_call(T, B, I, H)
    except ImportError:
        print("torch not installed: fastrnn only")
    competitor = _start_competitor()
    try:
        samples = {(name, n): [] for name in engines for n in (1, 2)}
        for _ in range(args.repeats):
            for (name, n), times in samples.items():
                times.append(_ms_per_call(*engines[name], n))
    finally:
        competitor.terminate()
    print(f"forward + backward, shape {args.shape}, a busy process on every CPU but the "
          f"first; median of {args.repeats} samples of 5 calls")
    for name in engines:
        one, two = (np.median(samples[name, n]) for n in (1, 2))
        print(f"{name:8s} 1 thread {one:8.2f} ms   2 threads {two:8.2f} ms   "
              f"2 / 1 = {two / one:5.2f}x")


if __name__ == "__main__":
    main()
