"""Property-based tests (hypothesis): random configurations against the reference, and random
bad calls against a clean exception, for every cell (the Elman RNN, LSTM, GRU).

Every draw picks a layer configuration (layers, directions, bias, activation or projection,
dtype, batch_first), a batch (T, B, ragged lengths or not) and how the caller's arrays are
laid out in memory (C order, Fortran order, strided views, reversed views, read-only, the
other byte order, misaligned). Properties:
- every host backend ('numpy', 'cpu') that has the cell's kernels gives the reference's
  output, final states and gradients, computed from canonical (contiguous, native) copies of
  the same arrays, and never changes the caller's arrays;
- a call with one argument spoiled raises TypeError or ValueError (ShapeError is one) with a
  message, and changes nothing: never a crash, never a silent answer.
Examples are derandomized (the same on every run) and bounded so that the file runs in a few
seconds; HYPOTHESIS_EXAMPLES=N runs more of them.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from cell_cases import members
from helpers import RTOL, assert_close

CELLS = {"RNN": fastrnn.RNN, "LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU}
MODES = {"RNN": "RNN_TANH", "LSTM": "LSTM", "GRU": "GRU"}
FORWARDS = {"RNN": fastrnn.functional.rnn_forward, "LSTM": fastrnn.functional.lstm_forward,
            "GRU": fastrnn.functional.gru_forward}
BACKWARDS = {"RNN": fastrnn.functional.rnn_backward, "LSTM": fastrnn.functional.lstm_backward,
             "GRU": fastrnn.functional.gru_backward}
# (backend, cell) for each host backend that has the cell's kernels in this build
PAIRS = [(backend, cell) for backend in ("numpy", "cpu") for cell in CELLS
         if fastrnn.functional.backend_runs(backend, MODES[cell])]
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LAYOUTS = ["c", "fortran", "strided", "reversed", "read-only", "swapped", "misaligned"]


@st.composite
def configurations(draw, cell):
    config = dict(input_size=draw(st.integers(1, 5)), hidden_size=draw(st.integers(1, 6)),
                  num_layers=draw(st.integers(1, 3)), bias=draw(st.booleans()),
                  batch_first=draw(st.booleans()), bidirectional=draw(st.booleans()),
                  dtype=draw(st.sampled_from(["float32", "float64"])))
    if cell == "RNN":
        config["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    if cell == "LSTM":
        config["proj_size"] = draw(st.integers(0, config["hidden_size"] - 1))
    return config


@st.composite
def calls(draw, cell):
    """(configuration, T, B, lengths or None, with_hx, layout of x, layout of hx, seed)."""
    config = draw(configurations(cell))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(0, 4))
    lengths = None
    if batch and draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return (config, steps, batch, lengths, draw(st.booleans()), draw(st.sampled_from(LAYOUTS)),
            draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 2 ** 32 - 1)))


def laid_out(a, layout):
    """The same values as ``a`` in another memory layout."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "read-only":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "swapped":
        return a.astype(a.dtype.newbyteorder())
    if layout == "misaligned":
        raw = np.frombuffer(b"\0" + a.tobytes(), np.uint8, offset=1)
        return np.frombuffer(raw, a.dtype).reshape(a.shape) if a.size else a.copy()
    return a.copy()


def layer_pair(cell, config, backend, seed):
    reference = CELLS[cell](**config, backend="numpy", seed=seed % 1000)
    tested = CELLS[cell](**config, backend=backend)
    tested.load_state_dict(reference.state_dict())
    return reference, tested


def run(layer, x, hx, lengths, grad_out, grad_hn):
    output, h_n = layer(x, hx, lengths=lengths)
    grad_x, grad_hx = layer.backward(grad_out, grad_hn)
    return ([output, *members(h_n), grad_x, *members(grad_hx)]
            + [layer.grads[n] for n in sorted(layer.grads)])


def state(cell, arrays):
    """A list of state arrays as the cell takes them (LSTM: a pair)."""
    return tuple(arrays) if cell == "LSTM" else arrays[0]


