"""Builds the Cython kernels in csrc/ into fastrnn._rnn_cpu.

Metadata lives in pyproject.toml; this file only declares the extension, because it needs
numpy's headers and optimisation flags that the kernels rely on to vectorise the activation loops.
"""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extension = Extension(
    "fastrnn._rnn_cpu",
    sources=["csrc/rnn_cpu.pyx"],
    include_dirs=[numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O3"],
)

setup(
    ext_modules=cythonize(
        [extension],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
