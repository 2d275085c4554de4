"""Per-call cost of one small call: fastrnn.RNN (call and step) against torch.nn.RNN.

Why a script and not a test: timings on shared machines are noisy, so speed is measured, not
asserted (design.md, "Performance protocol"): one process, the engines alternating, the best
of several repeats, one thread each. The shape is issue 12's latency case: T=1, B=1,
I=H=64, no gradient. Also shown: the compiled cpu kernel called directly (what the Python
path adds to) and the 'numpy' reference.

    taskset -c 0 python benchmarks/step_latency.py [--hidden 64] [--layers 1] [--clock cpu]
"""
import argparse
import time

import numpy as np

import fastrnn


def best_time_us(call, number, repeats, clock=time.perf_counter):
    """The fastest of ``repeats`` loops of ``number`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            call()
        best = min(best, (clock() - start) / number)
    return best * 1e6


def engines(hidden, layers):
    """{name: zero-argument call}: the same layer (same weights) in every engine."""
    rnn = fastrnn.RNN(hidden, hidden, num_layers=layers, seed=0, backend="cpu").eval()
    x = np.random.default_rng(0).standard_normal((1, 1, hidden)).astype(np.float32)
    h = np.zeros((layers, 1, hidden), np.float32)
    state = np.zeros((layers, 1, hidden), np.float32)
    calls = {"fastrnn.RNN call": lambda: rnn(x, h),
             "fastrnn.RNN.step": lambda: rnn.step(x[0], h),
             "fastrnn.RNN.step out=": lambda: rnn.step(x[0], h, out=state)}
    reference = fastrnn.RNN(hidden, hidden, num_layers=layers, seed=0, backend="numpy").eval()
    calls["numpy reference call"] = lambda: reference(x, h)
    try:
        import torch
    except ImportError:
        return calls, rnn
    torch.set_num_threads(1)
    module = torch.nn.RNN(hidden, hidden, num_layers=layers).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    x_t, h_t = torch.from_numpy(x), torch.from_numpy(h)
    calls["torch.nn.RNN call"] = lambda: module(x_t, h_t)
    return calls, rnn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--number", type=int, default=2000, help="calls per timed loop")
    parser.add_argument("--repeats", type=int, default=7, help="timed loops per engine")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (steadier on a busy machine)")
    args = parser.parse_args(argv)
    args.clock = time.perf_counter if args.clock == "wall" else time.process_time
    fastrnn.set_num_threads(1)
    calls, rnn = engines(args.hidden, args.layers)
    times = {name: float("inf") for name in calls}
    with fastrnn.no_grad():
        for _ in range(args.repeats):          # engines alternate: the machine's load is shared
            for name, call in calls.items():
                times[name] = min(times[name], best_time_us(call, args.number, 1, args.clock))
    print(f"T=1, B=1, I=H={args.hidden}, layers={args.layers}, no grad, 1 thread; "
          f"best of {args.repeats} x {args.number} calls, {args.clock.__name__}")
    torch_time = times.get("torch.nn.RNN call")
    for name, us in times.items():
        ratio = f"  {us / torch_time:5.2f}x torch" if torch_time else ""
        print(f"  {name:24s} {us:8.2f} us{ratio}")


if __name__ == "__main__":
    main()
