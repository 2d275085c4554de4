"""Per-call cost of fastrnn.torch.RNN against torch.nn.RNN: small calls, where overhead is all.

    python benchmarks/torch_per_call.py [--steps 1 16] [--batch 1] [--size 64] [--threads 1]
                                        [--rounds 30] [--calls 2000] [--clock cpu|wall]

Why this shape (design.md, "Performance protocol"): both layers run in ONE process, in
alternating rounds, on the same inputs and weights, with fixed threads; each round times
``--calls`` back-to-back calls of one layer under ``torch.no_grad()`` (step-by-step generation)
and the report gives the median time per call over the rounds and the ratio of the medians.
Two more columns time both layers' forward with grad enabled and ``requires_grad`` on the
input (a training step's forward), where fastrnn builds its autograd node (autograd.py) and
keeps what backward needs: what the no-grad fast path saves.
Pin it to one core for single-thread figures: ``taskset -c 0 python benchmarks/torch_per_call.py``.
``--clock cpu`` (the default) counts this thread's CPU time, which a busy shared machine
disturbs far less than wall time.
"""
import argparse
import statistics
import time

import torch

import fastrnn
import fastrnn.torch


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def time_calls(call, calls, clock=time.thread_time):
    """Seconds per call of ``call()`` over ``calls`` back-to-back calls."""
    start = clock()
    for _ in range(calls):
        call()
    return (clock() - start) / calls


def measure(steps, batch, size, rounds, calls, clock):
    torch.manual_seed(0)
    theirs = torch.nn.RNN(size, size)
    ours = fastrnn.torch.RNN(size, size)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(steps, batch, size)
    x_tracked = x.clone().requires_grad_(True)
    engines = {
        "torch.nn.RNN": lambda: theirs(x),
        "fastrnn.torch.RNN": lambda: ours(x),
    }
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs(x)[0])
        for call in engines.values():                       # warm-up
            time_calls(call, calls // 10 + 1)
        times = {name: [] for name in engines}
        for _ in range(rounds):
            for name, call in engines.items():              # alternating, same process
                times[name].append(time_calls(call, calls, clock))
    tracked = {"torch.nn.RNN (grad)": lambda: theirs(x_tracked),
               "fastrnn.torch.RNN (grad)": lambda: ours(x_tracked)}
    for name, call in tracked.items():
        time_calls(call, calls // 10 + 1)
        times[name] = []
    for _ in range(rounds):
        for name, call in tracked.items():
            times[name].append(time_calls(call, calls, clock))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="input and hidden size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fastrnn.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, fastrnn {fastrnn.__version__}, threads {args.threads} "
          f"(torch {torch.get_num_threads()}, fastrnn {fastrnn.get_num_threads()}), "
          f"B={args.batch}, I=H={args.size}, no_grad, median of {args.rounds} rounds of "
          f"{args.calls} calls, {args.clock} clock")
    for steps in args.steps:
        medians = measure(steps, args.batch, args.size, args.rounds, args.calls,
                          CLOCKS[args.clock])
        torch_time = medians["torch.nn.RNN"]
        cells = ", ".join(f"{name} {t * 1e6:.1f} us ({t / torch_time:.2f}x)"
                          for name, t in medians.items())
        print(f"T={steps}: {cells}")


if __name__ == "__main__":
    main()
