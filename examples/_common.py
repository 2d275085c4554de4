"""What the examples share: command line, progress bar, BLAS threads, curves plot, a model.

Why a module: each example should read as its data and its training, not as argparse and
matplotlib boilerplate. The helpers know no framework (the torch example imports them too);
``ManyToOne`` wires fastrnn.nn-style modules (duck-typed: forward/backward/grads) that the
three NumPy examples share. matplotlib, tqdm and threadpoolctl are imported only when used,
matplotlib on its Agg backend, so that a plot is a file, never a window.
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np


def build_parser(description, quick_help, backends=None):
    """An ArgumentParser with ``--quick``, ``--plot PATH``, ``--seed`` and, when ``backends``
    names some, ``--backend`` (default: the first). Examples add their own options to it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--plot", metavar="PATH",
                        help="save the training curves to this image file (PNG, SVG, ...)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    if backends:
        parser.add_argument("--backend", choices=list(backends), default=backends[0],
                            help=f"fastrnn backend (default: {backends[0]})")
    return parser


def parse_args(description, quick_help, backends=None, argv=None):
    """``build_parser(...).parse_args(argv)``, for examples with no options of their own."""
    return build_parser(description, quick_help, backends).parse_args(argv)


def progress(iterable, description=None, total=None, **tqdm_options):
    """A tqdm progress bar over ``iterable`` on stderr (stdout stays for the results)."""
    from tqdm import tqdm
    return tqdm(iterable, desc=description, total=total, file=sys.stderr, dynamic_ncols=True,
                **tqdm_options)


def blas_description():
    """One line naming the BLAS libraries in use, their kernels and thread counts."""
    from threadpoolctl import threadpool_info
    pools = [f"{pool['internal_api']} {pool.get('architecture', '?')} x{pool['num_threads']}"
             for pool in threadpool_info() if pool["user_api"] == "blas"]
    return ", ".join(pools) or "no BLAS found by threadpoolctl"


@contextlib.contextmanager
def stopwatch(times, key):
    """Add the wall time of the ``with`` body to ``times[key]`` (a dict of float seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = times.get(key, 0.0) + time.perf_counter() - start


def save_curves(path, curves, title=None, xlabel="epoch"):
    """Plot ``curves`` to ``path``: one panel per ``{panel: {label: values}}`` entry.

    Example: ``save_curves("fit.png", {"loss": {"train": [...], "test": [...]},
    "accuracy": {"test": [...]}})``. Values are plotted against 1, 2, ... (epochs).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for axis, (panel, series) in zip(axes[0], curves.items()):
        for label, values in series.items():
            axis.plot(range(1, len(values) + 1), values, label=label)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(panel)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_curves_if_asked(path, curves, title):
    """``save_curves`` when ``--plot PATH`` was given, and say where the plot went."""
    if path:
        save_curves(path, curves, title=title)
        print(f"training curves saved to {path}")


class ManyToOne:
    """A many-to-one model on fastrnn.nn: [Embedding ->] fastrnn.RNN -> Linear on the last step.

    ``forward(x)`` takes ``[T, B, I]`` features (or ``[T, B]`` ids with an embedding) and
    returns the head's ``[B, O]`` output; ``backward(grad)`` sends dL/d output back through
    the head, the RNN's last step and the embedding, adding into every module's ``grads``.
    ``times["rnn"]`` sums the seconds spent in the RNN's own forward and backward calls.
    """

    def __init__(self, rnn, head, embedding=None):
        self.rnn, self.head, self.embedding = rnn, head, embedding
        self.modules = [m for m in (embedding, rnn, head) if m is not None]
        self.times = {"rnn": 0.0}
        self._rnn_output = None          # of the last forward: backward needs its shape

    def forward(self, x):
        features = self.embedding(x) if self.embedding is not None else x     # [T, B, I]
        with stopwatch(self.times, "rnn"):
            output, _ = self.rnn(features)                                     # [T, B, H]
        self._rnn_output = output
        return self.head(output[-1])                                           # [B, O]

    __call__ = forward

    def backward(self, grad_prediction):
        grad_last = self.head.backward(grad_prediction)       # raises if no forward came first
        grad_output = np.zeros_like(self._rnn_output)                          # [T, B, H]
        grad_output[-1] = grad_last
        with stopwatch(self.times, "rnn"):
            grad_features, _ = self.rnn.backward(grad_output)
        if self.embedding is not None:
            self.embedding.backward(grad_features)

    def train_step(self, optimizer, x, targets, loss_function, clip=None):
        """One update on one batch; ``clip(modules)`` clips the gradients. Returns the loss
        and the predictions made before the update."""
        optimizer.zero_grad()
        prediction = self.forward(x)
        loss, grad_prediction = loss_function(prediction, targets)
        self.backward(grad_prediction)
        if clip is not None:
            clip(self.modules)
        optimizer.step()
        return loss, prediction
