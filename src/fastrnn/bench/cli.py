"""The options of ``python -m fastrnn bench`` and what it does with them.

Why options are added to a parser made elsewhere: ``python -m fastrnn`` owns the command line
(``--version``, one-line errors, a closed pipe); ``bench`` is one of its subcommands, so its
``--help`` and its errors look like every other command's. Measuring is run.run's job and
writing is report's and plot's; this module only turns options into Settings and outputs.
"""
import argparse
import os
import textwrap

from . import limit, report, shapes
from .engines import ENGINES, BY_NAME
from .run import SECTIONS, Settings

PARAGRAPHS = [
    "Time fastrnn on the benchmark shapes beside the peers installed here (torch.nn.RNN, ONNX "
    "Runtime's RNN operator, JAX's lax.scan) and beside the limit: the time of just the matrix "
    "products each shape needs, on the same BLAS and threads, in the same run. --cells lstm,gru "
    "does the same for fastrnn.LSTM and fastrnn.GRU against torch.nn.LSTM/GRU, ONNX Runtime's "
    "LSTM/GRU operators and JAX (their limit: the same products, 4H or 3H wide on the gate "
    "side).",
    "How it measures: one process; every engine is first checked against fastrnn (float64) on "
    "the same weights, and left out with its error if it disagrees; then engines take turns "
    "within each repeat (the order rotates) and the median of --repeats samples is kept; a "
    "sample repeats a call for at least --min-sample seconds, so microsecond calls are timed "
    "over thousands of calls.",
    "Sections: throughput (forward, and forward + backward: ms per call, time relative to "
    "fastrnn, share of the limit); ragged (a batch of sequences of different lengths: fastrnn "
    "with lengths= against fastrnn on the same batch padded to its longest sequence, torch on a "
    "PackedSequence, ONNX Runtime with sequence_lens; and an equal-lengths batch given as "
    "lengths against the same without them; 64 sequences, lengths 10..200, I=H=256, and "
    "(100,16,64,64) with all lengths 100, whatever the shapes); latency (us per call at T=1 "
    "and T=16, B=1, I=H=64, no grad, against torch.nn.RNN; fastrnn.step is timed when the "
    "layer has a step method; the Elman RNN only, whatever --cells says).",
    "The limit, exactly: " + limit.HOW + ".",
    "Threads: --threads N (default 1) is applied to every engine: fastrnn.set_num_threads (it "
    "loads the kernels' BLAS first, so the limit reaches it, and sets NumPy's BLAS too); "
    "torch's set_num_threads; ONNX Runtime's intra-op threads (one inter-op thread); JAX: XLA "
    "has no thread setting, so the bench starts JAX in its own process with its affinity "
    "narrowed to N CPUs (XLA sizes its pools from that; the affinity is then given back) and, "
    "for N = 1, adds --xla_cpu_multi_thread_eigen=false to XLA_FLAGS. Inside each sample the "
    "bench reads the thread count each library reports and the process's CPU time / wall "
    "time, and warns when an engine ran more threads than asked. Take single-thread figures "
    "pinned to one core:",
]
DESCRIPTION = "\n\n".join(textwrap.fill(p, 92, break_on_hyphens=False) for p in PARAGRAPHS) \
    + "\n    taskset -c 0 python -m fastrnn bench"

EPILOG = """\
engines (default: all that can run here except fastrnn-numpy):
""" + "\n".join(f"  {e.name:14s} {e.note}" for e in ENGINES) + """

examples:
  taskset -c 0 python -m fastrnn bench                    the default shapes and latency
  taskset -c 0 python -m fastrnn bench --cells rnn,lstm,gru --clock cpu
  python -m fastrnn bench --cells lstm --sections ragged  LSTM on the ragged batch
  python -m fastrnn bench --shape 200,8,128,128 --engines fastrnn torch
  python -m fastrnn bench --format csv -o run.json -o run.md | head -3
  python -m fastrnn bench --shapes deepbench --threads 2 --plot deepbench.png"""


def _names(values, known, what):
    """Names given as separate words or comma lists, checked against ``known``."""
    names = [name for value in values for name in value.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown)}; expected some "
                                         f"of {', '.join(known)}")
    return names


def _output(path):
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in report.SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"cannot tell the format of {path!r} from its suffix; expected one of "
            f"{', '.join(report.SUFFIXES)}")
    return path, report.SUFFIXES[suffix]


