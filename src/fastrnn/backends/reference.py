"""The NumPy reference: one layer, one direction, a plain loop over time steps.

Written to be read, not to be fast: every other backend is tested against it, so each line
follows the maths in design.md as literally as possible (one small product per step, the
parameter gradients summed step by step). Only the calling contract (see backends/__init__.py)
is shared with the fast backends.
"""
import numpy as np

from . import HostArrays

ARRAYS = HostArrays


def unavailable_reason():
    return None


def _time_steps(T, reverse):
    """The order the recurrence visits the steps in."""
    return range(T - 1, -1, -1) if reverse else range(T)


def _activate(a, relu):
    return np.maximum(a, 0) if relu else np.tanh(a)


def _activation_grad(h, relu):
    """d act(a) / d a written in terms of the output h = act(a)."""
    return (h > 0).astype(h.dtype) if relu else 1 - h * h


def rnn_forward_numpy(x, h0, w_ih, w_hh, bias, out, reverse, relu):
    # x [T, B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], bias [H] or None, out [T, B, H]
    h = h0
    for t in _time_steps(x.shape[0], reverse):
        a = x[t] @ w_ih.T + h @ w_hh.T
        if bias is not None:
            a = a + bias
        h = _activate(a, relu)
        out[t] = h


def rnn_backward_numpy(x, h0, w_ih, w_hh, out, grad_out, grad_hn, reverse, relu,
                       grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # x [T, B, I], h0 [B, H], out/grad_out [T, B, H], grad_hn [B, H], grad_x [T, B, I],
    # grad_h0 [B, H], grad_w_ih [H, I], grad_w_hh [H, H], grad_b_ih/grad_b_hh [H] or None
    steps = list(_time_steps(x.shape[0], reverse))
    grad_h = grad_hn.copy()                           # dL/dh_t flowing back through time
    for i in reversed(range(len(steps))):
        t = steps[i]
        h_prev = out[steps[i - 1]] if i > 0 else h0
        g = (grad_out[t] + grad_h) * _activation_grad(out[t], relu)   # dL/da_t  [B, H]
        grad_w_ih += g.T @ x[t]
        grad_w_hh += g.T @ h_prev
        if grad_b_ih is not None:
            grad_b_ih += g.sum(axis=0)
            grad_b_hh += g.sum(axis=0)
        if accumulate_x:
            grad_x[t] += g @ w_ih
        else:
            grad_x[t] = g @ w_ih
        grad_h = g @ w_hh
    grad_h0[...] = grad_h


rnn_forward = rnn_forward_numpy
rnn_backward = rnn_backward_numpy
