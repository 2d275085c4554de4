"""Helpers shared by the fastrnn.torch test modules (imported by tests/test_torch_*.py)."""
import torch

import fastrnn.torch


def module_pair(input_size=3, hidden_size=4, *, seed=0, backend="auto", cell="RNN", **kwargs):
    """(fastrnn.torch.<cell>, torch.nn.<cell>) built alike, torch's loaded with fastrnn's
    parameters; ``cell`` is 'RNN', 'LSTM' or 'GRU'."""
    torch.manual_seed(seed)
    ours = getattr(fastrnn.torch, cell)(input_size, hidden_size, backend=backend, **kwargs)
    theirs = getattr(torch.nn, cell)(input_size, hidden_size, **kwargs)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def state_members(state):
    """The tensors of a state (one tensor, or the LSTM's pair) as a list."""
    return list(state) if isinstance(state, tuple) else [state]


def assert_per_sample_grads_match(ours, theirs, xs, tolerance):
    """vmap(grad) over samples xs [S, ...] of ``ours`` equals each sample's backward through
    ``theirs`` (same parameters), for every parameter. Loss: sum(output^2) + sum of states."""
    def loss_of(module):
        def loss(params, x):
            output, final = torch.func.functional_call(module, params, (x,))
            return output.pow(2).sum() + sum(s.sum() for s in state_members(final))
        return loss
    params = {name: p.detach() for name, p in ours.named_parameters()}
    per_sample = torch.func.vmap(torch.func.grad(loss_of(ours)), in_dims=(None, 0))(params, xs)
    for i, x in enumerate(xs):
        theirs.zero_grad()
        loss_of(theirs)(dict(theirs.named_parameters()), x).backward()
        for name, p in theirs.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, **tolerance, msg=name)
