"""Every bad buffer a direct caller of the compiled CPU entries (fastrnn._rnn_cpu: the Elman,
LSTM and GRU forward and backward) could pass must be a clean exception that names what was
expected, raised before anything is written: wrong dtype, byte order, alignment, shape, axes,
strides, read-only outputs, broadcast rows, bad batch_sizes, unpaired biases. Table-driven:
each entry's valid arguments are built once (ENTRIES) and one array at a time is spoiled.
"""
import itertools

import numpy as np
import pytest

from fastrnn.backends import cpu, reference
from gated_problems import gated_problem
from helpers import assert_close
from packed_problems import make_problem

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")
kernels = cpu._rnn_cpu
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# ----------------------------------------------------------------------------- valid calls
def forward_arguments(cell="rnn", dtype="float32", lengths=(3, 2, 2), I=4, H=5, proj_size=None):
    """Valid arguments of <cell>_forward_cpu, by name, for a small ragged batch (N = 7, B = 3)."""
    rng = np.random.default_rng(0)
    if cell == "rnn":
        p = make_problem(rng, list(lengths), I, H, dtype)
        arguments = dict(x=p.x, h0=p.h0, w_ih=p.w_ih, w_hh=p.w_hh, b_ih=p.b_ih, b_hh=p.b_hh,
                         batch_sizes=p.batch_sizes, reverse=False, relu=False)
    else:
        p = gated_problem(rng, cell, list(lengths), I, H, dtype, P=proj_size)
        arguments = {name: p[name] for name in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh",
                                                "w_hr", "batch_sizes") if name in p}
        arguments.update(reverse=False,
                         workspace=np.zeros((len(p["x"]), (GATES[cell] + 1) * H), dtype))
        if cell == "lstm":
            arguments.update(c_n=np.zeros((len(p["h0"]), H), dtype))
    (N, _), (B, P) = arguments["x"].shape, arguments["h0"].shape
    arguments.update(out=np.zeros((N, P), dtype), h_n=np.zeros((B, P), dtype))
    return arguments


def backward_arguments(cell="rnn", dtype="float32", proj_size=None):
    """Valid arguments of <cell>_backward_cpu, by name, after a forward call on them."""
    f = forward_arguments(cell, dtype, proj_size=proj_size)
    getattr(kernels, f"{cell}_forward_cpu")(**f)
    (N, I), (B, P), G = f["x"].shape, f["h0"].shape, GATES[cell]
    H = f["w_ih"].shape[0] // G
    arguments = {name: f[name] for name in ("x", "h0", "c0", "w_ih", "w_hh", "w_hr",
                                            "batch_sizes", "reverse", "relu", "out",
                                            "workspace") if name in f}
    arguments.update(grad_out=np.ones((N, P), dtype), grad_hn=np.ones((B, P), dtype),
                     grad_x=np.zeros((N, I), dtype), accumulate_x=False,
                     grad_h0=np.zeros((B, P), dtype), grad_w_ih=np.zeros((G * H, I), dtype),
                     grad_w_hh=np.zeros((G * H, P), dtype), grad_b_ih=np.zeros(G * H, dtype),
                     grad_b_hh=np.zeros(G * H, dtype))
    if cell == "lstm":
        arguments.update(grad_cn=np.ones((B, H), dtype), grad_c0=np.zeros((B, H), dtype),
                         grad_w_hr=None if f["w_hr"] is None else np.zeros((P, H), dtype))
    return arguments


ENTRIES = {"rnn_forward_cpu": lambda: forward_arguments("rnn"),
           "rnn_backward_cpu": lambda: backward_arguments("rnn"),
           "lstm_forward_cpu": lambda: forward_arguments("lstm", proj_size=2),
           "lstm_backward_cpu": lambda: backward_arguments("lstm", proj_size=2),
           "gru_forward_cpu": lambda: forward_arguments("gru"),
           "gru_backward_cpu": lambda: backward_arguments("gru")}
