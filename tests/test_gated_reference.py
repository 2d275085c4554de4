"""The reference's LSTM and GRU (one layer, one direction, packed) against torch.nn.LSTM / GRU.

Each direction of a one-layer bidirectional torch module is run on a packed batch; the
reference gets that direction's parameters, the packed data and batch_sizes, and must give the
same output rows, final states and gradients of the input, the initial states and every
parameter (torch's gate order; GRU's b_hn inside the reset gate; LSTM's proj_size).
"""
import itertools

import numpy as np
import pytest

from fastrnn.backends import reference
from helpers import assert_close

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

LENGTHS = {"equal": [5, 5, 5], "ragged": [5, 3, 1], "ties": [4, 4, 2, 2]}
T, I, H, P = 5, 3, 4, 2


def torch_packed_run(module, lengths, states, rng):
    """Forward and backward of ``module`` on a random packed batch; NumPy results."""
    x = torch.tensor(rng.standard_normal((T, len(lengths), I)), requires_grad=True)
    initial = [torch.tensor(s, requires_grad=True) for s in states]
    packed = pack_padded_sequence(x, torch.tensor(lengths))
    out, final = module(packed, tuple(initial) if len(initial) == 2 else initial[0])
    final = final if isinstance(final, tuple) else (final,)
    grad_out = rng.standard_normal(out.data.shape)
    grad_final = [rng.standard_normal(f.shape) for f in final]
    loss = (out.data * torch.tensor(grad_out)).sum()
    loss = loss + sum((f * torch.tensor(g)).sum() for f, g in zip(final, grad_final))
    loss.backward()
    grad_x = pack_padded_sequence(x.grad, torch.tensor(lengths)).data.numpy()
    return dict(x=packed.data.detach().numpy(), batch_sizes=packed.batch_sizes.numpy().astype(np.int64),
                out=out.data.detach().numpy(), final=[f.detach().numpy() for f in final],
                grad_out=grad_out, grad_final=grad_final, grad_x=grad_x,
                grad_initial=[s.grad.numpy() for s in initial],
                params={k: p.detach().numpy() for k, p in module.named_parameters()},
                grads={k: p.grad.numpy() for k, p in module.named_parameters()})


def direction_parameters(params, direction):
    suffix = "_l0" + ("_reverse" if direction else "")
    return {kind: params.get(kind + suffix) for kind in
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}


CASES = list(itertools.product(LENGTHS, [0, 1], [True, False]))


@pytest.mark.parametrize("lengths,direction,bias", CASES)
@pytest.mark.parametrize("projection", [False, True])
def test_lstm_matches_torch(lengths, direction, bias, projection):
    rng = np.random.default_rng(1)
    lengths = LENGTHS[lengths]
    B, out_size = len(lengths), P if projection else H
    module = torch.nn.LSTM(I, H, bias=bias, bidirectional=True, dtype=torch.float64,
                           proj_size=P if projection else 0)
    states = [rng.standard_normal((2, B, out_size)), rng.standard_normal((2, B, H))]
    run = torch_packed_run(module, lengths, states, rng)
    w = direction_parameters(run["params"], direction)
    N = run["x"].shape[0]
    out, h_n, c_n = np.zeros((N, out_size)), np.zeros((B, out_size)), np.zeros((B, H))
    workspace = np.zeros((N, 5 * H))
    h0, c0 = states[0][direction], states[1][direction]
    reference.lstm_forward(run["x"], h0, c0, w["weight_ih"], w["weight_hh"], w["bias_ih"],
                           w["bias_hh"], w["weight_hr"], run["batch_sizes"], bool(direction),
                           out, h_n, c_n, workspace)
    halves = slice(direction * out_size, (direction + 1) * out_size)
    assert_close(out, run["out"][:, halves], "float64")
    assert_close(h_n, run["final"][0][direction], "float64")
    assert_close(c_n, run["final"][1][direction], "float64")

    grads = {kind: None if value is None else np.zeros_like(value) for kind, value in w.items()}
    grad_x, grad_h0, grad_c0 = np.zeros_like(run["x"]), np.zeros_like(h0), np.zeros_like(c0)
    reference.lstm_backward(run["x"], h0, c0, w["weight_ih"], w["weight_hh"], w["weight_hr"],
                            run["batch_sizes"], bool(direction), out, workspace,
                            np.ascontiguousarray(run["grad_out"][:, halves]),
                            run["grad_final"][0][direction], run["grad_final"][1][direction],
                            grad_x, False, grad_h0, grad_c0, grads["weight_ih"],
                            grads["weight_hh"], grads["bias_ih"], grads["bias_hh"],
                            grads["weight_hr"])
    assert_close(grad_h0, run["grad_initial"][0][direction], "float64")
    assert_close(grad_c0, run["grad_initial"][1][direction], "float64")
    expected = direction_parameters(run["grads"], direction)
    for kind, grad in grads.items():
        if grad is not None:
            assert_close(grad, expected[kind], "float64")


