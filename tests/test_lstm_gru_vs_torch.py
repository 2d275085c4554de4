"""fastrnn.LSTM and fastrnn.GRU against torch.nn.LSTM and torch.nn.GRU, on every backend that
has their kernels (tests/cell_cases.py decides which).

The grid: layers 1-2, bidirectional, batch_first, bias, proj_size (LSTM), float32/float64,
padded (no lengths) and packed (``lengths=``, unsorted, with a tie and a length of 1). torch
runs the same parameters, input, initial states and upstream gradients (packed with
pack_padded_sequence when there are lengths); fastrnn must give the same output, final states
and gradients of the input, the initial states and every parameter. The 'cuda' backend runs
under Numba's simulator in CI (seconds per case), so it runs two configurations per cell that
between them flip every option; the other backends run the whole grid.
"""
import itertools
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from cell_cases import backends_for, make_layer, members, random_states, torch_forward, torch_twin
from helpers import assert_close, random_array

torch = pytest.importorskip("torch")

T, B, I, H, P = 6, 5, 3, 4, 2
LENGTHS = [4, 6, 1, 3, 4]                 # unsorted, a tie, a full-length one and a 1
RTOL = {"float32": 2e-5, "float64": 1e-10}


@dataclass(frozen=True)
class Config:
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    proj_size: int
    dtype: str
    lengths: Optional[tuple]

    def __str__(self):
        return (f"L{self.num_layers}-{'bi' if self.bidirectional else 'uni'}-"
                f"{'bf' if self.batch_first else 'tm'}-{'bias' if self.bias else 'nobias'}-"
                f"P{self.proj_size}-{self.dtype}-{'packed' if self.lengths else 'padded'}")


def grid(mode):
    projections = [0, P] if mode == "LSTM" else [0]
    return [Config(*values) for values in itertools.product(
        [1, 2], [False, True], [False, True], [True, False], projections,
        ["float32", "float64"], [None, tuple(LENGTHS)])]


def covering(mode):
    """Two configurations that between them take every value of every option."""
    return [Config(2, True, True, True, P if mode == "LSTM" else 0, "float64", tuple(LENGTHS)),
            Config(1, False, False, False, 0, "float32", None)]


CASES = [pytest.param(mode, backend, config, id=f"{mode}-{backend}-{config}")
         for mode in ("LSTM", "GRU") for backend in backends_for(mode)
         for config in (covering(mode) if backend == "cuda" else grid(mode))]


def torch_run(module, x, hx, lengths, grad_out, grad_hn, batch_first):
    """torch's output (padded), final states and every gradient, as NumPy."""
    x_t = torch.from_numpy(x).requires_grad_(True)
    states = [torch.from_numpy(s).requires_grad_(True) for s in members(hx)]
    initial = tuple(states) if len(states) == 2 else states[0]
    out, final = torch_forward(module, x_t, initial, lengths, batch_first)
    final = list(final) if isinstance(final, tuple) else [final]
    loss = (out * torch.from_numpy(grad_out)).sum()
    loss = loss + sum((f * torch.from_numpy(g)).sum() for f, g in zip(final, members(grad_hn)))
    loss.backward()
    return dict(output=out.detach().numpy(), final=[f.detach().numpy() for f in final],
                grad_x=x_t.grad.numpy(), grad_hx=[s.grad.numpy() for s in states],
                grads={name: p.grad.numpy() for name, p in module.named_parameters()})


@pytest.mark.parametrize("mode,backend,config", CASES)
def test_matches_torch(mode, backend, config):
    rng = np.random.default_rng(17)
    dtype = config.dtype
    layer = make_layer(mode, I, H, config.proj_size, num_layers=config.num_layers,
                       bias=config.bias, batch_first=config.batch_first,
                       bidirectional=config.bidirectional, dtype=dtype, backend=backend, seed=3)
    module = torch_twin(layer)
    x = random_array(rng, (B, T, I) if config.batch_first else (T, B, I), dtype)
    hx = random_states(rng, layer, B)
    directions = 2 if config.bidirectional else 1
    grad_out = random_array(rng, x.shape[:2] + (directions * (config.proj_size or H),), dtype)
    grad_hn = random_states(rng, layer, B, scale=1.0)
    expected = torch_run(module, x, hx, config.lengths, grad_out, grad_hn, config.batch_first)

    lengths = None if config.lengths is None else np.array(config.lengths)
    output, h_n = layer(x, hx, lengths=lengths)
    grad_x, grad_hx = layer.backward(grad_out, grad_hn)
    rtol = RTOL[dtype]
    assert_close(output, expected["output"], dtype, rtol, what="output")
    for index, (actual, wanted) in enumerate(zip(members(h_n), expected["final"])):
        assert_close(actual, wanted, dtype, rtol, what=f"final state {index}")
    assert_close(grad_x, expected["grad_x"], dtype, rtol, what="grad_x")
    for index, (actual, wanted) in enumerate(zip(members(grad_hx), expected["grad_hx"])):
        assert_close(actual, wanted, dtype, rtol, what=f"grad of initial state {index}")
    assert list(layer.grads) == list(expected["grads"])
    for name, wanted in expected["grads"].items():
        assert_close(layer.grads[name], wanted, dtype, rtol, what=name)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_every_backend_with_the_cells_kernels_is_listed(mode):
    """The reference always has the gated cells, 'cpu' and 'cuda' (the simulator in CI) have
    had them since the gated kernels merged: none may silently drop out of the grid."""
    from fastrnn.backends import backend_status
    available = [name for name, reason in backend_status().items() if reason is None]
    assert backends_for(mode) == [name for name in ("numpy", "cpu", "cuda") if name in available]
