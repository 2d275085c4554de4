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
    if fastrnn.backend_status()["cpu"] is None:
        from .backends import cpu
        print(f"cpu kernels: step kernel {cpu.step_kernel_name()}, "
              f"{fastrnn.get_num_threads()} BLAS thread(s) (fastrnn.set_num_threads)")
        for variable, why in cpu.openblas_setup_report().items():
            print(f"  {variable}: {why}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:      # bench parses its own options (see python -m fastrnn bench --help)
        from .bench import main as bench_main
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, available backends, BLAS and its threads").set_defaults(run=info)
    commands.add_parser("bench", help="benchmark the backends (options: python -m fastrnn bench --help)")
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
