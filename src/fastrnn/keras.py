"""Move Elman RNN weights between Keras ``SimpleRNN`` layers and fastrnn / ``torch.nn.RNN``.

Why a converter and not a Keras layer: the two libraries compute the same recurrence and differ
only in how they store it, so moving arrays is all it takes. Keras (3.x, and tf.keras 2.x)
keeps one ``SimpleRNN`` cell as ``layer.get_weights()``:

    kernel            [I, H]   multiplies x_t from the right:     x_t @ kernel
    recurrent_kernel  [H, H]   multiplies h_{t-1} from the right: h_{t-1} @ recurrent_kernel
    bias              [H]      one bias (absent with ``use_bias=False``)

fastrnn and ``torch.nn.RNN`` keep the transposes, and two biases that are only ever added:

    weight_ih_l{k} [H, I] = kernel.T      bias_ih_l{k} [H]  } bias_ih + bias_hh = Keras's bias
    weight_hh_l{k} [H, H] = recurrent_kernel.T   bias_hh_l{k} [H]  }

so Keras -> fastrnn puts Keras's bias in ``bias_ih`` and zeros in ``bias_hh``, and
fastrnn -> Keras adds the two. A ``Bidirectional(SimpleRNN(...))`` layer's ``get_weights()`` is
the forward cell's arrays, then the backward cell's (torch's ``_reverse`` names); its default
``merge_mode="concat"`` is torch's [forward, backward] output layout. A stack of SimpleRNN
layers (all but the last with ``return_sequences=True``) is ``num_layers`` layers.

The equivalent fastrnn layer: ``fastrnn.RNN(I, H, num_layers=len(layers),
bidirectional=..., batch_first=True)`` (Keras is batch-first); Keras's ``activation="tanh"``
(default) or ``"relu"`` is ``nonlinearity``; ``return_sequences=False`` is ``output[:, -1]``
(forward) or ``h_n`` (the last state of each direction). Keras's ``dropout``,
``recurrent_dropout`` and ``go_backwards`` have no counterpart here.

This module imports neither Keras nor torch: it works on the arrays Keras's ``get_weights()``
returns and ``set_weights()`` takes, and on any state_dict ``np.asarray`` can read (fastrnn's,
or a CPU ``torch.nn.RNN``'s / ``fastrnn.torch.RNN``'s).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["state_dict_from_keras", "state_dict_to_keras"]

_DIRECTIONS = ("", "_reverse")
_STATE_NAME = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")
# arrays per Keras layer -> (bidirectional, bias)
_LAYER_KINDS = {2: (False, False), 3: (False, True), 4: (True, False), 6: (True, True)}


def _layer_arrays(layer: Any, index: int) -> list[NDArray[Any]]:
    """One Keras layer's weights as arrays: from the layer itself or from its weight list."""
    if hasattr(layer, "get_weights"):
        layer = layer.get_weights()
    if isinstance(layer, np.ndarray) or not isinstance(layer, Sequence):
        raise TypeError(f"layers[{index}]: expected a Keras layer or the list its get_weights() "
                        f"returns, got {type(layer).__name__}; for one layer pass "
                        f"[layer] or [layer.get_weights()]")
    return [np.asarray(array) for array in layer]


def _check_shape(array: NDArray[Any], shape: tuple[int, ...], what: str) -> None:
    if array.shape != shape:
        raise ValueError(f"{what}: expected shape {list(shape)}, got {list(array.shape)}")


