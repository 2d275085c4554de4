"""Helpers shared by the fastrnn.torch test modules (imported by tests/test_torch_*.py)."""
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fastrnn.torch import RNN


def cpu_kernels_take_ragged_batches() -> bool:
    """Whether the 'cpu' backend runs variable-length batches (added on a parallel branch;
    until then it raises NotImplementedError for them)."""
    try:
        RNN(1, 1)(pack_padded_sequence(torch.zeros(2, 2, 1), torch.tensor([2, 1])))
    except NotImplementedError:
        return False
    return True


# The backend to run variable-length batches on: 'auto' (the cpu kernels) where it can,
# the NumPy reference until then.
RAGGED_BACKEND = "auto" if cpu_kernels_take_ragged_batches() else "numpy"


def module_pair(input_size=3, hidden_size=4, *, seed=0, backend="auto", **kwargs):
    """(fastrnn.torch.RNN, torch.nn.RNN) built alike, torch's loaded with fastrnn's parameters."""
    torch.manual_seed(seed)
    ours = RNN(input_size, hidden_size, backend=backend, **kwargs)
    theirs = torch.nn.RNN(input_size, hidden_size, **kwargs)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs
