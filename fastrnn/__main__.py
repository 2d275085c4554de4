"""Command line: ``python -m fastrnn info`` (what is installed and usable here) and
``python -m fastrnn bench`` (the benchmark table, see fastrnn/bench.py).

Kept to argument parsing and printing; the work lives in the modules it calls.
"""
import argparse
import platform
import sys


def blas_report():
    """One line per BLAS library loaded in this process (after the kernels are imported)."""
    from threadpoolctl import threadpool_info
    from . import backends
    backends.backend_status()          # imports the compiled kernels, which load SciPy's BLAS
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
    import fastrnn
    print(f"fastrnn {fastrnn.__version__} (Python {platform.python_version()}, "
          f"NumPy {numpy.__version__}, SciPy {scipy.__version__})")
    print("backends:")
    for name, reason in fastrnn.backend_status().items():
        print(f"  {name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    print("BLAS:")
    print("\n".join(blas_report()))
    return 0


def bench(args):
    from .bench import main as bench_main
    return bench_main(args.bench_args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, available backends, BLAS and its threads").set_defaults(run=info)
    bench_parser = commands.add_parser("bench", help="benchmark the backends (see --help)", add_help=False)
    bench_parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench_parser.set_defaults(run=bench)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
