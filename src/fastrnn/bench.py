"""``python -m fastrnn bench``: how fast each backend runs the RNN shapes that matter, on this
machine, in this process.

Why it is built this way (design.md, "Performance protocol"): machines are shared and noisy,
so every number is a median of ``--repeats`` samples, all backends are measured in ONE
process, and the backends take turns within each repeat (the order rotates), so a burst of
load hits all of them alike; what is worth comparing is the ratios printed beside the times.
The BLAS thread count is fixed for every library (``--threads``, default 1). The ceiling is
measured in the same run: a single sgemm with the same multiply-adds as one layer's forward,
on every BLAS present, the fastest one counting. The output says what ran: CPU, libraries
and their versions, the OpenBLAS kernels (coretype) each BLAS picked, and how busy the
machine was (the share of wall time the process actually ran; 1.0 is a quiet machine).

FLOPs: forward ``2*T*B*H*(I_l + H)`` per layer-direction (``I_l``: that layer's input width);
forward + backward three times that.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

BACKENDS = ("numpy", "cpu", "torch", "cuda", "torch-cuda")
CPU_BACKENDS = ("numpy", "cpu", "torch")
MODES = ("forward", "forward_backward")
BASELINES = {"cpu": ("numpy", "torch"), "cuda": ("numpy", "torch-cuda"),
             "torch": ("numpy", None), "torch-cuda": ("numpy", None), "numpy": (None, None)}


@dataclass(frozen=True)
class Shape:
    """One benchmark case (time steps, batch, input, hidden, layers, bidirectional)."""
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    group: str = ""

    @property
    def label(self):
        return (f"{self.T},{self.B},{self.I},{self.H},{self.layers},"
                f"{'bi' if self.bidirectional else 'no'}")

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    def forward_flops(self):
        flops = 0
        for layer in range(self.layers):
            layer_input = self.I if layer == 0 else self.directions * self.H
            flops += self.directions * 2 * self.T * self.B * self.H * (layer_input + self.H)
        return flops

    def flops(self, mode):
        return self.forward_flops() * (1 if mode == "forward" else 3)


DEVICE_INFERENCE = [Shape(672, 1, 32, 32, group="device inference"),
                    Shape(96, 1, 64, 64, group="device inference")]
SMALL = [Shape(100, 16, 64, 64, group="small"), Shape(100, 32, 256, 256, group="small"),
         Shape(100, 64, 512, 512, group="torch default"),
         Shape(50, 32, 128, 256, 2, True, group="stacked")]
DEEPBENCH = [Shape(50, B, H, H, group="DeepBench training")
             for H in (1760, 2048, 2560) for B in (16, 32, 64, 128)]
TINY = [Shape(8, 2, 8, 8, group="tiny"), Shape(5, 3, 6, 10, 2, True, group="tiny")]
SHAPE_SETS = {"small": DEVICE_INFERENCE + SMALL, "deepbench": DEEPBENCH,
              "all": DEVICE_INFERENCE + SMALL + DEEPBENCH, "tiny": TINY}


# ----------------------------------------------------------------------------- backends
class Skip(Exception):
    """A backend cannot run here; the message says why."""


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise Skip(f"torch is not installed ({exc})") from exc
    return torch


def backend_availability(names):
    """{name: None if it can run here, else why not} for the requested backends."""
    from . import backend_status
    status = backend_status()
    available = {}
    for name in names:
        try:
            if name in ("numpy", "cpu", "cuda"):
                if status[name] is not None:
                    raise Skip(status[name])
            else:
                torch = _torch()
                if name == "torch-cuda" and not torch.cuda.is_available():
                    raise Skip("torch has no CUDA device here")
            available[name] = None
        except Skip as exc:
            available[name] = str(exc)
    return available


@dataclass
class Runner:
    """The two timed calls of one backend on one shape; each completes its work (GPU synced)."""
    forward: object
    forward_backward: object


def _fastrnn_runner(name, shape, weights, x, grad_out):
    import fastrnn
    from .backends import load_backend
    layer = fastrnn.RNN(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional,
                        backend=name)
    layer.load_state_dict(weights)
    sync = lambda: None
    if name == "cuda":
        from numba import cuda
        arrays = load_backend("cuda").ARRAYS
        x, grad_out, sync = arrays.asarray(x), arrays.asarray(grad_out), cuda.synchronize

    def forward():
        with fastrnn.no_grad():
            layer(x)
        sync()

    def forward_backward():
        layer(x)
        layer.backward(grad_out)
        sync()

    return Runner(forward, forward_backward)


def _torch_runner(name, shape, weights, x, grad_out):
    torch = _torch()
    device = "cuda" if name == "torch-cuda" else "cpu"
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    layer = torch.nn.RNN(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional)
    layer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    layer = layer.to(device)
    x = torch.from_numpy(x).to(device)
    x_grad = x.clone().requires_grad_(True)       # fastrnn computes dL/dx too
    grad_out = torch.from_numpy(grad_out).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            layer(x)
        sync()

    def forward_backward():
        x_grad.grad = None
        layer(x_grad)[0].backward(grad_out)
        sync()

    return Runner(forward, forward_backward)


def make_runner(name, shape, weights, x, grad_out):
    make = _torch_runner if name.startswith("torch") else _fastrnn_runner
    return make(name, shape, weights, x, grad_out)


def shape_inputs(shape, seed=0):
    """Weights (torch's names and initialisation), input and output gradient, float32."""
    import fastrnn
    reference = fastrnn.RNN(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional,
                            backend="numpy", seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape.T, shape.B, shape.I), dtype=np.float32)
    grad_out = rng.standard_normal((shape.T, shape.B, shape.directions * shape.H),
                                   dtype=np.float32)
    return reference.state_dict(), x, grad_out


