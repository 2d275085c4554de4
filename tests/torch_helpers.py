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
