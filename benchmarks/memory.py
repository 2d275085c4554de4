"""Peak memory of one forward (inference) and one forward + backward, beside the arrays that
must exist, for one shape (default: DeepBench T=50, B=64, I=H=1760).

    python benchmarks/memory.py [--shape T,B,I,H] [--backends cpu numpy torch] [--json PATH]

Why two measures: Python's tracemalloc sees NumPy's array buffers (NumPy reports them in its
own tracemalloc domain) but not memory that C code takes with malloc, such as the step
kernel's packed W_hh or OpenBLAS's work buffers. The peak resident set size
(``resource.getrusage().ru_maxrss``) sees everything, so each case runs in a fresh process:
set up the layer and the arrays, then read the peak RSS before and after the one call. The
difference is what the call added on top of what was already there.

What must exist, in float32: inference writes the output [T, B, H]; training keeps the output
too (the context) and backward writes dL/dx [T, B, I] and needs dL/da_t for every step
[T, B, H] (the scratch that weight gradients are one product over).
"""
import argparse
import json
import os
import subprocess
import sys

CASE = r"""
import json, resource, sys, tracemalloc
import numpy as np
T, B, I, H = {shape}
backend, mode = {backend!r}, {mode!r}
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, I), dtype=np.float32)
grad_out = rng.standard_normal((T, B, H), dtype=np.float32)
if backend == "torch":
    import torch
    torch.set_num_threads(1)
    layer = torch.nn.RNN(I, H)
    xt, gt = torch.from_numpy(x).requires_grad_(mode == "forward_backward"), torch.from_numpy(grad_out)
    def call():
        if mode == "forward":
            with torch.no_grad():
                layer(xt)
        else:
            layer(xt)[0].backward(gt)
else:
    import fastrnn
    fastrnn.set_num_threads(1)
    layer = fastrnn.RNN(I, H, backend=backend, seed=0)
    def call():
        if mode == "forward":
            with fastrnn.no_grad():
                layer(x)
        else:
            layer(x)
            layer.backward(grad_out)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
call()
_, numpy_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rss_peak_added_mb": (after - before) / 1024,
                   "tracemalloc_peak_mb": numpy_peak / 2**20}}))
"""


def must_exist_mb(T, B, I, H, mode):
    """MiB of the float32 arrays a call cannot do without (see the module docstring)."""
    output = T * B * H * 4
    if mode == "forward":
        return output / 2**20
    return (output + T * B * I * 4 + T * B * H * 4) / 2**20


def measure(shape, backend, mode):
    code = CASE.format(shape=tuple(shape), backend=backend, mode=mode)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{backend} {mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="50,64,1760,1760", help="T,B,I,H")
    parser.add_argument("--backends", nargs="+", default=["cpu", "torch"])
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    shape = [int(v) for v in args.shape.split(",")]
    rows = []
    print(f"shape T,B,I,H = {args.shape}, float32, 1 thread; MiB")
    print(f"{'backend':8s} {'mode':17s} {'must exist':>10s} {'RSS peak added':>15s} "
          f"{'NumPy arrays peak':>18s}")
    for backend in args.backends:
        for mode in ("forward", "forward_backward"):
            result = measure(shape, backend, mode)
            row = {"backend": backend, "mode": mode, "must_exist_mb": must_exist_mb(*shape, mode),
                   **result}
            rows.append(row)
            numpy_peak = (f"{row['tracemalloc_peak_mb']:.1f}" if backend != "torch"
                          else "n/a (torch)")
            print(f"{backend:8s} {mode:17s} {row['must_exist_mb']:10.1f} "
                  f"{row['rss_peak_added_mb']:15.1f} {numpy_peak:>18s}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"shape": shape, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
