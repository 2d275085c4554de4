"""The stacked Elman RNN written in plain, differentiable torch operations.

Why it exists: the fused operators compute a forward and ONE backward; derivatives of higher
order (double backward for gradient penalties, gradgradcheck, Hessians) and forward-mode
derivatives (torch.func.jvp, jacfwd) need the computation as something torch can differentiate
itself. autograd.py uses this module only there: torch.func differentiates it, and first-order
gradients never come here. It is written to be read (one step at a time, like the NumPy
reference) and follows the operators' contract exactly: the same inputs (equal-length [T, B, I]
or packed [N, I] with batch_sizes), the same packed semantics (step t computes the first
batch_sizes[t] sequences; the reverse direction starts each sequence at its own last step), the
same outputs (output, h_n, and the layer outputs the workspace holds).
"""
import torch
from torch import Tensor

from .ops import Config

ACTIVATIONS = {"RNN_TANH": torch.tanh, "RNN_RELU": torch.relu}


def _direction(x, h0, weights, sizes, reverse, activation):
    """One layer, one direction over packed rows x [N, I]: (output [N, H], h_n [B, H])."""
    w_ih, w_hh, *biases = weights
    projected = x @ w_ih.T                                      # all steps in one product
    if biases:
        projected = projected + (biases[0] + biases[1])
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    outputs = [None] * len(sizes)
    if not reverse:
        h = h0                                                  # [B, H]: each sequence's latest
        for t, size in enumerate(sizes):
            h_t = activation(projected[starts[t]:starts[t + 1]] + h[:size] @ w_hh.T)
            outputs[t] = h_t
            h = h_t if size == h.shape[0] else torch.cat([h_t, h[size:]])
        return torch.cat(outputs), h
    h = h0[:0]                                                  # rows carried from step t+1
    for t in reversed(range(len(sizes))):
        size = sizes[t]
        h_prev = h if h.shape[0] == size else torch.cat([h, h0[h.shape[0]:size]])
        h = activation(projected[starts[t]:starts[t + 1]] + h_prev @ w_hh.T)
        outputs[t] = h
    return torch.cat(outputs), h


def rnn(input: Tensor, batch_sizes, hx: Tensor, weights: list, masks, config: Config):
    """``(output, h_n, layer_outputs)``: what fastrnn::rnn_forward computes (weights as a list
    in torch's flat order), with the outputs of layers 0..L-2 before dropout as a list."""
    if batch_sizes is None:                                     # [T, B, I]: T steps of B rows
        steps, batch = input.shape[0], input.shape[1]
        x, sizes = input.reshape(steps * batch, input.shape[2]), [batch] * steps
    else:
        x, sizes = input, [int(s) for s in batch_sizes.tolist()]
    activation = ACTIVATIONS[config.mode]
    directions, layers = config.directions, config.num_layers
    per_state = len(weights) // (layers * directions)
    h_n, layer_outputs = [], []
    for layer in range(layers):
        halves = []
        for direction in range(directions):
            state = layer * directions + direction
            own = weights[state * per_state:(state + 1) * per_state]
            out, h_last = _direction(x, hx[state], own, sizes, bool(direction), activation)
            halves.append(out)
            h_n.append(h_last)
        x = torch.cat(halves, dim=1) if directions == 2 else halves[0]
        if layer < layers - 1:
            layer_outputs.append(x)
            if masks is not None:
                x = x * masks[layer].reshape(x.shape)
    output = x.reshape(*input.shape[:-1], x.shape[-1])
    return output, torch.stack(h_n), [o.reshape(output.shape) for o in layer_outputs]