@pytest.mark.parametrize("lengths,direction,bias", CASES)
def test_gru_matches_torch(lengths, direction, bias):
    rng = np.random.default_rng(2)
    lengths = LENGTHS[lengths]
    B = len(lengths)
    module = torch.nn.GRU(I, H, bias=bias, bidirectional=True, dtype=torch.float64)
    states = [rng.standard_normal((2, B, H))]
    run = torch_packed_run(module, lengths, states, rng)
    w = direction_parameters(run["params"], direction)
    N = run["x"].shape[0]
    out, h_n, workspace = np.zeros((N, H)), np.zeros((B, H)), np.zeros((N, 4 * H))
    h0 = states[0][direction]
    reference.gru_forward(run["x"], h0, w["weight_ih"], w["weight_hh"], w["bias_ih"],
                          w["bias_hh"], run["batch_sizes"], bool(direction), out, h_n, workspace)
    halves = slice(direction * H, (direction + 1) * H)
    assert_close(out, run["out"][:, halves], "float64")
    assert_close(h_n, run["final"][0][direction], "float64")

    grads = {kind: None if value is None else np.zeros_like(value) for kind, value in w.items()}
    grad_x, grad_h0 = np.zeros_like(run["x"]), np.zeros_like(h0)
    reference.gru_backward(run["x"], h0, w["weight_ih"], w["weight_hh"], run["batch_sizes"],
                           bool(direction), out, workspace,
                           np.ascontiguousarray(run["grad_out"][:, halves]),
                           run["grad_final"][0][direction], grad_x, False, grad_h0,
                           grads["weight_ih"], grads["weight_hh"], grads["bias_ih"],
                           grads["bias_hh"])
    assert_close(grad_h0, run["grad_initial"][0][direction], "float64")
    expected = direction_parameters(run["grads"], direction)
    for kind, grad in grads.items():
        if grad is not None:
            assert_close(grad, expected[kind], "float64")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_input_gradient_of_both_directions_adds_up_to_torchs(cell):
    """grad_x is written by the first direction and added to by the second (accumulate_x)."""
    rng = np.random.default_rng(3)
    lengths = LENGTHS["ragged"]
    B = len(lengths)
    if cell == "lstm":
        module = torch.nn.LSTM(I, H, bidirectional=True, dtype=torch.float64)
        states = [rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))]
    else:
        module = torch.nn.GRU(I, H, bidirectional=True, dtype=torch.float64)
        states = [rng.standard_normal((2, B, H))]
    run = torch_packed_run(module, lengths, states, rng)
    N = run["x"].shape[0]
    grad_x = np.zeros_like(run["x"])
    for direction in (0, 1):
        w = direction_parameters(run["params"], direction)
        halves = slice(direction * H, (direction + 1) * H)
        grads = {k: None if v is None else np.zeros_like(v) for k, v in w.items()}
        out, h_n = np.zeros((N, H)), np.zeros((B, H))
        grad_h0 = np.zeros((B, H))
        grad_out = np.ascontiguousarray(run["grad_out"][:, halves])
        if cell == "lstm":
            workspace, c_n, grad_c0 = np.zeros((N, 5 * H)), np.zeros((B, H)), np.zeros((B, H))
            args = (run["x"], states[0][direction], states[1][direction], w["weight_ih"],
                    w["weight_hh"])
            reference.lstm_forward(*args, w["bias_ih"], w["bias_hh"], None, run["batch_sizes"],
                                   bool(direction), out, h_n, c_n, workspace)
            reference.lstm_backward(*args, None, run["batch_sizes"], bool(direction), out,
                                    workspace, grad_out, run["grad_final"][0][direction],
                                    run["grad_final"][1][direction], grad_x, direction > 0,
                                    grad_h0, grad_c0, grads["weight_ih"], grads["weight_hh"],
                                    grads["bias_ih"], grads["bias_hh"], None)
        else:
            workspace = np.zeros((N, 4 * H))
            args = (run["x"], states[0][direction], w["weight_ih"], w["weight_hh"])
            reference.gru_forward(*args, w["bias_ih"], w["bias_hh"], run["batch_sizes"],
                                  bool(direction), out, h_n, workspace)
            reference.gru_backward(*args, run["batch_sizes"], bool(direction), out, workspace,
                                   grad_out, run["grad_final"][0][direction], grad_x,
                                   direction > 0, grad_h0, grads["weight_ih"],
                                   grads["weight_hh"], grads["bias_ih"], grads["bias_hh"])
    assert_close(grad_x, run["grad_x"], "float64")