def arrays_for(cell, config, steps, batch, with_hx, seed):
    """(x, hx or None, grad_out, grad_hn): hx and grad_hn are pairs for LSTM."""
    rng = np.random.default_rng(seed)
    dtype, D = config["dtype"], 2 if config["bidirectional"] else 1
    H, P = config["hidden_size"], config.get("proj_size") or config["hidden_size"]
    x_shape = (batch, steps) if config["batch_first"] else (steps, batch)
    x = rng.standard_normal(x_shape + (config["input_size"],)).astype(dtype)
    shapes = [(config["num_layers"] * D, batch, size) for size in ([P, H] if cell == "LSTM" else [H])]
    draw = lambda shape: rng.standard_normal(shape).astype(dtype)
    hx = state(cell, [draw(shape) for shape in shapes]) if with_hx else None
    grad_out = rng.standard_normal(x_shape + (D * P,)).astype(dtype)
    return x, hx, grad_out, state(cell, [draw(shape) for shape in shapes])


@pytest.mark.parametrize("backend,cell", PAIRS)
@SETTINGS
@given(data=st.data())
def test_every_backend_matches_the_reference_whatever_the_memory_layout(backend, cell, data):
    config, steps, batch, lengths, with_hx, x_layout, hx_layout, seed = data.draw(calls(cell))
    reference, tested = layer_pair(cell, config, backend, seed)
    x, hx, grad_out, grad_hn = arrays_for(cell, config, steps, batch, with_hx, seed)
    expected = run(reference, x, hx, lengths, grad_out, grad_hn)
    x_in = laid_out(x, x_layout)
    hx_in = None if hx is None else state(cell, [laid_out(h, hx_layout) for h in members(hx)])
    snapshot = [a.copy() for a in [x_in] + ([] if hx_in is None else members(hx_in))]
    actual = run(tested, x_in, hx_in, lengths, laid_out(grad_out, x_layout), grad_hn)
    rtol = 10 * RTOL[config["dtype"]]
    for a, e in zip(actual, expected):
        assert_close(a, e, config["dtype"], rtol)
    for a, e in zip([x_in] + ([] if hx_in is None else members(hx_in)), snapshot):
        np.testing.assert_array_equal(a, e)


# ----------------------------------------------------------------------------- bad calls
def _first_state(a, key, spoiled):
    """a[key] (a state, LSTM's a pair) with its first array replaced by ``spoiled``."""
    return (spoiled, a[key][1]) if a["cell"] == "LSTM" else spoiled


