"""Test session setup: where the 'cuda' backend's tests run.

CI has no GPU, so by default the 'cuda' backend runs under Numba's CUDA simulator. The
simulator is chosen when numba is first imported, so this file (which pytest imports before
any test module) sets ``NUMBA_ENABLE_CUDASIM=1`` at import time.

To test on a real GPU instead, set ``FASTRNN_TEST_REAL_GPU=1``; this file then leaves the
simulator off, tests/test_cuda_gpu.py runs (it is skipped otherwise) and tests/test_cuda_sim.py
runs its tiny cases on the device too:

    FASTRNN_TEST_REAL_GPU=1 python -m pytest -m cuda        # the real-GPU suite only
    FASTRNN_TEST_REAL_GPU=1 python -m pytest tests/test_cuda_sim.py tests/test_cuda_gpu.py
"""
import os

REAL_GPU_REQUESTED = os.environ.get("FASTRNN_TEST_REAL_GPU") == "1"

if not REAL_GPU_REQUESTED:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
