"""One problem per shape, shared by every engine, and the check that an engine solves it.

Why a check before timing: a peer that computes something else (a transposed weight, the other
bias convention, a direction reversed) would win the table for the wrong reason; a wrong peer
is worse than none. So every engine's forward (and, where it has one, its gradients) is
compared with fastrnn computing in float64 on the same weights, and an engine that disagrees
is dropped from the run with the error it made.

Result names: ``output`` [T, B, D*H], ``h_n`` [L*D, B, H] (and LSTM's ``c_n``), ``grad_input``
[T, B, I] and ``grad_<parameter>`` in torch's parameter names; the loss is
``sum(output * grad_out)``, so backward starts from ``grad_out`` and a zero gradient of the
final states. A ragged problem (``lengths``) has x and grad_out zero past each sequence's
length, and its outputs there are zero, as torch's padded PackedSequence output is.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .engines import Skip

# An engine's array may differ from the float64 answer by this share of that array's largest
# magnitude. float32 arithmetic over hundreds of steps and sums over T*B terms stay near 1e-5;
# a wrong formula is off by tens of percent.
TOLERANCE = 2e-3


@dataclass
class Problem:
    """The same weights and inputs for every engine on one shape (float32)."""
    shape: object
    weights: dict          # torch's parameter names -> arrays
    x: np.ndarray          # [T, B, I]
    grad_out: np.ndarray   # [T, B, D*H]
    lengths: Optional[np.ndarray] = None     # [B] int64, in the batch's (unsorted) order


def layer_class(cell):
    """fastrnn.RNN, fastrnn.LSTM or fastrnn.GRU."""
    import fastrnn
    return getattr(fastrnn, cell.upper())


def state_results(h_n):
    """{'h_n': ...} from a layer's final state, with 'c_n' too for LSTM's (h_n, c_n) pair."""
    if isinstance(h_n, tuple):
        return {"h_n": h_n[0], "c_n": h_n[1]}
    return {"h_n": h_n}


def past_lengths(lengths, steps):
    """[T, B, 1] True where step t is past sequence b's length."""
    return (np.arange(steps)[:, None] >= lengths[None, :])[..., None]


def make_problem(shape, seed=0):
    """torch's initialisation (uniform in +-1/sqrt(H)) by fastrnn's reference layer; x and
    grad_out standard normal (zero past the lengths of a ragged shape)."""
    layer = layer_class(shape.cell)(shape.I, shape.H, shape.layers,
                                    bidirectional=shape.bidirectional, backend="numpy",
                                    seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape.T, shape.B, shape.I), dtype=np.float32)
    grad_out = rng.standard_normal((shape.T, shape.B, shape.directions * shape.H),
                                   dtype=np.float32)
    lengths = shape.lengths(seed)
    if lengths is not None:
        padding = past_lengths(lengths, shape.T)
        x, grad_out = np.where(padding, 0, x), np.where(padding, 0, grad_out)
    return Problem(shape, layer.state_dict(), x, grad_out, lengths)


def _oracle_backend():
    import fastrnn
    return "cpu" if fastrnn.backend_status()["cpu"] is None else "numpy"


def expected_results(problem):
    """Every result name -> fastrnn's answer in float64."""
    shape = problem.shape
    layer = layer_class(shape.cell)(shape.I, shape.H, shape.layers,
                                    bidirectional=shape.bidirectional, dtype="float64",
                                    backend=_oracle_backend())
    layer.load_state_dict(problem.weights)
    output, h_n = layer(problem.x.astype(np.float64), lengths=problem.lengths)
    grad_input, _ = layer.backward(problem.grad_out.astype(np.float64))
    grads = {f"grad_{name}": np.array(grad) for name, grad in layer.grads.items()}
    states = {name: np.array(state) for name, state in state_results(h_n).items()}
    return {"output": np.array(output), **states, "grad_input": np.array(grad_input), **grads}


def worst_error(results, expected):
    """(name, error) of the result furthest from the expected one, the error as a share of
    the expected array's largest magnitude; names the engine does not give are not compared."""
    worst = ("", 0.0)
    for name, value in results.items():
        want = expected[name]
        value = np.asarray(value, dtype=np.float64).reshape(want.shape)
        scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-6)
        error = float(np.max(np.abs(value - want), initial=0.0)) / scale
        if not error <= worst[1]:          # NaN counts as the worst
            worst = (name, error)
    return worst


def check_agreement(results, expected, tolerance=TOLERANCE):
    """Raises Skip naming the worst result when an engine's answer is not fastrnn's."""
    if not results:
        raise Skip("gave no results to check against fastrnn")
    name, error = worst_error(results, expected)
    if not error <= tolerance:
        raise Skip(f"disagrees with fastrnn: {name} is off by {error:.1e} of its largest "
                   f"value (tolerance {tolerance:.0e})")
