"""Builds the Cython kernels in csrc/ into the package's compiled modules (fastrnn._rnn_cpu, ...;
rnn_cpu.pyx includes one .pxi per cell).

Metadata lives in pyproject.toml; this file only declares the extensions, because they need
numpy's headers and optimisation flags that the kernels rely on to vectorise their loops.
To add a kernel module, append an ``Extension`` to ``EXTENSIONS``: every entry gets the same
build options (below), so a release build, a debug build and a sanitizer build differ in one place.

Portability: the build targets the compiler's baseline ISA (no -march=native), so one wheel
runs on any x86-64 (or other) CPU. The float32 step kernel (csrc/step_gemm.h) is compiled
three times inside the same object, for AVX-512, AVX2+FMA and the baseline, through GCC/Clang
target pragmas, and picks the widest variant the CPU supports when the module loads (runtime
dispatch); other compilers get the baseline variant only.

Build options (environment variables, read at build time only):
- default (release): -O3, no debug info (Python's own CFLAGS carry -g; a wheel does not need
  it and it tripled the .so's size), symbols stripped at link time.
- FASTRNN_NATIVE=1: add -march=native, for a local build that runs only on this machine's CPU.
- FASTRNN_DEBUG=1: keep debug info and symbols (for gdb/perf on a local build).
- FASTRNN_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer (any UB aborts), with
  debug info and frame pointers for readable stacks. Python must run with the ASan runtime
  preloaded; .ci/run shows how (GCC or Clang only).
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CSRC = "csrc"

EXTENSIONS = [
    Extension(
        "fastrnn._rnn_cpu",
        sources=[f"{CSRC}/rnn_cpu.pyx"],
        depends=glob.glob(f"{CSRC}/*.h") + glob.glob(f"{CSRC}/*.pxd") + glob.glob(f"{CSRC}/*.pxi"),
    ),
]

SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]


def build_flags(env=os.environ):
    """(compile args, link args) for every extension, from the FASTRNN_* build switches."""
    compile_args, link_args = ["-O3"], []
    if env.get("FASTRNN_NATIVE") == "1":
        compile_args.append("-march=native")
    if env.get("FASTRNN_SANITIZE") == "1":
        # -O1 keeps the stacks exact; these flags come after Python's CFLAGS, so they win.
        compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", *SANITIZE_FLAGS]
        link_args = list(SANITIZE_FLAGS)
    elif env.get("FASTRNN_DEBUG") != "1":
        compile_args.append("-g0")   # overrides the -g in Python's CFLAGS
        link_args.append("-s")       # strip the symbol table (the module's exports stay)
    return compile_args, link_args


def configure(extensions):
    """Give every extension the headers, macros and flags the kernels are built with."""
    compile_args, link_args = build_flags()
    for extension in extensions:
        extension.include_dirs += [numpy.get_include(), CSRC]
        extension.define_macros += [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        extension.extra_compile_args += compile_args
        extension.extra_link_args += link_args
    return extensions


setup(
    ext_modules=cythonize(
        configure(EXTENSIONS),
        language_level=3,
        include_path=[CSRC],      # the .pxd declarations beside their headers
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
