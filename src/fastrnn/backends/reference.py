"""The NumPy reference: one layer, one direction, a plain loop over time steps.

Written to be read, not to be fast: every other backend is tested against it, so each line
follows the maths in design.md as literally as possible (one small product per step, the
parameter gradients summed step by step). Only the calling contract (see backends/__init__.py)
is shared with the fast backends, including its packed layout: step t holds the first
``batch_sizes[t]`` sequences of the batch (sorted by decreasing length), so a sequence simply
stops taking part once it has ended, and the reverse direction starts each sequence at its own
last step from h0.
"""
import numpy as np

from . import HostArrays
from .activations import activate, activation_grad

ARRAYS = HostArrays


def unavailable_reason():
    return None


def step_offsets(batch_sizes):
    """offsets[t]: the first row of step t in the packed layout; offsets[T] == N."""
    return np.concatenate(([0], np.cumsum(batch_sizes))).astype(np.int64)


def _time_steps(T, reverse):
    """The order the recurrence visits the steps in."""
    return range(T - 1, -1, -1) if reverse else range(T)


def _previous_states(out, h0, offsets, batch_sizes, t, reverse):
    """h_{t-1} of the rows that step t computes, in this direction's time order: the state the
    previous step left for the sequences it computed, h0 for those that start at step t."""
    rows = batch_sizes[t]
    h_prev = h0[:rows].copy()
    previous = t + 1 if reverse else t - 1
    if 0 <= previous < len(batch_sizes):
        carried = min(rows, batch_sizes[previous])
        h_prev[:carried] = out[offsets[previous]:offsets[previous] + carried]
    return h_prev


def rnn_forward_numpy(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, relu, out, h_n):
    # x [N, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih/b_hh [H] or None,
    # batch_sizes [T], out [N, H], h_n [B, H]
    offsets = step_offsets(batch_sizes)
    h_n[...] = h0
    for t in _time_steps(len(batch_sizes), reverse):
        rows = slice(offsets[t], offsets[t + 1])
        h_prev = _previous_states(out, h0, offsets, batch_sizes, t, reverse)
        a = x[rows] @ w_ih.T + h_prev @ w_hh.T
        if b_ih is not None:
            a = a + b_ih + b_hh
        out[rows] = activate(a, relu)
        h_n[:batch_sizes[t]] = out[rows]      # the last step a sequence takes in this walk wins


def rnn_backward_numpy(x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, grad_out, grad_hn,
                       grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # x [N, I], h0 [B, H], out/grad_out [N, H], grad_hn [B, H], grad_x [N, I], grad_h0 [B, H],
    # grad_w_ih [H, I], grad_w_hh [H, H], grad_b_ih/grad_b_hh [H] or None
    offsets = step_offsets(batch_sizes)
    grad_h = grad_hn.copy()          # dL/dh of each sequence's state, flowing back through time
    for t in reversed(list(_time_steps(len(batch_sizes), reverse))):
        rows, n = slice(offsets[t], offsets[t + 1]), batch_sizes[t]
        g = (grad_out[rows] + grad_h[:n]) * activation_grad(out[rows], relu)   # dL/da_t [n, H]
        grad_w_ih += g.T @ x[rows]
        grad_w_hh += g.T @ _previous_states(out, h0, offsets, batch_sizes, t, reverse)
        if grad_b_ih is not None:
            grad_b_ih += g.sum(axis=0)
            grad_b_hh += g.sum(axis=0)
        if accumulate_x:
            grad_x[rows] += g @ w_ih
        else:
            grad_x[rows] = g @ w_ih
        grad_h[:n] = g @ w_hh
    grad_h0[...] = grad_h


rnn_forward = rnn_forward_numpy
rnn_backward = rnn_backward_numpy