PARAMETER_GRADIENTS = {"grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh"}
WRITTEN = {"rnn_forward_cpu": {"out", "h_n"},
           "rnn_backward_cpu": {"grad_x", "grad_h0"} | PARAMETER_GRADIENTS,
           "lstm_forward_cpu": {"out", "h_n", "c_n", "workspace"},
           "lstm_backward_cpu": {"grad_x", "grad_h0", "grad_c0", "grad_w_hr"} | PARAMETER_GRADIENTS,
           "gru_forward_cpu": {"out", "h_n", "workspace"},
           "gru_backward_cpu": {"grad_x", "grad_h0"} | PARAMETER_GRADIENTS}
LAST_CHECKED = {"rnn_forward_cpu": "h_n", "rnn_backward_cpu": "grad_b_hh",
                "lstm_forward_cpu": "workspace", "lstm_backward_cpu": "grad_w_hr",
                "gru_forward_cpu": "workspace", "gru_backward_cpu": "grad_b_hh"}
VECTORS = {"b_ih", "b_hh", "grad_b_ih", "grad_b_hh"}
ROWS_MAY_BE_SPACED = {"out", "grad_out"}


def float_arrays(entry):
    return [name for name, value in ENTRIES[entry]().items() if isinstance(value, np.ndarray)
            and value.dtype.kind == "f"]


CASES = [(entry, name) for entry in ENTRIES for name in float_arrays(entry)]


def call_with(entry, arguments, name, change):
    arguments = dict(arguments)
    arguments[name] = change(arguments[name])
    getattr(kernels, entry)(**arguments)


def test_the_cases_cover_every_array_of_every_entry():
    """A new argument must join the tables (its float arrays are found from the calls)."""
    names = {entry: set(float_arrays(entry)) for entry in ENTRIES}
    assert names["rnn_forward_cpu"] == {"x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", "out", "h_n"}
    assert names["lstm_forward_cpu"] == {"x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh",
                                         "w_hr", "out", "h_n", "c_n", "workspace"}
    assert names["lstm_backward_cpu"] == {"x", "h0", "c0", "w_ih", "w_hh", "w_hr", "out",
                                          "workspace", "grad_out", "grad_hn", "grad_cn",
                                          "grad_x", "grad_h0", "grad_c0", "grad_w_ih",
                                          "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_w_hr"}
    assert names["gru_backward_cpu"] == {"x", "h0", "w_ih", "w_hh", "out", "workspace",
                                         "grad_out", "grad_hn", "grad_x", "grad_h0",
                                         "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh"}
    for entry in ENTRIES:
        assert WRITTEN[entry] <= names[entry] and LAST_CHECKED[entry] in names[entry]


# ----------------------------------------------------------------------------- spoilt arrays
def byte_swapped(a):
    return a.astype(a.dtype.newbyteorder())


def misaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def broadcast_rows(a):
    """The same shape, every row the same memory (row stride 0)."""
    return np.broadcast_to(a[:1], a.shape)


def every_other_column(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def padded_rows(a):
    """Rows evenly spaced with a gap: fine where the contract allows it, not where it wants
    C-contiguous rows."""
    wide = np.zeros((a.shape[0], a.shape[1] + 3), a.dtype)
    wide[:, :a.shape[1]] = a
    return wide[:, :a.shape[1]]


def transposed_copy(a):
    return np.asfortranarray(a) if a.ndim == 2 and min(a.shape) > 1 else a


@pytest.mark.parametrize("entry,name", CASES)
@pytest.mark.parametrize("bad,change,error,words", [
    ("other dtype", lambda a: a.astype(np.float64), TypeError, "must be an array of float32"),
    ("integers", lambda a: a.astype(np.int32), TypeError, "must be an array of float32"),
    ("a list", lambda a: a.tolist(), TypeError, "must be a NumPy array of float32.*got list"),
    ("byte-swapped", byte_swapped, ValueError, "must be in the machine's byte order"),
    ("misaligned", misaligned, ValueError, "must be aligned"),
    ("one row more", lambda a: np.concatenate([a, a[:1]]), ValueError, "have shape"),
    ("an extra axis", lambda a: a[None], ValueError, "-D"),
    ("strided last axis", every_other_column, ValueError, "contiguous last axis"),
])
def test_bad_float_buffers_are_refused(entry, name, bad, change, error, words):
    if name in ("x", "h0") and bad == "one row more":
        words = "batch_sizes"                # x and h0 fix N and B, which batch_sizes contradicts
    if name == "x" and bad in ("other dtype", "integers"):
        words = "float32 or float64" if bad == "integers" else "must be an array of float64"
    with pytest.raises(error, match=words):
        call_with(entry, ENTRIES[entry](), name, change)


@pytest.mark.parametrize("entry,name", [c for c in CASES if c[1] in WRITTEN[c[0]]])
def test_read_only_outputs_are_refused(entry, name):
    with pytest.raises(ValueError, match=f"{name} is read-only"):
        call_with(entry, ENTRIES[entry](), name, read_only)


@pytest.mark.parametrize("entry,name", [c for c in CASES if c[1] not in VECTORS])
@pytest.mark.parametrize("change", [broadcast_rows, padded_rows, transposed_copy])
def test_row_layouts(entry, name, change):
    """Broadcast rows are refused everywhere; spaced rows only where the contract allows them
    (out, grad_out); a Fortran-ordered copy nowhere (the workspace included)."""
    arguments = ENTRIES[entry]()
    if change is padded_rows and name in ROWS_MAY_BE_SPACED:
        call_with(entry, arguments, name, change)
        return
    if change is broadcast_rows and name in WRITTEN[entry]:
        with pytest.raises(ValueError):     # numpy marks broadcast views read-only
            call_with(entry, arguments, name, change)
        return
    with pytest.raises(ValueError, match="rows of|contiguous last axis"):
        call_with(entry, arguments, name, change)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("batch_sizes,words", [
    (np.array([3, 2, 2], np.int32), "must be an array of int64"),
    (np.array([3.0, 2.0, 2.0]), "must be an array of int64"),
    ([3, 2, 2], "must be a NumPy array of int64"),
    (np.array([[3, 2, 2]]), "1-D"),
    (np.array([3, 2, 3]), "non-increasing"),
    (np.array([3, 2, 0, 2]), "non-increasing and >= 1"),
    (np.array([3, 2, 1]), "must sum to the number of rows of x, N = 7, got 6"),
    (np.array([3, 3, 3]), "exceeds N"),
    (np.array([2, 2, 2, 1]), "batch_sizes\\[0\\] must be the batch size B"),
    (np.array([3, 1, 2, 1])[::2], "must be contiguous"),
    (np.array([3, 2, 2]).astype(">i8"), "byte order"),
    (np.zeros(0, np.int64), "batch_sizes is empty"),
])
def test_bad_batch_sizes_are_refused(entry, batch_sizes, words):
    arguments = ENTRIES[entry]()
    arguments["batch_sizes"] = batch_sizes
    with pytest.raises((ValueError, TypeError), match=words):
        getattr(kernels, entry)(**arguments)


@pytest.mark.parametrize("entry,words", [("rnn_forward_cpu", r"\[H\]"),
                                         ("lstm_forward_cpu", r"\[4H\]"),
                                         ("gru_forward_cpu", r"\[3H\]")])
def test_biases_come_in_pairs(entry, words):
    arguments = ENTRIES[entry]()
    arguments["b_hh"] = None
    with pytest.raises(ValueError, match=f"b_ih and b_hh must both be arrays {words} or both "
                                         "be None"):
        getattr(kernels, entry)(**arguments)


@pytest.mark.parametrize("entry,shape_words", [
    ("lstm_forward_cpu", r"w_ih to have shape \(4H, I\) = \(20, 4\)"),
    ("lstm_backward_cpu", r"grad_w_hh to have shape \(4H, P\) = \(20, 2\)"),
    ("gru_forward_cpu", r"w_ih to have shape \(3H, I\) = \(15, 4\)"),
    ("gru_backward_cpu", r"grad_b_ih to have shape \(3H,\) = \(15,\)"),
])
def test_gate_blocks_are_named_in_shape_errors(entry, shape_words):
    arguments = ENTRIES[entry]()
    name = shape_words.split(" ")[0]
    arguments[name] = arguments[name][:-1]
    with pytest.raises(ValueError, match=shape_words):
        getattr(kernels, entry)(**arguments)


def test_lstm_without_projection_needs_h_as_wide_as_c():
    arguments = forward_arguments("lstm")
    arguments["h0"] = np.zeros((3, 4), np.float32)                     # P = 4, H = 5
    arguments["out"], arguments["h_n"] = np.zeros((7, 4), np.float32), np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"h0 to have shape \(B, H\) = \(3, 5\) like c0"):
        kernels.lstm_forward_cpu(**arguments)


