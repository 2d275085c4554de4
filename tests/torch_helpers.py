"""Helpers shared by the fastrnn.torch test modules (imported by tests/test_torch_*.py)."""
import torch

from fastrnn.torch import RNN


def module_pair(input_size=3, hidden_size=4, *, seed=0, backend="auto", **kwargs):
    """(fastrnn.torch.RNN, torch.nn.RNN) built alike, torch's loaded with fastrnn's parameters."""
    torch.manual_seed(seed)
    ours = RNN(input_size, hidden_size, backend=backend, **kwargs)
    theirs = torch.nn.RNN(input_size, hidden_size, **kwargs)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs
