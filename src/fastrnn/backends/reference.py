"""The NumPy reference: one layer, one direction, a plain loop over time steps, for each cell
(Elman, LSTM, GRU).

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
from .activations import activate, activation_grad, sigmoid, sigmoid_grad, tanh_grad

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


# ----------------------------------------------------------------------------- LSTM
def _lstm_gates(a, H):
    """i, f, g, o of torch's LSTM from the pre-activations a [n, 4H]."""
    return (sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]),
            sigmoid(a[:, 3 * H:]))


def lstm_forward_numpy(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse,
                       out, h_n, c_n, workspace):
    # x [N, I], h0 [B, P], c0 [B, H], w_ih [4H, I], w_hh [4H, P], b_ih/b_hh [4H] or None,
    # w_hr [P, H] or None (P == H then), out [N, P], h_n [B, P], c_n [B, H],
    # workspace [N, 5H]: written with i, f, g, o (activated) and c_t of every row
    offsets, H = step_offsets(batch_sizes), c0.shape[1]
    h_n[...], c_n[...] = h0, c0
    for t in _time_steps(len(batch_sizes), reverse):
        rows, n = slice(offsets[t], offsets[t + 1]), batch_sizes[t]
        h_prev = _previous_states(out, h0, offsets, batch_sizes, t, reverse)
        c_prev = _previous_states(workspace[:, 4 * H:], c0, offsets, batch_sizes, t, reverse)
        a = x[rows] @ w_ih.T + h_prev @ w_hh.T
        if b_ih is not None:
            a = a + b_ih + b_hh
        i, f, g, o = _lstm_gates(a, H)
        c = f * c_prev + i * g
        m = o * np.tanh(c)                              # h before the projection
        workspace[rows] = np.concatenate([i, f, g, o, c], axis=1)
        out[rows] = m @ w_hr.T if w_hr is not None else m
        h_n[:n], c_n[:n] = out[rows], c


def lstm_backward_numpy(x, h0, c0, w_ih, w_hh, w_hr, batch_sizes, reverse, out, workspace,
                        grad_out, grad_hn, grad_cn, grad_x, accumulate_x, grad_h0, grad_c0,
                        grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr):
    # as lstm_forward_numpy; grad_out [N, P], grad_hn/grad_h0 [B, P], grad_cn/grad_c0 [B, H],
    # grad_w_hr [P, H] or None (no projection); gradients of parameters are ADDED to
    offsets, H = step_offsets(batch_sizes), c0.shape[1]
    grad_h, grad_c = grad_hn.copy(), grad_cn.copy()   # dL/dh, dL/dc of each sequence's state
    for t in reversed(list(_time_steps(len(batch_sizes), reverse))):
        rows, n = slice(offsets[t], offsets[t + 1]), batch_sizes[t]
        h_prev = _previous_states(out, h0, offsets, batch_sizes, t, reverse)
        c_prev = _previous_states(workspace[:, 4 * H:], c0, offsets, batch_sizes, t, reverse)
        i, f, g, o, c = (workspace[rows, k * H:(k + 1) * H] for k in range(5))
        tanh_c = np.tanh(c)
        dh = grad_out[rows] + grad_h[:n]
        if w_hr is not None:
            grad_w_hr += dh.T @ (o * tanh_c)
            dh = dh @ w_hr                               # dL/dm, m = o * tanh(c)
        dc = grad_c[:n] + dh * o * tanh_grad(tanh_c)
        da = np.concatenate([dc * g * sigmoid_grad(i), dc * c_prev * sigmoid_grad(f),
                             dc * i * tanh_grad(g), dh * tanh_c * sigmoid_grad(o)], axis=1)
        _add_input_gradients(da, x[rows], h_prev, w_ih, grad_x, rows, accumulate_x,
                             grad_w_ih, grad_w_hh)
        if grad_b_ih is not None:
            grad_b_ih += da.sum(axis=0)
            grad_b_hh += da.sum(axis=0)
        grad_h[:n], grad_c[:n] = da @ w_hh, dc * f
    grad_h0[...], grad_c0[...] = grad_h, grad_c


