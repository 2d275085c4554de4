"""Central finite differences, float64, on the NumPy reference: the oracle's own check."""
import numpy as np
import pytest

import fastrnn
from helpers import central_difference

def loss_and_upstream(rng, layer, x, hx):
    """A scalar loss L = sum(out * A) + sum(h_n * C) with fixed random A, C."""
    out, h_n = layer(x, hx)
    weight_out = rng.standard_normal(out.shape)
    weight_hn = rng.standard_normal(h_n.shape)

    def loss():
        with fastrnn.no_grad():
            o, h = layer(x, hx)
        return float(np.sum(o * weight_out) + np.sum(h * weight_hn))
    return loss, weight_out, weight_hn


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_reference_gradients_match_finite_differences(nonlinearity, bidirectional, num_layers):
    rng = np.random.default_rng(num_layers * 4 + bidirectional * 2 + (nonlinearity == "relu"))
    layer = fastrnn.RNN(3, 4, num_layers=num_layers, nonlinearity=nonlinearity,
                        bidirectional=bidirectional, dtype="float64", backend="numpy", seed=3)
    x = rng.standard_normal((5, 2, 3))
    hx = rng.standard_normal((num_layers * (2 if bidirectional else 1), 2, 4))
    loss, weight_out, weight_hn = loss_and_upstream(rng, layer, x, hx)
    layer(x, hx)
    grad_x, grad_hx = layer.backward(weight_out, weight_hn)
    targets = [("input", x, grad_x), ("hx", hx, grad_hx)]
    targets += [(name, param, layer.grads[name]) for name, param in layer.named_parameters()]
    for what, array, analytic in targets:
        for _ in range(6):            # a few random entries of each array
            index = tuple(rng.integers(0, n) for n in array.shape)
            numeric = central_difference(loss, array, index)
            assert analytic[index] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (what, index)