SPOILERS = {
    "input_size": lambda c, a: {**a, "x": np.zeros(a["x"].shape[:-1] + (a["x"].shape[-1] + 1,), a["x"].dtype)},
    "input_ndim": lambda c, a: {**a, "x": a["x"][..., None]},
    "input_dtype": lambda c, a: {**a, "x": a["x"].astype(np.float16)},
    "input_int": lambda c, a: {**a, "x": a["x"].astype(np.int64)},
    "input_object": lambda c, a: {**a, "x": a["x"].astype(object)},
    "input_complex": lambda c, a: {**a, "x": a["x"].astype(np.complex128)},
    "input_string": lambda c, a: {**a, "x": "not an array"},
    "input_none": lambda c, a: {**a, "x": None},
    "hx_shape": lambda c, a: {**a, "hx": _first_state(a, "hx", np.zeros(a["states"][:-1] + (a["states"][-1] + 1,), c["dtype"]))},
    "hx_ndim": lambda c, a: {**a, "hx": _first_state(a, "hx", np.zeros(a["states"][1:], c["dtype"]))},
    "hx_dtype": lambda c, a: {**a, "hx": _first_state(a, "hx", np.zeros(a["states"], np.float16))},
    "hx_structure": lambda c, a: {**a, "hx": a["hx"][0] if a["cell"] == "LSTM" else (a["hx"], a["hx"])},
    "lengths_long": lambda c, a: {**a, "lengths": [a["steps"] + 1] * a["batch"]},
    "lengths_zero": lambda c, a: {**a, "lengths": [0] * a["batch"]},
    "lengths_count": lambda c, a: {**a, "lengths": [1] * (a["batch"] + 1)},
    "lengths_float": lambda c, a: {**a, "lengths": [1.5] * a["batch"]},
    "lengths_2d": lambda c, a: {**a, "lengths": [[1] * a["batch"]]},
    "grad_shape": lambda c, a: {**a, "grad_out": a["grad_out"][..., :-1]},
    "grad_dtype": lambda c, a: {**a, "grad_out": a["grad_out"].astype(np.float16)},
    "grad_hn_shape": lambda c, a: {**a, "grad_hn": _first_state(a, "grad_hn", np.zeros(a["states"] + (1,), c["dtype"]))},
    "grads_shape": lambda c, a: {**a, "grads": {k: v[..., :-1] if v.ndim == 2 else v for k, v in a["grads"].items()}},
    "grads_dtype": lambda c, a: {**a, "grads": {k: v.astype(np.float16) for k, v in a["grads"].items()}},
    "grads_missing": lambda c, a: {**a, "grads": dict(list(a["grads"].items())[1:])},
    "grads_readonly": lambda c, a: {**a, "grads": {k: _read_only(v) for k, v in a["grads"].items()}},
    "weights_shape": lambda c, a: {**a, "weights": {**a["weights"], "weight_hh_l0": a["weights"]["weight_hh_l0"][:, :-1]}},
    "weights_missing": lambda c, a: {**a, "weights": {k: v for k, v in a["weights"].items() if k != "weight_hh_l0"}},
    "weights_dtype": lambda c, a: {**a, "weights": {k: v.astype(np.float16) for k, v in a["weights"].items()}},
    "dropout": lambda c, a: {**a, "dropout": 1.5},
    "nonlinearity": lambda c, a: {**a, "nonlinearity": "sigmoid"},
    "out_shape": lambda c, a: {**a, "out": np.zeros((1,), c["dtype"])},
    "out_readonly": lambda c, a: {**a, "out": _read_only(np.zeros(a["grad_out"].shape, c["dtype"]))},
}
ONLY_FOR = {"nonlinearity": ("RNN",)}         # the spoilers of arguments only some cells take


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def functional_call(backend, arguments):
    """The cell's functional forward then backward with the (possibly spoiled) arguments."""
    cell = arguments["cell"]
    extra = {"nonlinearity": arguments["nonlinearity"]} if cell == "RNN" else {}
    output, h_n, context = FORWARDS[cell](
        arguments["x"], arguments["weights"], arguments["hx"], lengths=arguments["lengths"],
        batch_first=arguments["batch_first"], dropout=arguments["dropout"], backend=backend,
        out=arguments["out"], **extra)
    BACKWARDS[cell](context, arguments["grad_out"], arguments["grad_hn"], arguments["grads"])


@pytest.mark.parametrize("backend,cell,spoiler", [
    (backend, cell, spoiler) for backend, cell in PAIRS for spoiler in sorted(SPOILERS)
    if cell in ONLY_FOR.get(spoiler, (cell,))])
@settings(SETTINGS, max_examples=max(1, EXAMPLES // 8))
@given(data=st.data())
def test_every_bad_call_is_a_clean_exception(backend, cell, spoiler, data):
    config, steps, batch, lengths, with_hx, x_layout, _, seed = data.draw(calls(cell))
    layer = CELLS[cell](**config, backend="numpy", seed=seed % 1000)
    x, hx, grad_out, grad_hn = arrays_for(cell, config, steps, max(batch, 1), True, seed)
    batch = max(batch, 1)
    arguments = dict(cell=cell, x=laid_out(x, x_layout), hx=hx, lengths=lengths,
                     grad_out=grad_out, grad_hn=grad_hn, weights=layer.state_dict(),
                     nonlinearity=config.get("nonlinearity"), batch_first=config["batch_first"],
                     dropout=0.0, out=None,
                     grads=fastrnn.functional.zero_grads(layer.state_dict()),
                     steps=steps, batch=batch, states=members(hx)[0].shape)
    spoiled = SPOILERS[spoiler](config, arguments)
    arrays = lambda d: {f"{k}[{i}]": v for k, value in d.items()
                        for i, v in enumerate(value if isinstance(value, tuple) else [value])
                        if isinstance(v, np.ndarray)}
    snapshot = {k: v.copy() for k, v in arrays(spoiled).items()}
    with pytest.raises((TypeError, ValueError)) as caught:
        functional_call(backend, spoiled)
    assert str(caught.value)
    for name, value in arrays(spoiled).items():
        np.testing.assert_array_equal(value, snapshot[name])
