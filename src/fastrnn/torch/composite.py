"""The stacked recurrent layer (Elman, LSTM, GRU) written in plain, differentiable torch operations.

Why it exists: the fused operators compute a forward and ONE backward; derivatives of higher
order (double backward for gradient penalties, gradgradcheck, Hessians) and forward-mode
derivatives (torch.func.jvp, jacfwd) need the computation as something torch can differentiate
itself. autograd.py uses this module only there: torch.func differentiates it, and first-order
gradients never come here. It is written to be read (one step at a time, like the NumPy
reference) and follows the operators' contract exactly: the same inputs (equal-length [T, B, I]
or packed [N, I] with batch_sizes; the state as hx and cx, cx of width 0 but for the LSTM), the
same packed semantics (step t computes the first batch_sizes[t] sequences; the reverse
direction starts each sequence at its own last step), the same outputs (output, h_n, c_n, and
the layer outputs the workspace holds). The cells are torch's (design.md, "Gated cells"):
LSTM gates i, f, g, o and h = W_hr (o * tanh(c)) with a projection; GRU gates r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
"""
import functools

import torch
from torch import Tensor

from .ops import Config


def _elman_step(activation, projected, recurrent, states, w_hr):
    """(h,) of one Elman step: activation(x W_ih^T + b_ih + h_prev W_hh^T + b_hh)."""
    return (activation(projected + recurrent),)


def _lstm_step(projected, recurrent, states, w_hr):
    """(h, c) of one LSTM step from its input projection, h_prev W_hh^T + b_hh and (h, c)."""
    i, f, g, o = (projected + recurrent).chunk(4, dim=1)
    c = torch.sigmoid(f) * states[1] + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return (h if w_hr is None else h @ w_hr.T), c


def _gru_step(projected, recurrent, states, w_hr):
    """(h,) of one GRU step; b_hn sits inside r * (h W_hn^T + b_hn), as torch's."""
    x_r, x_z, x_n = projected.chunk(3, dim=1)
    h_r, h_z, h_n = recurrent.chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * states[0],)


STEPS = {"RNN_TANH": functools.partial(_elman_step, torch.tanh),
         "RNN_RELU": functools.partial(_elman_step, torch.relu), "LSTM": _lstm_step,
         "GRU": _gru_step}


def _split(weights, has_biases):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer-direction, None where absent."""
    w_ih, w_hh, *rest = weights
    b_ih, b_hh = (rest[0], rest[1]) if has_biases else (None, None)
    w_hr = rest[-1] if len(rest) > (2 if has_biases else 0) else None
    return w_ih, w_hh, b_ih, b_hh, w_hr


def _direction(x, h0, weights, sizes, reverse, step, has_biases):
    """One layer, one direction over packed rows x [N, I]; h0 the initial states (a tuple:
    (h,) or LSTM's (h, c), each [B, *]): (output [N, P], final states, a tuple)."""
    w_ih, w_hh, b_ih, b_hh, w_hr = _split(weights, has_biases)
    projected = x @ w_ih.T                                      # all steps in one product
    if b_ih is not None:
        projected = projected + b_ih
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)

    def advance(t, states):
        recurrent = states[0] @ w_hh.T
        if b_hh is not None:
            recurrent = recurrent + b_hh
        return step(projected[starts[t]:starts[t + 1]], recurrent, states, w_hr)

    outputs = [None] * len(sizes)
    if not reverse:
        states = h0                                             # each sequence's latest
        for t, size in enumerate(sizes):
            new = advance(t, tuple(s[:size] for s in states))
            outputs[t] = new[0]
            states = new if size == states[0].shape[0] else tuple(
                torch.cat([n, s[size:]]) for n, s in zip(new, states))
        return torch.cat(outputs), states
    states = tuple(s[:0] for s in h0)                           # rows carried from step t+1
    for t in reversed(range(len(sizes))):
        size, carried = sizes[t], states[0].shape[0]
        previous = states if carried == size else tuple(
            torch.cat([s, s0[carried:size]]) for s, s0 in zip(states, h0))
        states = advance(t, previous)
        outputs[t] = states[0]
    return torch.cat(outputs), states


def rnn(input: Tensor, batch_sizes, hx: Tensor, cx: Tensor, weights: list, masks,
        config: Config):
    """``(output, h_n, c_n, layer_outputs)``: what fastrnn::rnn_forward computes (weights as a
    list in torch's flat order), with the outputs of layers 0..L-2 before dropout as a list.
    c_n is cx's shape: LSTM's final cell states, width 0 for the other cells."""
    if batch_sizes is None:                                     # [T, B, I]: T steps of B rows
        steps, batch = input.shape[0], input.shape[1]
        x, sizes = input.reshape(steps * batch, input.shape[2]), [batch] * steps
    else:
        x, sizes = input, [int(s) for s in batch_sizes.tolist()]
    step, paired = STEPS[config.mode], config.mode == "LSTM"
    directions, layers = config.directions, config.num_layers
    per_state = len(weights) // (layers * directions)
    finals, layer_outputs = [], []
    for layer in range(layers):
        halves = []
        for direction in range(directions):
            state = layer * directions + direction
            own = weights[state * per_state:(state + 1) * per_state]
            h0 = (hx[state], cx[state]) if paired else (hx[state],)
            out, last = _direction(x, h0, own, sizes, bool(direction), step, config.has_biases)
            halves.append(out)
            finals.append(last)
        x = torch.cat(halves, dim=1) if directions == 2 else halves[0]
        if layer < layers - 1:
            layer_outputs.append(x)
            if masks is not None:
                x = x * masks[layer].reshape(x.shape)
    output = x.reshape(*input.shape[:-1], x.shape[-1])
    h_n = torch.stack([last[0] for last in finals])
    c_n = torch.stack([last[1] for last in finals]) if paired else cx.new_zeros(cx.shape)
    return output, h_n, c_n, [o.reshape(output.shape) for o in layer_outputs]
