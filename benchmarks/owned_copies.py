"""What the copies that make forward's results the caller's cost (issue 9 item 5).

When a backward is wanted, fastrnn.RNN copies the output it returns (the context keeps its own)
and the input/hx when the context would otherwise alias them. This script times forward and
forward+backward on the benchmark shapes with those copies and with them switched off (the
old, aliasing behaviour), alternating, best of N, process CPU time, one thread:

    taskset -c 0 python benchmarks/owned_copies.py [--repeats 5]
"""
import argparse
import contextlib
import time

import numpy as np

import fastrnn
from fastrnn import functional

SHAPES = [(96, 1, 64, 64, 1, False), (100, 16, 64, 64, 1, False), (100, 32, 256, 256, 1, False),
          (100, 64, 512, 512, 1, False), (50, 32, 128, 256, 2, True)]


@contextlib.contextmanager
def without_copies():
    """functional with the aliasing behaviour of main: no owned copies."""
    saved = functional._copy, functional._owned
    functional._copy = lambda arrays, a: a
    functional._owned = lambda arrays, a, caller: a
    try:
        yield
    finally:
        functional._copy, functional._owned = saved


def timed(call, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fastrnn.set_num_threads(1)
    print(f"{'shape (T, B, I, H, L, bi)':32s} {'forward':>18s} {'forward+backward':>18s}")
    for T, B, I, H, L, bi in SHAPES:
        layer = fastrnn.RNN(I, H, num_layers=L, bidirectional=bi, seed=0, backend="cpu")
        x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
        grad = np.ones((T, B, H * (2 if bi else 1)), np.float32)
        both = lambda: (layer(x), layer.backward(grad))
        times = {}
        for _ in range(args.repeats):              # alternate: the machine's load is shared
            for copies in (True, False):
                with contextlib.nullcontext() if copies else without_copies():
                    for name, call in (("f", lambda: layer(x)), ("fb", both)):
                        key = (copies, name)
                        times[key] = min(times.get(key, float("inf")), timed(call, 1))
        cells = [f"{times[(True, n)] / times[(False, n)]:6.3f}x ({times[(True, n)] * 1e3:7.2f} ms)"
                 for n in ("f", "fb")]
        print(f"{str((T, B, I, H, L, bi)):32s} {cells[0]:>18s} {cells[1]:>18s}")
    print("ratios: time with the owned copies / time without (1.000 = no cost)")


if __name__ == "__main__":
    main()