# ----------------------------------------------------------------------------- timing
class Clock:
    """Times calls by wall clock or by this process's CPU time (``--clock cpu``), and records
    the other one too: CPU time / wall time / threads is the share the process really ran."""

    def __init__(self, kind, threads):
        self.kind, self.threads = kind, threads

    def sample(self, fn, calls):
        """(seconds per call by this clock, share of the wall time the process ran)."""
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        share = cpu / (wall * self.threads) if wall > 0 else 1.0
        return (wall if self.kind == "wall" else cpu) / calls, share

    def calls_for(self, fn, min_sample_s):
        """Runs fn once (warm-up) and returns how many calls make a sample of min_sample_s."""
        seconds, _ = self.sample(fn, 1)
        return max(1, math.ceil(min_sample_s / max(seconds, 1e-9)))


def sgemm_candidates(a, b, backends):
    """{BLAS name: call computing a @ b} for every CPU BLAS in reach, the kernels' own first."""
    from scipy.linalg import blas as scipy_blas
    candidates = {"scipy (fastrnn kernels)": lambda: scipy_blas.sgemm(1.0, b.T, a.T),
                  "numpy": lambda: np.matmul(a, b)}
    if "torch" in backends:
        torch = _torch()
        a_tensor, b_tensor = torch.from_numpy(a), torch.from_numpy(b)
        candidates["torch"] = lambda: torch.mm(a_tensor, b_tensor)
    return candidates


def measure_sgemm(shape, backends, clock, repeats, min_sample_s):
    """GFLOP/s of C[T*B, H] = A[T*B, I+H] B[I+H, H] (one layer's forward work in one product)
    on each CPU BLAS, medians of alternating samples; the fastest is the CPU ceiling."""
    m, k, n = shape.T * shape.B, shape.I + shape.H, shape.H
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    candidates = sgemm_candidates(a, b, backends)
    calls = {name: clock.calls_for(fn, min_sample_s) for name, fn in candidates.items()}
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(clock.sample(fn, calls[name])[0])
    gflops = {name: 2 * m * n * k / float(np.median(s)) / 1e9 for name, s in samples.items()}
    best = max(gflops, key=gflops.get)
    return {"m": m, "n": n, "k": k, "gflops": gflops, "ceiling_gflops": gflops[best],
            "ceiling_by": best}


