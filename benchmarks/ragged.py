"""Ragged batches (issue 11): fastrnn packed against fastrnn padded and torch.nn.RNN packed.

The batch of design.md's benchmark list: 64 sequences, lengths 10..200 (evenly spread, or a
seeded draw with --draw), I = H = 256, one layer, float32, forward + backward. Every engine
runs on one thread; the engines alternate in one process and each figure is the median of
--repeats samples of the process's CPU time (design.md, "Performance protocol").

    python benchmarks/ragged.py [--repeats 7] [--draw] [--layers 1] [--bidirectional]

Targets: fastrnn packed <= 0.75x fastrnn padded; torch packed >= 3x fastrnn packed.
"""
import argparse
import statistics
import time

import numpy as np

import fastrnn


def lengths_of(batch, shortest, longest, draw):
    if draw:
        return np.random.default_rng(0).integers(shortest, longest + 1, size=batch)
    return np.linspace(shortest, longest, batch).round().astype(np.int64)


def cpu_seconds(run):
    start = time.process_time()
    run()
    return time.process_time() - start


def fastrnn_runner(layer, x, lengths, grad_out):
    def run():
        out, _ = layer(x, lengths=lengths)
        layer.backward(grad_out)
    return run


def torch_runner(torch, layer, x, lengths, grad_out):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x_t = torch.from_numpy(x)
    grad_t = torch.from_numpy(grad_out)
    lengths_t = torch.from_numpy(lengths)

    def run():
        packed = pack_padded_sequence(x_t, lengths_t, enforce_sorted=False)
        out, _ = layer(packed)
        padded, _ = pad_packed_sequence(out, total_length=x_t.shape[0])
        (padded * grad_t).sum().backward()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--draw", action="store_true",
                        help="seeded random lengths, not evenly spread")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--size", type=int, default=256, help="I = H")
    args = parser.parse_args(argv)

    fastrnn.set_num_threads(1)
    lengths = lengths_of(64, 10, 200, args.draw)
    T, B, size = int(lengths.max()), len(lengths), args.size
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, size)).astype(np.float32)
    D = 2 if args.bidirectional else 1
    grad_out = rng.standard_normal((T, B, D * size)).astype(np.float32)
    for b, length in enumerate(lengths):
        x[length:, b] = 0
        grad_out[length:, b] = 0
    layer = fastrnn.RNN(size, size, args.layers, bidirectional=args.bidirectional, seed=0)
    runners = {"fastrnn packed": fastrnn_runner(layer, x, lengths, grad_out),
               "fastrnn padded": fastrnn_runner(layer, x, None, grad_out)}
    try:
        import torch
        torch.set_num_threads(1)
        reference = torch.nn.RNN(size, size, args.layers, bidirectional=args.bidirectional)
        runners["torch packed"] = torch_runner(torch, reference, x, lengths, grad_out)
    except ImportError:
        torch = None
    samples = {name: [] for name in runners}
    for run in runners.values():
        run()                                   # warm up
    for _ in range(args.repeats):
        for name, run in runners.items():
            assert fastrnn.get_num_threads() == 1
            samples[name].append(cpu_seconds(run))
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"ragged batch: {B} sequences, lengths {lengths.min()}..{lengths.max()} "
          f"({'seeded draw' if args.draw else 'evenly spread'}), {lengths.sum()} tokens of "
          f"{T * B} padded; I=H={size}, layers={args.layers}, bidirectional={args.bidirectional};"
          f" forward+backward, 1 thread, median CPU time of {args.repeats}")
    for name, seconds in median.items():
        print(f"  {name:15s} {seconds * 1e3:9.2f} ms")
    packed = median["fastrnn packed"]
    print(f"  fastrnn packed / fastrnn padded = {packed / median['fastrnn padded']:.3f}  "
          "(target <= 0.75)")
    if torch is not None:
        print(f"  torch packed / fastrnn packed   = {median['torch packed'] / packed:.2f}  "
              "(target >= 3)")


if __name__ == "__main__":
    main()