def _add_input_gradients(da_input, x_rows, h_prev, w_ih, grad_x, rows, accumulate_x,
                         grad_w_ih, grad_w_hh, da_hidden=None):
    """dW_ih += da^T x, dW_hh += da^T h_prev, dx = (or +=) da W_ih for one step's rows;
    ``da_hidden`` is what reaches W_hh when it differs from what reaches W_ih (GRU)."""
    grad_w_ih += da_input.T @ x_rows
    grad_w_hh += (da_input if da_hidden is None else da_hidden).T @ h_prev
    if accumulate_x:
        grad_x[rows] += da_input @ w_ih
    else:
        grad_x[rows] = da_input @ w_ih


# ----------------------------------------------------------------------------- GRU
def gru_forward_numpy(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, out, h_n, workspace):
    # x [N, I], h0 [B, H], w_ih [3H, I], w_hh [3H, H], b_ih/b_hh [3H] or None, out [N, H],
    # h_n [B, H], workspace [N, 4H]: written with r, z, n (activated) and h_prev W_hn^T + b_hn
    offsets, H = step_offsets(batch_sizes), h0.shape[1]
    h_n[...] = h0
    for t in _time_steps(len(batch_sizes), reverse):
        rows, n = slice(offsets[t], offsets[t + 1]), batch_sizes[t]
        h_prev = _previous_states(out, h0, offsets, batch_sizes, t, reverse)
        from_x, from_h = x[rows] @ w_ih.T, h_prev @ w_hh.T
        if b_ih is not None:
            from_x, from_h = from_x + b_ih, from_h + b_hh
        r = sigmoid(from_x[:, :H] + from_h[:, :H])
        z = sigmoid(from_x[:, H:2 * H] + from_h[:, H:2 * H])
        candidate = np.tanh(from_x[:, 2 * H:] + r * from_h[:, 2 * H:])   # b_hn inside r * (.)
        out[rows] = (1 - z) * candidate + z * h_prev
        workspace[rows] = np.concatenate([r, z, candidate, from_h[:, 2 * H:]], axis=1)
        h_n[:n] = out[rows]


def gru_backward_numpy(x, h0, w_ih, w_hh, batch_sizes, reverse, out, workspace, grad_out,
                       grad_hn, grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih,
                       grad_b_hh):
    # as gru_forward_numpy; gradients of parameters are ADDED to
    offsets, H = step_offsets(batch_sizes), h0.shape[1]
    grad_h = grad_hn.copy()
    for t in reversed(list(_time_steps(len(batch_sizes), reverse))):
        rows, n = slice(offsets[t], offsets[t + 1]), batch_sizes[t]
        h_prev = _previous_states(out, h0, offsets, batch_sizes, t, reverse)
        r, z, candidate, hidden_n = (workspace[rows, k * H:(k + 1) * H] for k in range(4))
        dh = grad_out[rows] + grad_h[:n]
        d_candidate = dh * (1 - z) * tanh_grad(candidate)
        d_r = d_candidate * hidden_n * sigmoid_grad(r)
        d_z = dh * (h_prev - candidate) * sigmoid_grad(z)
        da_input = np.concatenate([d_r, d_z, d_candidate], axis=1)        # dL/d(x W_ih^T + b_ih)
        da_hidden = np.concatenate([d_r, d_z, d_candidate * r], axis=1)   # dL/d(h W_hh^T + b_hh)
        _add_input_gradients(da_input, x[rows], h_prev, w_ih, grad_x, rows, accumulate_x,
                             grad_w_ih, grad_w_hh, da_hidden)
        if grad_b_ih is not None:
            grad_b_ih += da_input.sum(axis=0)
            grad_b_hh += da_hidden.sum(axis=0)
        grad_h[:n] = da_hidden @ w_hh + dh * z
    grad_h0[...] = grad_h


rnn_forward = rnn_forward_numpy
rnn_backward = rnn_backward_numpy
lstm_forward = lstm_forward_numpy
lstm_backward = lstm_backward_numpy
gru_forward = gru_forward_numpy
gru_backward = gru_backward_numpy