def measure_shape(shape, backends, clock, repeats, min_sample_s, progress, settle_s=0.0):
    """Median times of every backend on one shape, backends alternating within each repeat.

    ``settle_s``: a pause before each backend's turn. With several threads, the previous
    backend's idle threads keep spinning for a while (NumPy's OpenBLAS for ~0.1 s, torch's
    OpenMP threads) and would take the cores from the next one: measured on (50,16,1760,1760)
    with 2 threads, fastrnn's forward right after NumPy's ran 2x slower than alone."""
    weights, x, grad_out = shape_inputs(shape)
    runners = {name: make_runner(name, shape, weights, x, grad_out) for name in backends}
    calls = {(name, mode): clock.calls_for(getattr(runners[name], mode), min_sample_s)
             for name in backends for mode in MODES}
    samples = {(name, mode): [] for name in backends for mode in MODES}
    shares = []
    for repeat in range(repeats):
        order = backends[repeat % len(backends):] + backends[:repeat % len(backends)]
        for name in order:
            time.sleep(settle_s)
            for mode in MODES:
                seconds, share = clock.sample(getattr(runners[name], mode), calls[(name, mode)])
                samples[(name, mode)].append(seconds * 1e3)
                shares.append(share)
            progress.update(1)
    return samples, shares


def summarise(shape, samples, sgemm):
    """Medians, speedups over the baselines, GFLOP/s and the share of the sgemm ceiling."""
    medians = {key: float(np.median(values)) for key, values in samples.items()}
    backends = sorted({name for name, _ in samples}, key=BACKENDS.index)
    entry = {}
    for name in backends:
        result = {mode: {"median_ms": medians[(name, mode)], "samples_ms": samples[(name, mode)]}
                  for mode in MODES}
        result["gflops"] = {mode: shape.flops(mode) / medians[(name, mode)] / 1e6 for mode in MODES}
        if name in CPU_BACKENDS:     # the ceiling is a CPU product; GPUs have their own
            result["fraction_of_sgemm_ceiling"] = {
                mode: result["gflops"][mode] / sgemm["ceiling_gflops"] for mode in MODES}
        for baseline, key in zip(BASELINES[name], ("over_numpy", "over_torch")):
            if baseline in backends:
                result.setdefault("speedup", {})[key] = {
                    mode: medians[(baseline, mode)] / medians[(name, mode)] for mode in MODES}
        entry[name] = result
    return entry


# ----------------------------------------------------------------------------- the machine
def cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions():
    import scipy
    import threadpoolctl
    import fastrnn
    versions = {"python": platform.python_version(), "fastrnn": fastrnn.__version__,
                "numpy": np.__version__, "scipy": scipy.__version__,
                "threadpoolctl": threadpoolctl.__version__}
    for optional in ("torch", "numba"):
        module = sys.modules.get(optional)
        if module is not None:
            versions[optional] = getattr(module, "__version__", "?")
    return versions


def _blas_summary(info):
    if info is None:
        return None
    return {key: info.get(key) for key in
            ("internal_api", "version", "architecture", "num_threads", "filepath")}


def blas_description(backends):
    """Which BLAS each party uses and which kernels it picked (OpenBLAS: its coretype)."""
    from . import threads
    libraries = threads.blas_libraries()
    numpy_dir = os.path.dirname(os.path.realpath(np.__file__))
    numpy_own = [info for info in libraries
                 if os.path.realpath(info.get("filepath", "")).startswith(numpy_dir)]
    described = {"fastrnn_kernels (scipy)": _blas_summary(threads.kernel_blas()),
                 "numpy": _blas_summary(numpy_own[0]) if numpy_own else None,
                 "all_loaded": [_blas_summary(info) for info in libraries]}
    try:
        from .backends import cpu
        described["fastrnn_kernels (scipy)"]["coretype_choice"] = cpu.coretype_report()
        described["fastrnn_kernels (scipy)"]["load_settings"] = cpu.openblas_setup_report()
        described["fastrnn_step_kernel"] = cpu.step_kernel_name()
    except (ImportError, AttributeError, TypeError):
        pass
    if "torch" in backends:
        torch = _torch()
        config = torch.__config__.show()
        blas = "MKL" if "BLAS_INFO=mkl" in config else "see torch.__config__.show()"
        described["torch"] = {"blas": blas, "linking": "inside libtorch (not listed above)",
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "num_threads": torch.get_num_threads()}
    return described


