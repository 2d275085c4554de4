"""The command line: ``python -m fastrnn`` (or ``fastrnn``) ``info`` | ``bench`` | ``--version``.

Why it is built this way: one parser tree, so every command has full ``--help`` and the same
behaviour a user expects of a command-line tool: a bare call prints help, ``--version``
answers, a bad option is one line on stderr and exit status 2, and a reader that closes the
pipe early (``python -m fastrnn bench | head -1``) ends the program quietly. The work lives
in the modules it calls (``fastrnn.bench`` for the benchmark).
"""
import argparse
import os
import platform
import sys

import fastrnn


class CommandParser(argparse.ArgumentParser):
    """argparse, but an error is one line: what was wrong and where to read more."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_name():
    """How the user called us: ``fastrnn`` (the installed script) or ``python -m fastrnn``."""
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    return "python -m fastrnn" if name in ("__main__.py", "-c", "") else name


def blas_report():
    """One line per BLAS library loaded in this process (after the kernels are imported)."""
    from threadpoolctl import threadpool_info
    fastrnn.backend_status()          # imports the compiled kernels, which load SciPy's BLAS
    lines = []
    for pool in threadpool_info():
        if pool.get("user_api") != "blas":
            continue
        lines.append(f"  {pool.get('internal_api')} {pool.get('version')} "
                     f"({pool.get('architecture', '?')} kernels, {pool.get('num_threads')} threads) "
                     f"{pool.get('filepath')}")
    return lines or ["  (no BLAS library reported by threadpoolctl)"]


def info(_args):
    import numpy
    import scipy
    print(f"fastrnn {fastrnn.__version__} (Python {platform.python_version()}, "
          f"NumPy {numpy.__version__}, SciPy {scipy.__version__})")
    print("backends:")
    for name, reason in fastrnn.backend_status().items():
        print(f"  {name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    print("BLAS:")
    print("\n".join(blas_report()))
    if fastrnn.backend_status()["cpu"] is None:
        from .backends import cpu
        print(f"cpu kernels: step kernel {cpu.step_kernel_name()}, "
              f"{fastrnn.get_num_threads()} BLAS thread(s) (fastrnn.set_num_threads)")
        for variable, why in cpu.openblas_setup_report().items():
            print(f"  {variable}: {why}")
    return 0


def make_parser():
    from .bench import cli as bench_cli
    prog = command_name()
    parser = CommandParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="fastrnn: an Elman RNN whose forward and BPTT time loops are compiled "
                    "kernels,\nwith torch.nn.RNN's interface.",
        epilog=f"'{prog} COMMAND --help' describes a command.")
    parser.add_argument("--version", action="version", version=f"fastrnn {fastrnn.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("info", help="version, the backends usable here (and why not), the BLAS "
                                     "libraries with their kernels and threads").set_defaults(
        run=info)
    bench = commands.add_parser("bench", help="time fastrnn against the limit of this machine "
                                              "(its matrix products) and against torch, ONNX "
                                              "Runtime and JAX")
    bench_cli.add_arguments(bench)
    bench.set_defaults(run=bench_cli.main, check=bench_cli.check_args, parser=bench)
    return parser


def run(argv):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if hasattr(args, "check"):
        args.check(args.parser, args)
    return args.run(args)


def main(argv=None):
    """Entry point of ``python -m fastrnn`` and of the ``fastrnn`` script."""
    try:
        status = run(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader closed the pipe (``| head``): point stdout at /dev/null so that the
        # interpreter's final flush does not fail again, and stop quietly (Python's advice).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{command_name()}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
