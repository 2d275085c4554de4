"""The engines the bench times: fastrnn's layers and the peers a CPU user would pick instead.

Why a registry of small records: each engine family lives in its own module and imports its
library only when it is asked to run (``import fastrnn.bench`` imports no torch, ONNX Runtime
or JAX). Every engine answers the same three questions: can it run here (``unavailable``), how
does it get ``threads`` threads (``prepare``, called once before any runner exists), and what
are its timed calls on one shape (``make_runner`` -> Runner). A shape names its cell (RNN,
LSTM, GRU) and may be ragged; an engine without that cell or without ragged batches raises
Skip from make_runner, and the report says so.
"""
import contextlib
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Optional


class Skip(Exception):
    """An engine cannot run (here, or on this shape); the message says why."""


@dataclass
class Runner:
    """The timed calls of one engine on one shape, and what the checks need.

    ``forward`` runs one inference call, ``forward_backward`` one training call (None: the
    engine has no backward). Each completes its work before returning (GPUs synchronised).
    ``no_grad`` is entered around a whole sample of ``forward`` calls, as a user wraps an
    inference loop. ``threads()`` is the thread count the library itself reports (None: it
    cannot say); it is read inside each sample. ``results()`` gives the arrays the agreement
    check compares, under the names of ``fastrnn.bench.agreement``.
    """
    forward: Callable[[], None]
    forward_backward: Optional[Callable[[], None]]
    results: Callable[[], dict]
    no_grad: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    threads: Callable[[], Optional[int]] = lambda: None


@dataclass(frozen=True)
class Engine:
    name: str
    module: str                    # the module under fastrnn.bench.engines that builds it
    variant: str = ""              # passed to that module's functions (e.g. a backend name)
    device: str = "cpu"
    sections: tuple = ("throughput", "ragged", "latency")
    default: bool = True           # run when --engines is not given
    note: str = field(default="", compare=False)

    def _module(self):
        return importlib.import_module(f"{__name__}.{self.module}")

    def unavailable(self):
        """None if this engine can run here, else why not."""
        return self._module().unavailable(self.variant)

    def prepare(self, threads):
        """Give the engine's library ``threads`` threads; returns a note or None."""
        return self._module().prepare(self.variant, threads)

    def make_runner(self, problem):
        return self._module().make_runner(self.variant, problem)


ENGINES = [
    Engine("fastrnn", "fastrnn_engine", "cpu",
           note="fastrnn.RNN/LSTM/GRU, compiled CPU kernels; ragged: lengths="),
    Engine("fastrnn-padded", "fastrnn_engine", "padded", sections=("ragged",),
           note="fastrnn on a ragged batch padded to its longest, no lengths"),
    Engine("fastrnn.step", "fastrnn_engine", "step", sections=("latency",),
           note="fastrnn.RNN.step(x_t, h), once per time step"),
    Engine("fastrnn.torch", "torch_engine", "fastrnn.torch",
           note="fastrnn.torch.RNN (torch.nn.RNN's interface on fastrnn's kernels)"),
    Engine("torch", "torch_engine", "torch",
           note="torch.nn.RNN/LSTM/GRU; ragged: a PackedSequence"),
    Engine("onnxruntime", "onnxruntime_engine", note="ONNX Runtime, one RNN/LSTM/GRU node per "
           "layer; ragged: sequence_lens; forward only"),
    Engine("jax", "jax_engine", note="jax.lax.scan of the cell's step, jit-compiled"),
    Engine("fastrnn-numpy", "fastrnn_engine", "numpy", default=False,
           note="fastrnn's pure-NumPy reference backend"),
    Engine("fastrnn-cuda", "fastrnn_engine", "cuda", device="cuda",
           note="fastrnn.RNN/LSTM/GRU, Numba CUDA kernels"),
    Engine("torch-cuda", "torch_engine", "torch-cuda", device="cuda",
           note="torch.nn.RNN/LSTM/GRU on CUDA (cuDNN, TF32 off)"),
]
BY_NAME = {engine.name: engine for engine in ENGINES}


def baseline_name(engine):
    """The fastrnn engine an engine is compared with: the one on the same device."""
    return "fastrnn-cuda" if engine.device == "cuda" else "fastrnn"


def library_available(module_name):
    """Whether ``import module_name`` can work, without importing it."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False