def add_arguments(parser):
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--shapes", choices=sorted(shapes.SHAPE_SETS), default="small",
        help="small (default, about two minutes): device inference, small, torch's default and "
             "stacked shapes; deepbench: DeepBench training, T=50, H in 1760/2048/2560, B in "
             "16..128 (many minutes); all: both; tiny: toy shapes and toy ragged batches "
             "(seconds, for tests)")
    add("--cells", nargs="+", default=["rnn"], metavar="CELL",
        help="rnn, lstm, gru (commas work too; default rnn): the cells the throughput and "
             "ragged sections time, each shape once per cell; lstm and gru each take about "
             "twice as long as rnn (the small set pinned to one core of a busy machine: rnn "
             "1.5 minutes, rnn,lstm,gru 7)")
    add("--shape", action="append", type=shapes.parse_shape, metavar="T,B,I,H[,L[,bi|uni]]",
        help="time this shape instead of a set (repeatable); L: layers (default 1); bi: "
             "bidirectional (default uni)")
    add("--engines", "--backends", nargs="+", default=[], metavar="NAME",
        help="engines to run (names below; commas work too); default: all that can run here "
             "except fastrnn-numpy")
    add("--sections", nargs="+", default=list(SECTIONS), metavar="NAME",
        help="throughput, ragged and/or latency (default all three)")
    add("--threads", type=int, default=1, help="threads for every engine (default 1)")
    add("--repeats", type=int, default=5,
        help="samples per engine and mode; the median is reported (default 5)")
    add("--clock", choices=("wall", "cpu"), default="wall",
        help="wall (default), or cpu: this process's CPU time, steadier on a busy machine; "
             "only with --threads 1")
    add("--min-sample", type=float, default=0.05, metavar="SECONDS",
        help="a sample repeats calls for at least this long (default 0.05)")
    add("--settle", type=float, default=None, metavar="SECONDS",
        help="pause before each engine's turn, so that the previous engine's idle threads stop "
             "spinning (default 0.25 with --threads > 1, else 0)")
    add("--format", choices=report.FORMATS, default="text",
        help="format of the report on stdout (default text, <= 100 columns)")
    add("-o", "--output", action="append", type=_output, default=[], metavar="PATH",
        help="also write the report to PATH, in the format its suffix names: "
             f"{', '.join(f'{k} {v}' for k, v in report.SUFFIXES.items())} (repeatable)")
    add("--json", metavar="PATH", help="also write the full JSON record to PATH")
    add("--plot", metavar="PATH", help="also write a chart (PNG, SVG, PDF; needs matplotlib)")
    add("--no-progress", action="store_true", help="no progress bar on stderr")


def check_args(parser, args):
    """The checks argparse cannot express; a failure is parser.error (one line, exit 2)."""
    try:
        args.engines = _names(args.engines, list(BY_NAME), "engine(s)")
        args.sections = _names(args.sections, SECTIONS, "section(s)")
        args.cells = list(dict.fromkeys(_names(args.cells, shapes.CELLS, "cell(s)")))
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    for option, value, low in (("--threads", args.threads, 1), ("--repeats", args.repeats, 1),
                               ("--min-sample", args.min_sample, 0)):
        if value < low:
            parser.error(f"{option} must be >= {low}, got {value}")
    if args.settle is None:
        args.settle = 0.25 if args.threads > 1 else 0.0
    if args.settle < 0:
        parser.error(f"--settle must be >= 0, got {args.settle}")
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu adds up the time of all threads; use it with --threads 1")
    if args.json:
        args.output.append((args.json, "json"))


def settings_from_args(args):
    return Settings(shapes=args.shape or shapes.SHAPE_SETS[args.shapes],
                    shape_set="custom" if args.shape else args.shapes,
                    cells=tuple(args.cells), engines=tuple(args.engines),
                    sections=tuple(args.sections),
                    threads=args.threads, repeats=args.repeats, clock=args.clock,
                    min_sample_s=args.min_sample, settle_s=args.settle,
                    progress=not args.no_progress)


def _turns(settings):
    """How many engine turns the run will take (for the progress bar)."""
    from .run import section_shapes, select_engines
    engines, _ = select_engines(settings.engines)
    turns = 0
    for section in settings.sections:
        runners = sum(section in e.sections for e in engines) + 2 * (section == "throughput")
        turns += len(section_shapes(section, settings)) * runners    # + the limit, its calls
    return turns * settings.repeats


def main(args):
    """Runs the bench for parsed ``args``; prints the report, writes the files asked for."""
    from .plot import write_plot
    from .progress import progress_bar
    from .run import run
    settings = settings_from_args(args)
    progress = progress_bar(_turns(settings), settings.progress)
    try:
        result = run(settings, progress)
    finally:
        progress.close()
    for path, fmt in args.output:
        with open(path, "w") as out:
            out.write(report.format_report(result, fmt))
    if args.plot:
        write_plot(result, args.plot)
    print(report.format_report(result, args.format), end="")
    return 0