def machine_description():
    return {"node": platform.node(), "platform": platform.platform(), "cpu": cpu_name(),
            "logical_cores": os.cpu_count(),
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# ----------------------------------------------------------------------------- output
def _ratio(value):
    return f"{value:.2f}x" if value is not None else "-"


def _percent(fraction):
    return f"{100 * fraction:.0f}%" if fraction is not None else "-"


TABLE_COLUMNS = ("shape (T,B,I,H,L,bi)", "backend", "fwd ms", "fwd+bwd ms", "fwd/numpy",
                 "f+b/numpy", "fwd/torch", "f+b/torch", "fwd GFLOP/s", "f+b GFLOP/s",
                 "fwd %sgemm", "f+b %sgemm")


def format_table(report):
    """The results as a fixed-width text table, one row per shape and backend."""
    widths = (22, 10, 9, 10, 9, 9, 9, 9, 11, 11, 10, 10)
    line = lambda cells: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    rows = [line(TABLE_COLUMNS)]
    for result in report["results"]:
        sgemm = result["sgemm"]
        for i, (name, r) in enumerate(result["backends"].items()):
            speed = r.get("speedup", {})
            over = lambda key, mode: speed.get(key, {}).get(mode)
            rows.append(line([result["shape"]["label"] if i == 0 else "", name,
                              f"{r['forward']['median_ms']:.3f}",
                              f"{r['forward_backward']['median_ms']:.3f}",
                              _ratio(over("over_numpy", "forward")),
                              _ratio(over("over_numpy", "forward_backward")),
                              _ratio(over("over_torch", "forward")),
                              _ratio(over("over_torch", "forward_backward")),
                              f"{r['gflops']['forward']:.1f}",
                              f"{r['gflops']['forward_backward']:.1f}",
                              _percent(r.get("fraction_of_sgemm_ceiling", {}).get("forward")),
                              _percent(r.get("fraction_of_sgemm_ceiling", {})
                                       .get("forward_backward"))]))
        rows.append(line(["", "sgemm", "", "", "", "", "", "", f"{sgemm['ceiling_gflops']:.1f}",
                          f"{sgemm['ceiling_gflops']:.1f}", f"({sgemm['ceiling_by']})", ""]))
    return "\n".join(rows)


def format_header(report):
    s = report["settings"]
    blas = report["blas"]
    kernels = blas.get("fastrnn_kernels (scipy)") or {}
    lines = [f"fastrnn {report['libraries']['fastrnn']} bench: {s['threads']} BLAS thread(s), "
             f"float32, median of {s['repeats']} repeats ({s['clock']} clock), backends "
             "alternating in one process",
             f"CPU: {report['machine']['cpu']} ({report['machine']['logical_cores']} logical "
             f"cores); load average at start {report['machine']['loadavg_start']}",
             f"fastrnn kernels: step kernel {blas.get('fastrnn_step_kernel', '?')}, SciPy's "
             f"OpenBLAS {kernels.get('version')} coretype "
             f"{kernels.get('coretype_choice', kernels.get('architecture'))}"]
    if blas.get("numpy"):
        lines.append(f"NumPy's BLAS: {blas['numpy']['internal_api']} {blas['numpy']['version']} "
                     f"coretype {blas['numpy']['architecture']}")
    if blas.get("torch"):
        lines.append(f"torch's BLAS: {blas['torch']['blas']} ({blas['torch']['linking']}), "
                     f"CPU capability {blas['torch']['cpu_capability']}")
    for name, reason in report["skipped"].items():
        lines.append(f"{name}: skipped ({reason})")
    return "\n".join(lines)


def format_footer(report):
    return (f"The process ran {100 * report['noise']['median_cpu_share']:.0f}% of the wall time "
            f"(median over samples; below ~90% the machine was busy and wall-clock ratios are "
            f"noisy); median spread of samples around their median "
            f"{100 * report['noise']['median_spread']:.1f}%. "
            f"Took {report['duration_s']:.0f} s.")


def write_plot(report, path):
    """Per shape, fastrnn's speedup over torch and over the NumPy reference as bars growing
    from 1x on a log scale: right of the dashed line is faster, left is slower."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    rows = [(r["shape"]["label"], name, b["speedup"]) for r in report["results"]
            for name, b in r["backends"].items() if name in ("cpu", "cuda") and "speedup" in b]
    baselines = [key for key in ("over_torch", "over_numpy")
                 if any(key in speedup for _, _, speedup in rows)] or ["over_numpy"]
    fig, axes = plt.subplots(1, len(baselines), figsize=(6.5 * len(baselines),
                                                         0.6 * len(rows) + 2), squeeze=False)
    y = np.arange(len(rows))
    for ax, key in zip(axes[0], baselines):
        values = {mode: np.array([speedup.get(key, {}).get(mode, np.nan)
                                  for _, _, speedup in rows]) for mode in MODES}
        for offset, mode, colour in ((-0.2, "forward", "tab:blue"),
                                     (0.2, "forward_backward", "tab:orange")):
            bars = ax.barh(y + offset, values[mode] - 1, left=1, height=0.4, color=colour,
                           label=mode.replace("_", " + "))
            ax.bar_label(bars, labels=[f"{v:.1f}x" for v in values[mode]], padding=3,
                         fontsize=8)
        finite = np.concatenate([v[np.isfinite(v)] for v in values.values()] + [np.ones(1)])
        ax.set_xscale("log")
        ax.set_xlim(min(finite.min(), 1) / 1.6, max(finite.max(), 1) * 1.8)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_yticks(y, [f"{label} [{name}]" for label, name, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"speedup {key.replace('_', ' ')}", fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=8,
                  frameon=False)
    s = report["settings"]
    fig.suptitle(f"fastrnn on {report['machine']['cpu']}: {s['threads']} thread(s), medians of "
                 f"{s['repeats']} (T,B,I,H,layers,bi); right of the dashed line is faster",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- progress
class PlainProgress:
    """The fallback when tqdm is not installed: a counter rewritten in place on stderr."""

    def __init__(self, total, desc):
        self.total, self.done, self.desc = total, 0, desc

    def update(self, n):
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def set_description(self, desc):
        self.desc = desc

    def close(self):
        print(file=sys.stderr)


class SilentProgress(PlainProgress):
    """``--no-progress``."""

    def update(self, n):
        self.done += n

    def close(self):
        pass


def progress_bar(total, enabled):
    """tqdm's bar on stderr when tqdm is installed, else PlainProgress."""
    if not enabled:
        return SilentProgress(total, "")
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainProgress(total, "bench")
    return tqdm(total=total, desc="bench", unit="run", file=sys.stderr)


# ----------------------------------------------------------------------------- main
def parse_shape(text):
    """'T,B,I,H[,L[,bi|no]]' -> Shape; argparse turns the ValueError into a usage error."""
    parts = text.split(",")
    if not 4 <= len(parts) <= 6 or (len(parts) == 6 and parts[5] not in ("bi", "no")):
        raise argparse.ArgumentTypeError(f"expected T,B,I,H[,layers[,bi|no]], got {text!r}")
    try:
        sizes = [int(p) for p in parts[:5]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers in {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return Shape(*sizes, bidirectional=parts[5:] == ["bi"], group="custom")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fastrnn bench",
        description="Time every backend on the benchmark shapes in one process (backends "
                    "alternating, medians) and print forward and forward+backward times, "
                    "speedups over the NumPy reference and torch, and GFLOP/s beside the "
                    "same-run sgemm ceiling.")
    parser.add_argument("--shapes", choices=sorted(SHAPE_SETS), default="small",
                        help="small: device inference, small, torch's default and stacked "
                             "shapes (default; about a minute); deepbench: DeepBench training, "
                             "T=50, H in 1760/2048/2560, B in 16..128 (many minutes); all: "
                             "both; tiny: two toy shapes, seconds (smoke tests)")
    parser.add_argument("--shape", action="append", type=parse_shape, metavar="T,B,I,H[,L,bi]",
                        help="measure this shape instead of a set (repeatable); L: layers "
                             "(default 1), bi: 'bi' for bidirectional (default 'no')")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads for every library, and torch's threads (default 1)")
    parser.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                        help=f"any of {', '.join(BACKENDS)} (default: all that can run here); "
                             "commas work too")
    parser.add_argument("--repeats", type=int, default=5,
                        help="samples per backend and mode; the median is reported (default 5)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall (default) or cpu: this process's CPU time, steadier on a busy "
                             "machine; only with --threads 1")
    parser.add_argument("--min-sample", type=float, default=0.05, metavar="SECONDS",
                        help="calls are repeated within a sample up to this long (default 0.05)")
    parser.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                        help="pause before each backend's turn so that the previous one's idle "
                             "threads stop spinning (default 0.25 with --threads > 1, else 0)")
    parser.add_argument("--json", metavar="PATH", help="write every setting, library and median")
    parser.add_argument("--plot", metavar="PATH", help="write a chart of the speedups (PNG, SVG...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    names = [n for item in (args.backends or BACKENDS) for n in item.split(",") if n]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; expected some of {list(BACKENDS)}")
    args.backends = [n for n in BACKENDS if n in names]
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.settle is None:
        args.settle = 0.25 if args.threads > 1 else 0.0
    if args.settle < 0:
        parser.error(f"--settle must be >= 0, got {args.settle}")
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu adds up the time of all threads; use it with --threads 1")
    return args


