"""What the LSTM and GRU tests share: the layers, the backends that run them, states, torch twins.

Which backends a test runs is decided here, once, from what the build has: a backend is
listed for a cell when it is available and has that cell's kernels (``<cell>_forward`` and
``_backward``), so a backend without them is not collected at all rather than skipped and
counted; ``python -m pytest --collect-only -q tests/test_lstm_gru_vs_torch.py`` shows which
ran.
"""

import fastrnn
from fastrnn import functional

LAYERS = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU}
ALL_BACKENDS = ("numpy", "cpu", "cuda")


def backends_for(mode):
    """The backends that have ``mode``'s kernels in this build (what the tests run)."""
    return [name for name in ALL_BACKENDS if functional.backend_runs(name, mode)]


def make_layer(mode, input_size, hidden_size, proj_size=0, **kwargs):
    """fastrnn.LSTM or fastrnn.GRU; proj_size is passed to the LSTM only."""
    extra = {"proj_size": proj_size} if mode == "LSTM" else {}
    return LAYERS[mode](input_size, hidden_size, **extra, **kwargs)


def members(states):
    """The arrays of a state (one array, or LSTM's pair) as a list."""
    return list(states) if isinstance(states, tuple) else [states]


def as_state(mode, arrays):
    """A list of state arrays as the layer takes them (LSTM: a pair)."""
    return tuple(arrays) if mode == "LSTM" else arrays[0]


def state_shapes(layer, batch):
    """The shape of each state array of ``layer`` for ``batch`` sequences (None: unbatched)."""
    lead = (layer.num_layers * (2 if layer.bidirectional else 1),) + (() if batch is None else (batch,))
    sizes = [layer.proj_size or layer.hidden_size, layer.hidden_size] if layer.mode == "LSTM" \
        else [layer.hidden_size]
    return [lead + (size,) for size in sizes]


def random_states(rng, layer, batch, scale=0.5):
    """Random initial states for ``layer`` (a pair for LSTM), of its dtype."""
    return as_state(layer.mode, [(scale * rng.standard_normal(shape)).astype(layer.dtype)
                                 for shape in state_shapes(layer, batch)])


def torch_twin(layer):
    """torch.nn.LSTM / GRU with ``layer``'s configuration and parameters (strict load)."""
    import torch
    kwargs = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
                  dropout=layer.dropout, bidirectional=layer.bidirectional,
                  dtype=getattr(torch, layer.dtype))
    if layer.mode == "LSTM":
        kwargs["proj_size"] = layer.proj_size
    module = getattr(torch.nn, layer.mode)(layer.input_size, layer.hidden_size, **kwargs)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


def torch_forward(module, x, initial, lengths, batch_first):
    """(padded output, final state) of a torch recurrent module on tensor ``x``: packed with
    pack_padded_sequence (unsorted lengths allowed) when ``lengths`` is not None."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    if lengths is None:
        return module(x, initial)
    packed = pack_padded_sequence(x, torch_lengths(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    out_packed, final = module(packed, initial)
    steps = x.shape[1] if batch_first else x.shape[0]
    out, _ = pad_packed_sequence(out_packed, batch_first=batch_first, total_length=steps)
    return out, final


def torch_lengths(lengths):
    import torch
    return torch.as_tensor(list(lengths))
