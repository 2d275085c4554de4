"""LSTM and GRU kernels (issue 14): fastrnn's cpu backend against torch.nn.LSTM / torch.nn.GRU
and against the shape's product ceiling, forward + backward of one layer-direction.

    taskset -c 0 python benchmarks/gated.py [--cell lstm gru] [--shapes 96,1,64,64 ...]
                                            [--repeats 7] [--clock cpu|wall] [--variant avx2]

What is timed (float32, equal lengths, one thread for every engine, engines alternating in one
process, the median of --repeats samples, design.md "Performance protocol"):
- fastrnn: cpu.lstm_forward + cpu.lstm_backward (gru_*) called through the backend contract
  on packed buffers allocated here once: no layer, no Python between the kernels;
- torch: torch.nn.LSTM / GRU forward, then backward from a fixed grad_output (input, weights
  and biases all require grad, as in training); its output is checked against fastrnn's first;
- limit: the matrix products the shape needs, nothing else, with the same BLAS, timed the way
  ``python -m fastrnn bench`` times its limit (fastrnn.bench.limit.ProductCall): forward, one
  [T*B, I] x [I, G*H] input projection (one SciPy sgemm) and T [B, H] x [H, G*H] step products
  (one NumPy matmul over a stack, one BLAS call per product); backward adds T step-gradient
  products [B, G*H] x [G*H, H], dX, dW_ih and dW_hh (one sgemm each). The same calls on 1 x 1
  operands are timed too and subtracted (their Python cost). G = 4 (LSTM) or 3 (GRU).
"share" = limit / fastrnn: 100% is as fast as the products alone.

Targets (issue 14): fastrnn >= 4x torch at (96,1,64,64), >= 2x at (100,16,64,64); at
(100,32,256,256) LSTM >= 1.0x and GRU >= 1.2x; every shape with B >= 16 at >= 90% share.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

import fastrnn
from fastrnn.backends import cpu
from fastrnn.bench import machine
from fastrnn.bench.limit import ProductCall
from fastrnn.bench.shapes import Product

GATES = {"lstm": 4, "gru": 3}
SHAPES = ["672,1,32,32", "96,1,64,64", "100,16,64,64", "100,32,256,256", "100,64,512,512",
          "50,32,128,256"]
TARGET_VS_TORCH = {("lstm", (96, 1, 64, 64)): 4.0, ("gru", (96, 1, 64, 64)): 4.0,
                   ("lstm", (100, 16, 64, 64)): 2.0, ("gru", (100, 16, 64, 64)): 2.0,
                   ("lstm", (100, 32, 256, 256)): 1.0, ("gru", (100, 32, 256, 256)): 1.2}
TARGET_SHARE = 0.9        # every shape with B >= 16


class Problem:
    """One layer-direction's packed float32 buffers, with torch's module and its weights."""

    def __init__(self, torch, cell, T, B, I, H, seed=0):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.cell, self.T, self.B, self.I, self.H = cell, T, B, I, H
        self.module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H)
        f32 = np.float32
        N, G = T * B, GATES[cell]
        self.x = rng.standard_normal((N, I), dtype=f32)
        self.grad_out = rng.standard_normal((N, H), dtype=f32)
        self.batch_sizes = np.full(T, B, np.int64)
        self.weights = [p.detach().numpy().copy() for p in self.module.parameters()]
        self.h0, self.grad_hn = np.zeros((B, H), f32), np.zeros((B, H), f32)
        self.out, self.h_n = np.empty((N, H), f32), np.empty((B, H), f32)
        self.workspace = np.empty((N, (G + 1) * H), f32)
        self.grad_x, self.grad_h0 = np.empty((N, I), f32), np.empty((B, H), f32)
        self.grads = [np.zeros_like(w) for w in self.weights]
        if cell == "lstm":
            self.c0, self.grad_cn = np.zeros((B, H), f32), np.zeros((B, H), f32)
            self.c_n, self.grad_c0 = np.empty((B, H), f32), np.empty((B, H), f32)

    def fastrnn_forward_backward(self):
        w_ih, w_hh, b_ih, b_hh = self.weights
        g_ih, g_hh, gb_ih, gb_hh = self.grads
        if self.cell == "lstm":
            cpu.lstm_forward(self.x, self.h0, self.c0, w_ih, w_hh, b_ih, b_hh, None,
                             self.batch_sizes, False, self.out, self.h_n, self.c_n,
                             self.workspace)
            cpu.lstm_backward(self.x, self.h0, self.c0, w_ih, w_hh, None, self.batch_sizes,
                              False, self.out, self.workspace, self.grad_out, self.grad_hn,
                              self.grad_cn, self.grad_x, False, self.grad_h0, self.grad_c0,
                              g_ih, g_hh, gb_ih, gb_hh, None)
        else:
            cpu.gru_forward(self.x, self.h0, w_ih, w_hh, b_ih, b_hh, self.batch_sizes, False,
                            self.out, self.h_n, self.workspace)
            cpu.gru_backward(self.x, self.h0, w_ih, w_hh, self.batch_sizes, False, self.out,
                             self.workspace, self.grad_out, self.grad_hn, self.grad_x, False,
                             self.grad_h0, g_ih, g_hh, gb_ih, gb_hh)

    def torch_runner(self, torch):
        x = torch.from_numpy(self.x.reshape(self.T, self.B, self.I)).requires_grad_()
        grad = torch.from_numpy(self.grad_out.reshape(self.T, self.B, self.H))

        def run():
            out, _ = self.module(x)
            out.backward(grad)
            return out
        return run

    def check_agreement(self, torch):
        """fastrnn's output equals torch's on this problem (the same maths is being timed)."""
        self.fastrnn_forward_backward()
        with torch.no_grad():
            expected = self.module(torch.from_numpy(self.x.reshape(self.T, self.B, self.I)))[0]
        error = np.abs(self.out - expected.numpy().reshape(self.out.shape)).max()
        if not error < 1e-4:
            raise AssertionError(f"{self.cell} {self.T, self.B, self.I, self.H}: fastrnn's "
                                 f"output differs from torch's by {error}")


def products(cell, T, B, I, H):
    """(forward, backward) products of one layer-direction of a gated cell (see the docstring)."""
    width, tokens = GATES[cell] * H, T * B
    forward = [Product("input projection", tokens, I, width, trans_b=True),
               Product("step", B, H, width, count=T)]
    backward = [Product("step gradient", B, width, H, count=T),
                Product("dX", tokens, width, I),
                Product("dW_ih", width, tokens, I, trans_a=True),
                Product("dW_hh", width, tokens, H, trans_a=True)]
    return forward + backward


def products_runner(product_list, rng):
    calls = [ProductCall(p, rng) for p in product_list]

    def run():
        for call in calls:
            call.run()
    return run


def unit(product):
    """The same call on 1 x 1 operands (its cost besides the product)."""
    return Product(product.kind, 1, 1, 1, min(product.count, 2), product.trans_a,
                   product.trans_b)


def timed(run, clock, min_seconds=0.05):
    """Seconds per call of ``run`` by ``clock``, over as many calls as last min_seconds."""
    run()
    start = clock()
    run()
    once = max(clock() - start, 1e-7)
    calls = max(1, int(min_seconds / once))
    start = clock()
    for _ in range(calls):
        run()
    return (clock() - start) / calls


def measure(torch, cell, shape, repeats, clock):
    T, B, I, H = shape
    problem = Problem(torch, cell, T, B, I, H)
    problem.check_agreement(torch)
    rng = np.random.default_rng(1)
    needed = products(cell, T, B, I, H)
    runners = {"fastrnn": problem.fastrnn_forward_backward,
               "torch": problem.torch_runner(torch),
               "limit": products_runner(needed, rng),
               "limit calls": products_runner([unit(p) for p in needed], rng)}
    samples = {name: [] for name in runners}
    for repeat in range(repeats):
        names = list(runners)
        names = names[repeat % len(names):] + names[:repeat % len(names)]   # rotate the order
        for name in names:
            assert fastrnn.get_num_threads() == 1 and torch.get_num_threads() == 1
            samples[name].append(timed(runners[name], clock))
    median = {name: statistics.median(values) for name, values in samples.items()}
    median["limit"] -= median.pop("limit calls")
    return median


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", nargs="+", choices=sorted(GATES), default=["lstm", "gru"])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="T,B,I,H ...")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--variant", default="best",
                        help="the float32 step-kernel variant (avx512, avx2, generic)")
    args = parser.parse_args(argv)

    fastrnn.set_num_threads(1)        # loads the kernels' BLAS first (design.md)
    import torch
    torch.set_num_threads(1)
    fastrnn.set_num_threads(1)
    cpu._rnn_cpu.use_step_kernel(args.variant)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    blas = fastrnn.threads.kernel_blas() or {}
    print(f"$ {' '.join(sys.argv if argv is None else [sys.argv[0], *argv])}")
    print(f"gated cells, float32, forward + backward of one layer-direction, 1 thread, median of "
          f"{args.repeats} ({args.clock} clock); CPU {machine.cpu_name()}, {os.cpu_count()} "
          f"logical, this process on CPUs {machine.allowed_cpus()}, load average "
          f"{machine.load_average()}; step kernel {cpu.step_kernel_name()}; kernels' BLAS "
          f"{blas.get('internal_api')} {blas.get('version')} {blas.get('architecture')}; torch "
          f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")
    print(f"{'cell':5s} {'T,B,I,H':16s} {'fastrnn ms':>11s} {'torch ms':>9s} {'torch/fast':>10s} "
          f"{'limit ms':>9s} {'share':>6s} {'torch share':>11s}  targets")
    for shape_text in args.shapes:
        shape = tuple(int(v) for v in shape_text.split(","))
        for cell in args.cell:
            m = measure(torch, cell, shape, args.repeats, clock)
            speedup, share = m["torch"] / m["fastrnn"], m["limit"] / m["fastrnn"]
            verdicts = []
            target = TARGET_VS_TORCH.get((cell, shape))
            if target is not None:
                verdicts.append(f"vs torch >= {target}x {'met' if speedup >= target else 'MISSED'}")
            if shape[1] >= 16:
                verdicts.append(f"share >= {TARGET_SHARE:.0%} "
                                f"{'met' if share >= TARGET_SHARE else 'MISSED'}")
            print(f"{cell:5s} {shape_text:16s} {m['fastrnn'] * 1e3:11.3f} {m['torch'] * 1e3:9.3f} "
                  f"{speedup:9.2f}x {m['limit'] * 1e3:9.3f} {share:6.0%} "
                  f"{m['limit'] / m['torch']:11.0%}  {'; '.join(verdicts)}", flush=True)


if __name__ == "__main__":
    main()