def set_threads(threads, backends):
    from . import threads as fastrnn_threads
    fastrnn_threads.set_num_threads(threads)
    if any(name.startswith("torch") for name in backends):
        _torch().set_num_threads(threads)


def run(args):
    """Measures everything args ask for; returns the report (a JSON-ready dict)."""
    started = time.perf_counter()
    availability = backend_availability(args.backends)
    backends = [name for name, reason in availability.items() if reason is None]
    skipped = {name: reason for name, reason in availability.items() if reason is not None}
    set_threads(args.threads, backends)
    shapes = args.shape or SHAPE_SETS[args.shapes]
    clock = Clock(args.clock, args.threads)
    report = {"schema": "fastrnn-bench/1", "command": sys.argv,
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "machine": machine_description(), "libraries": library_versions(),
              "settings": {"shapes": "custom" if args.shape else args.shapes,
                           "threads": args.threads,
                           "repeats": args.repeats, "clock": args.clock, "dtype": "float32",
                           "min_sample_s": args.min_sample, "settle_s": args.settle,
                           "backends": backends},
              "skipped": skipped, "blas": blas_description(backends), "results": []}
    progress = progress_bar(len(shapes) * args.repeats * len(backends), not args.no_progress)
    all_shares, spreads = [], []
    try:
        for shape in shapes:
            progress.set_description(shape.label)
            sgemm = measure_sgemm(shape, backends, clock, args.repeats, args.min_sample)
            samples, shares = measure_shape(shape, backends, clock, args.repeats,
                                            args.min_sample, progress, args.settle)
            all_shares += shares
            spreads += [float(np.median(np.abs(np.array(v) / np.median(v) - 1)))
                        for v in samples.values()]
            report["results"].append({"shape": {**asdict(shape), "label": shape.label},
                                      "flops": {mode: shape.flops(mode) for mode in MODES},
                                      "sgemm": sgemm,
                                      "backends": summarise(shape, samples, sgemm)})
    finally:
        progress.close()
    report["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["noise"] = {"median_cpu_share": float(np.median(all_shares)),
                       "median_spread": float(np.median(spreads))}
    report["duration_s"] = time.perf_counter() - started
    return report


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    print(format_header(report))
    print()
    print(format_table(report))
    print()
    print(format_footer(report))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
