"""LSTM and GRU (issue 14): ``python -m fastrnn bench --cells lstm,gru --sections throughput
--clock cpu``, plus the one thing the command does not offer: ``--variant`` forces the float32
step kernel's variant (avx512, avx2, generic), to check the AVX2 path on an AVX-512 machine
(design.md, "Performance protocol"). Every other option goes to the bench (later ones win).

    taskset -c 0 python benchmarks/gated.py [--variant avx2] [bench options, e.g. --repeats 9]

Targets (issue 14), read off the table: fastrnn forward + backward >= 4x torch at
(96,1,64,64) (torch's rel >= 4x), >= 2x at (100,16,64,64); at (100,32,256,256) LSTM >= 1.0x and
GRU >= 1.2x; every shape with B >= 16 at >= 90% of the limit (fastrnn's f+b %lim).

Until 2026-12-02 this script timed the kernels' own calls (no layer) beside torch; the bench
times the layers, as a user calls them: benchmarks/results/*_gated_* came from that script.
"""
import argparse
import sys

from fastrnn.__main__ import main as fastrnn_main

BENCH = ["bench", "--cells", "lstm,gru", "--sections", "throughput", "--clock", "cpu"]


def main(argv=None):
    parser = argparse.ArgumentParser(add_help=False)        # --help: the bench's
    parser.add_argument("--variant", help="the float32 step-kernel variant")
    args, bench_args = parser.parse_known_args(argv)
    if args.variant:
        from fastrnn.backends import cpu
        cpu.use_step_kernel(args.variant)
    return fastrnn_main(BENCH + bench_args)


if __name__ == "__main__":
    sys.exit(main())
