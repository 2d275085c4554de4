"""Packed LSTM and GRU problems for the 'cuda' backend's tests (simulator and real GPU): one
layer-direction at the backend contract's level, run through any backend module.

A backend's gated entries are called by their arguments' names (the contract's names,
backends/__init__.py), so one runner serves LSTM and GRU, the reference and the cuda backend.
"""
import inspect

import numpy as np

from packed_problems import batch_sizes_of

PARAMETERS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def gated_problem(rng, cell, lengths, I, H, dtype, bias=True, P=None):
    """Random inputs of one layer-direction of ``cell`` over a packed batch of these sorted
    lengths; P: LSTM's proj_size (None: no projection)."""
    batch_sizes = batch_sizes_of(lengths)
    N, B, gates = int(batch_sizes.sum()), len(lengths), 4 if cell == "lstm" else 3
    width = H if P is None else P

    def draw(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    def weights(rows, fan_in):             # torch's init scale: gates neither flat nor saturated
        return draw(rows, fan_in, scale=1 / np.sqrt(max(fan_in, 1)))

    problem = dict(batch_sizes=batch_sizes, x=draw(N, I), h0=draw(B, width, scale=0.5),
                   w_ih=weights(gates * H, I), w_hh=weights(gates * H, width),
                   b_ih=draw(gates * H) if bias else None, b_hh=draw(gates * H) if bias else None,
                   grad_out=draw(N, width), grad_hn=draw(B, width))
    if cell == "lstm":
        problem.update(c0=draw(B, H, scale=0.5), grad_cn=draw(B, H),
                       w_hr=None if P is None else weights(P, H))
    return problem


def call_entry(function, values):
    """``function`` called with the entries of ``values`` its contract names (every backend
    names its arguments as backends/__init__.py does)."""
    return function(**{name: values[name] for name in inspect.signature(function).parameters})


def run_gated(module, cell, problem, reverse, accumulate_x=False):
    """Forward and backward of one layer-direction through ``module``'s contract; host copies
    of everything written."""
    arrays, dtype = module.ARRAYS, problem["x"].dtype
    (N, I), (B, width) = problem["x"].shape, problem["h0"].shape
    H = problem["w_hh"].shape[0] // (4 if cell == "lstm" else 3)

    def filled(shape, value):
        return arrays.asarray(np.full(shape, value, dtype))

    values = {name: value if value is None or name == "batch_sizes" else arrays.asarray(value)
              for name, value in problem.items()}
    out_both, grad_out_both = filled((N, 2 * width), 7), filled((N, 2 * width), 0)
    arrays.copy_into(grad_out_both[:, width:], values["grad_out"])
    values.update(reverse=reverse, accumulate_x=accumulate_x, out=out_both[:, width:],
                  grad_out=grad_out_both[:, width:], h_n=filled((B, width), 7),
                  workspace=filled((N, (5 if cell == "lstm" else 4) * H), 7),
                  grad_x=filled((N, I), 2.0 if accumulate_x else np.nan),
                  grad_h0=filled((B, width), np.nan))
    for name in PARAMETERS:
        present = values.get(name) is not None
        values["grad_" + name] = filled(problem[name].shape, 1.0) if present else None
    if cell == "lstm":
        values.update(c_n=filled((B, H), 7), grad_c0=filled((B, H), np.nan))
    call_entry(getattr(module, f"{cell}_forward"), values)
    call_entry(getattr(module, f"{cell}_backward"), values)
    written = ["h_n", "c_n", "workspace", "grad_x", "grad_h0", "grad_c0"]
    written += ["grad_" + name for name in PARAMETERS]
    results = {name: arrays.to_host(values[name]) for name in written
               if values.get(name) is not None}
    results["out"] = arrays.to_host(out_both)
    return results