def state_dict_from_keras(layers: Sequence[Any]) -> dict[str, NDArray[Any]]:
    """fastrnn / torch.nn.RNN state_dict of a stack of Keras ``SimpleRNN`` layers.

    ``layers``: one entry per stacked layer, first layer first; each entry is a Keras
    ``SimpleRNN`` or ``Bidirectional(SimpleRNN)`` layer, or the list its ``get_weights()``
    returns: ``[kernel [I, H], recurrent_kernel [H, H], bias [H]]`` (bias absent with
    ``use_bias=False``), twice in a row (forward, backward) for a Bidirectional layer. Every
    layer must have the same units H, direction and bias use; layer k > 0 takes I = H * D
    (D = 2 when bidirectional).

    Returns ``{name: array}`` in torch's names and order (``weight_ih_l0`` [H, I],
    ``weight_hh_l0`` [H, H], ``bias_ih_l0`` [H], ``bias_hh_l0`` [H], ..., ``_reverse`` for
    the backward direction), C-contiguous copies in the Keras arrays' dtype; ``bias_hh_l*``
    are zeros. Load it with ``fastrnn.RNN(...).load_state_dict`` (or a torch module's, after
    ``torch.from_numpy``). Raises ValueError on a count or shape that is not a SimpleRNN's.
    """
    if not layers:
        raise ValueError("expected at least one Keras layer, got none")
    all_arrays = [_layer_arrays(layer, k) for k, layer in enumerate(layers)]
    for k, arrays in enumerate(all_arrays):
        if len(arrays) not in _LAYER_KINDS:
            raise ValueError(f"layers[{k}]: a SimpleRNN has 2 or 3 weight arrays (4 or 6 when "
                             f"Bidirectional), got {len(arrays)}")
        if _LAYER_KINDS[len(arrays)] != _LAYER_KINDS[len(all_arrays[0])]:
            raise ValueError(f"layers[{k}]: every layer must have the same direction and bias "
                             f"use as layers[0] ({len(all_arrays[0])} arrays), got "
                             f"{len(arrays)} arrays")
    if all_arrays[0][0].ndim != 2:
        raise ValueError(f"layers[0] kernel: expected shape [I, H], got "
                         f"{list(all_arrays[0][0].shape)}")
    bidirectional, bias = _LAYER_KINDS[len(all_arrays[0])]
    directions = _DIRECTIONS[:2 if bidirectional else 1]
    input_size, hidden = all_arrays[0][0].shape
    state: dict[str, NDArray[Any]] = {}
    for k, arrays in enumerate(all_arrays):
        per_direction = len(arrays) // len(directions)
        for d, suffix in enumerate(directions):
            cell = arrays[d * per_direction:(d + 1) * per_direction]
            where = f"layers[{k}]{' backward' if d else ''}"
            _check_shape(cell[0], (input_size, hidden), f"{where} kernel")
            _check_shape(cell[1], (hidden, hidden), f"{where} recurrent_kernel")
            state[f"weight_ih_l{k}{suffix}"] = np.ascontiguousarray(cell[0].T)
            state[f"weight_hh_l{k}{suffix}"] = np.ascontiguousarray(cell[1].T)
            if bias:
                _check_shape(cell[2], (hidden,), f"{where} bias")
                state[f"bias_ih_l{k}{suffix}"] = np.array(cell[2])
                state[f"bias_hh_l{k}{suffix}"] = np.zeros_like(cell[2])
        input_size = hidden * len(directions)
    return state


def _layer_count(state: Mapping[str, ArrayLike]) -> tuple[int, bool, bool]:
    """(num_layers, bidirectional, bias) of a state_dict with torch.nn.RNN's names."""
    matches = [_STATE_NAME.fullmatch(name) for name in state]
    unknown = [name for name, match in zip(state, matches) if match is None]
    if unknown:
        raise ValueError(f"unexpected key(s) {unknown}: expected an RNN's own state_dict "
                         f"(weight_ih_l0, weight_hh_l0, ...; for a layer inside a model pass "
                         f"model.<rnn>.state_dict())")
    if not state:
        raise ValueError("expected a state_dict with weight_ih_l0, ..., got an empty one")
    parts = [match.groups() for match in matches if match is not None]
    num_layers = 1 + max(int(layer) for _, layer, _ in parts)
    bidirectional = any(reverse for _, _, reverse in parts)
    bias = any(kind.startswith("bias") for kind, _, _ in parts)
    return num_layers, bidirectional, bias


def state_dict_to_keras(state_dict: Mapping[str, ArrayLike]) -> list[list[NDArray[Any]]]:
    """Keras ``set_weights()`` lists for a fastrnn / torch.nn.RNN state_dict.

    ``state_dict``: ``{name: array}`` with torch.nn.RNN's names (``weight_ih_l0`` [H, I],
    ``weight_hh_l0`` [H, H], ``bias_ih_l0`` [H], ``bias_hh_l0`` [H], ..., ``_reverse``),
    e.g. ``fastrnn.RNN.state_dict()`` or a CPU torch RNN's ``state_dict()``.

    Returns one list per layer, first layer first, to pass to that Keras layer's
    ``set_weights()``: ``[kernel [I, H], recurrent_kernel [H, H], bias [H]]`` with
    ``bias = bias_ih + bias_hh`` (no bias when the state_dict has none), the backward cell's
    three arrays appended for a bidirectional layer (for ``Bidirectional(SimpleRNN(H))``).
    Arrays keep the state_dict's dtype. Raises ValueError on a missing or unexpected name.
    """
    num_layers, bidirectional, bias = _layer_count(state_dict)
    kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    layers = []
    for k in range(num_layers):
        arrays = []
        for suffix in _DIRECTIONS[:2 if bidirectional else 1]:
            names = [f"{kind}_l{k}{suffix}" for kind in kinds]
            missing = [name for name in names if name not in state_dict]
            if missing:
                raise ValueError(f"missing key(s) {missing} in the state_dict")
            w_ih, w_hh, *biases = (np.asarray(state_dict[name]) for name in names)
            arrays += [np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T)]
            if bias:
                arrays.append(biases[0] + biases[1])
        layers.append(arrays)
    return layers
