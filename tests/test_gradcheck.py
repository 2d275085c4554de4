"""Central finite differences, float64, on the NumPy reference: the oracle's own check, for
every cell (Elman tanh and relu, LSTM with and without projection, GRU)."""
import numpy as np
import pytest

import fastrnn
from cell_cases import members, random_states
from helpers import central_difference

CELLS = {"tanh": lambda **kw: fastrnn.RNN(3, 4, nonlinearity="tanh", **kw),
         "relu": lambda **kw: fastrnn.RNN(3, 4, nonlinearity="relu", **kw),
         "LSTM": lambda **kw: fastrnn.LSTM(3, 4, **kw),
         "LSTM-proj": lambda **kw: fastrnn.LSTM(3, 4, proj_size=2, **kw),
         "GRU": lambda **kw: fastrnn.GRU(3, 4, **kw)}


def loss_and_upstream(rng, layer, x, hx):
    """A scalar loss L = sum(out * A) + sum(h_n * C) (+ sum(c_n * E) for LSTM) with fixed
    random A, C, E; returns (loss function, A, the final states' weights)."""
    out, h_n = layer(x, hx)
    weight_out = rng.standard_normal(out.shape)
    weight_final = [rng.standard_normal(state.shape) for state in members(h_n)]

    def loss():
        with fastrnn.no_grad():
            o, final = layer(x, hx)
        return float(np.sum(o * weight_out)
                     + sum(np.sum(f * w) for f, w in zip(members(final), weight_final)))
    return loss, weight_out, weight_final


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_reference_gradients_match_finite_differences(cell, bidirectional, num_layers):
    rng = np.random.default_rng(num_layers * 4 + bidirectional * 2 + sorted(CELLS).index(cell))
    layer = CELLS[cell](num_layers=num_layers, bidirectional=bidirectional, dtype="float64",
                        backend="numpy", seed=3)
    x = rng.standard_normal((5, 2, 3))
    hx = random_states(rng, layer, 2, scale=1.0)
    loss, weight_out, weight_final = loss_and_upstream(rng, layer, x, hx)
    layer(x, hx)
    grad_final = tuple(weight_final) if len(weight_final) == 2 else weight_final[0]
    grad_x, grad_hx = layer.backward(weight_out, grad_final)
    targets = [("input", x, grad_x)]
    targets += [(f"hx[{i}]", s, g) for i, (s, g) in enumerate(zip(members(hx), members(grad_hx)))]
    targets += [(name, param, layer.grads[name]) for name, param in layer.named_parameters()]
    for what, array, analytic in targets:
        for _ in range(6):            # a few random entries of each array
            index = tuple(rng.integers(0, n) for n in array.shape)
            numeric = central_difference(loss, array, index)
            assert analytic[index] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (what, index)