def test_projection_gradient_needs_a_projection():
    arguments = backward_arguments("lstm")
    arguments["grad_w_hr"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="grad_w_hr must be None without a projection"):
        kernels.lstm_backward_cpu(**arguments)


@pytest.mark.parametrize("entry", ENTRIES)
def test_errors_come_before_any_write(entry):
    """The last array checked is wrong: nothing may have been written by then."""
    arguments = ENTRIES[entry]()
    last = LAST_CHECKED[entry]
    arguments[last] = arguments[last][..., :-1].copy()
    written = [name for name in WRITTEN[entry] if name != last]
    before = {name: arguments[name].copy() for name in written}
    with pytest.raises(ValueError, match=last):
        getattr(kernels, entry)(**arguments)
    for name in written:
        np.testing.assert_array_equal(arguments[name], before[name], err_msg=name)


def test_huge_broadcast_input_is_refused_before_anything_runs():
    """A [2**33, I] input that is one row broadcast would make the kernels read 32 GB that
    does not exist; it is refused by its row stride."""
    arguments = forward_arguments()
    arguments["x"] = np.broadcast_to(arguments["x"][:1], (2 ** 33, 4))
    with pytest.raises(ValueError, match="x must have C-contiguous rows"):
        kernels.rnn_forward_cpu(**arguments)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_all_inputs_are_left_unchanged(cell):
    entry = f"{cell}_backward_cpu"
    arguments = backward_arguments(cell, dtype="float64", proj_size=2 if cell == "lstm" else None)
    inputs = {name: np.copy(value) for name, value in arguments.items()
              if isinstance(value, np.ndarray) and name not in WRITTEN[entry]}
    getattr(kernels, entry)(**arguments)
    for name, value in inputs.items():
        np.testing.assert_array_equal(arguments[name], value, err_msg=name)


@pytest.mark.parametrize("combination", list(itertools.product([False, True], repeat=2)))
def test_bias_gradients_may_be_missing(combination):
    """grad_b_ih / grad_b_hh may each be None (a caller that does not want one)."""
    arguments = backward_arguments()
    wanted = {}
    for name, keep in zip(("grad_b_ih", "grad_b_hh"), combination):
        if not keep:
            arguments[name] = None
        else:
            wanted[name] = arguments[name]
    kernels.rnn_backward_cpu(**arguments)
    reference_arguments = backward_arguments()
    reference.rnn_backward(**reference_arguments)
    for name, value in wanted.items():
        assert_close(value, reference_arguments[name], "float32")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_parameter_gradients_may_be_missing(cell):
    """grad_b_hh (and the LSTM's grad_w_hr) may be None; the others are what they are with
    all of them."""
    proj_size = 2 if cell == "lstm" else None
    full = backward_arguments(cell, proj_size=proj_size)
    getattr(kernels, f"{cell}_backward_cpu")(**full)
    partial = backward_arguments(cell, proj_size=proj_size)
    partial["grad_b_hh"] = None
    if cell == "lstm":
        partial["grad_w_hr"] = None
    getattr(kernels, f"{cell}_backward_cpu")(**partial)
    for name in ("grad_x", "grad_h0", "grad_w_ih", "grad_w_hh", "grad_b_ih"):
        np.testing.assert_array_equal(partial[name], full[name], err_msg=name)
