"""Builds the Cython kernels in csrc/ into fastrnn._rnn_cpu (every cell: rnn_cpu.pyx includes
one .pxi per cell).

Metadata lives in pyproject.toml; this file only declares the extension, because it needs
numpy's headers and optimisation flags that the kernels rely on to vectorise their loops.

Portability: the build targets the compiler's baseline ISA (no -march=native), so one wheel
runs on any x86-64 (or other) CPU. The float32 step kernel (csrc/step_gemm.h) is compiled
three times inside the same object, for AVX-512, AVX2+FMA and the baseline, through GCC/Clang
target pragmas, and picks the widest variant the CPU supports when the module loads (runtime
dispatch); other compilers get the baseline variant only. Set FASTRNN_NATIVE=1 to add
-march=native for a local build that will only run on this machine's CPU.
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = ["-O3"]
if os.environ.get("FASTRNN_NATIVE") == "1":
    compile_args.append("-march=native")

extension = Extension(
    "fastrnn._rnn_cpu",
    sources=["csrc/rnn_cpu.pyx"],
    depends=glob.glob("csrc/*.h") + glob.glob("csrc/*.pxd") + glob.glob("csrc/*.pxi"),
    include_dirs=[numpy.get_include(), "csrc"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=compile_args,
)

setup(
    ext_modules=cythonize(
        [extension],
        language_level=3,
        include_path=["csrc"],      # the .pxd declarations beside their headers
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
