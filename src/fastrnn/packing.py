"""Variable-length batches: from the caller's padded batch and ``lengths`` to the packed layout.

Why packed: the kernels compute step t for the sequences still running at t only, so a ragged
batch costs its real tokens, not its padding. They need the batch sorted by decreasing length
and its tokens grouped by step (torch's PackedSequence layout, see backends/__init__.py). This
module works out, once per call and on the host, which row of the padded time-major array each
packed row is; moving the rows is one gather (and one scatter back), done by the backend's
array operations, so it works on any device. ``lengths`` may come in any order: the caller's
order is restored on the way out.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ._checks import ShapeError


@dataclass(frozen=True)
class Packing:
    """Where each packed row comes from, and how to put the batch back in the caller's order."""
    batch_sizes: np.ndarray        # [T] int64: sequences longer than t, non-increasing
    sorted_indices: np.ndarray     # [B] int64: sorted position p holds caller's sequence this
    unsorted_indices: np.ndarray   # [B] int64: caller's sequence b sits at this sorted position
    rows: np.ndarray               # [N] int64: packed row r is row rows[r] of [T*B, F]


def check_lengths(lengths, batch: int, steps: int) -> np.ndarray:
    """``lengths`` as an int64 array [B]; torch's wording where torch has a check."""
    return _checked_with_range(lengths, batch, steps)[0]


def _checked_with_range(lengths, batch, steps):
    """(lengths as int64 [B], shortest, longest): the checks, and the range they computed."""
    try:
        values = np.asarray(lengths)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"lengths must be a 1-D array of integers, one per sequence: {exc}") from None
    if values.dtype.kind not in "iu" and values.size:     # [] is float64 to NumPy
        raise TypeError(f"lengths must be integers (one per sequence), got an array of "
                        f"{values.dtype}; convert it with .astype(np.int64) if its values are "
                        "whole numbers")
    if values.ndim != 1:
        raise ShapeError(f"lengths must be a 1-D array with one length per sequence, got shape "
                         f"{values.shape}")
    if values.shape[0] != batch:
        raise ShapeError(f"Expected `len(lengths)` to be equal to batch_size, but got "
                         f"{values.shape[0]} (batch_size={batch})")
    if not batch:
        return values.astype(np.int64, copy=False), None, None
    shortest, longest = int(np.minimum.reduce(values)), int(np.maximum.reduce(values))
    if shortest <= 0:
        raise ValueError("Length of all samples has to be greater than 0, but found an element "
                         "in 'lengths' that is <= 0")
    if longest > steps:
        raise ValueError(f"Expected every length to be at most the sequence length {steps}, got "
                         f"a length of {longest}")
    return values.astype(np.int64, copy=False), shortest, longest


def plan_packing(lengths, batch: int, steps: int) -> Packing:
    """The Packing of a padded [T, B, F] batch whose sequence b has ``lengths[b]`` steps."""
    lengths = check_lengths(lengths, batch, steps)
    sorted_indices = np.argsort(-lengths, kind="stable").astype(np.int64)
    unsorted_indices = np.empty_like(sorted_indices)
    unsorted_indices[sorted_indices] = np.arange(batch, dtype=np.int64)
    sorted_lengths = lengths[sorted_indices]
    longest = int(sorted_lengths[0]) if batch else 0
    running = sorted_lengths[None, :] > np.arange(longest)[:, None]      # [T', B]: step t of p
    steps_of_rows, positions = np.nonzero(running)                        # in packed row order
    rows = steps_of_rows * batch + sorted_indices[positions]
    return Packing(running.sum(axis=1).astype(np.int64), sorted_indices, unsorted_indices,
                   rows.astype(np.int64))


def runs_every_step(lengths, batch: int, steps: int) -> bool:
    """Whether ``lengths`` (checked here) lets every sequence run all ``steps`` steps: then the
    batch needs no packing at all (the plain layout, no copies, no cost for passing lengths)."""
    return batch > 0 and _checked_with_range(lengths, batch, steps)[1] == steps


@functools.lru_cache(maxsize=64)
def equal_batch_sizes(batch: int, steps: int) -> np.ndarray:
    """batch_sizes of an equal-length batch: every sequence runs all ``steps`` steps. Cached
    (a call with the shapes of the previous ones allocates nothing), so shared: backends read
    batch_sizes, they never write it."""
    return np.full(steps, batch, dtype=np.int64)
