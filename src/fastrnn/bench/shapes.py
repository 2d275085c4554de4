"""The benchmark shapes, and the matrix products each one needs.

Why the products live here: the limit (limit.py) and the FLOP counts are both read off the
same list, so they cannot disagree about what a shape costs. The sets are the ones in
design.md ("Performance protocol"). A shape names its cell (the Elman RNN, LSTM or GRU): a
gated cell's products are the Elman ones with G = 4 (LSTM) or 3 (GRU) times the width on the
gate side, so one list serves all three. A ragged shape also names its sequences' lengths.
"""
import argparse
import dataclasses
from dataclasses import dataclass

import numpy as np

# Gates per cell: the width of the products on the gate side is GATES[cell] * H.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELLS = tuple(GATES)


@dataclass(frozen=True)
class Shape:
    """One benchmark case: time steps, batch, input, hidden, layers, bidirectional, the cell;
    ``shortest`` > 0 makes it a ragged batch: lengths spread evenly from ``shortest`` to T
    (``shortest`` = T: equal lengths, still given as lengths)."""
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    group: str = ""
    cell: str = "rnn"
    shortest: int = 0

    @property
    def label(self):
        return (f"{self.T},{self.B},{self.I},{self.H},{self.layers},"
                f"{'bi' if self.bidirectional else 'uni'}")

    @property
    def lengths_label(self):
        """'10..200' (ragged), 'all 200' (equal lengths given), '' (no lengths)."""
        if not self.shortest:
            return ""
        return f"all {self.T}" if self.shortest == self.T else f"{self.shortest}..{self.T}"

    @property
    def key(self):
        """The cell, the sizes and the lengths: unique within a run (labels of skips, bars)."""
        return " ".join(filter(None, [self.cell, self.label, self.lengths_label]))

    @property
    def gates(self):
        return GATES[self.cell]

    def lengths(self, seed=0):
        """The sequences' lengths in a seeded shuffled order (None without lengths): callers
        get them unsorted, as a data loader would give them."""
        if not self.shortest:
            return None
        spread = np.linspace(self.shortest, self.T, self.B).round().astype(np.int64)
        return np.random.default_rng(seed).permutation(spread)

    @property
    def tokens(self):
        """Time steps that hold data: T * B, or the lengths' sum."""
        return self.T * self.B if not self.shortest else int(self.lengths().sum())

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    def layer_inputs(self):
        """The input width of each layer: I, then the previous layer's D*H."""
        return [self.I] + [self.directions * self.H] * (self.layers - 1)


@dataclass(frozen=True)
class Product:
    """``count`` products op(A) [m, k] x op(B) [k, n], all of one kind; op transposes the
    stored matrix where the kernels' operand is stored the other way (W_ih [H, I] in
    x W_ih^T, G [T*B, H] in G^T X)."""
    kind: str           # "input projection", "step", "step gradient", "dX", "dW_ih", "dW_hh"
    m: int
    k: int
    n: int
    count: int = 1      # T for the per-step products, 1 for the merged ones
    trans_a: bool = False
    trans_b: bool = False

    @property
    def flops(self):
        return 2 * self.m * self.k * self.n * self.count


def forward_products(shape):
    """Per layer-direction: the input projection x W_ih^T, [T*B, I_l] x [I_l, G*H] (one
    product for all steps), and T step products h_{t-1} W_hh^T, [B, H] x [H, G*H]; G = the
    cell's gates (1 for the Elman RNN). The step operand is taken as already transposed: an
    implementation lays W_hh out once per call (fastrnn packs it), and that layout is the
    faster one for BLAS on skinny steps (measured: up to 1.6x at B = 1..32)."""
    products, gated = [], shape.gates * shape.H
    for width in shape.layer_inputs():
        products += [Product("input projection", shape.T * shape.B, width, gated,
                             trans_b=True),
                     Product("step", shape.B, shape.H, gated, count=shape.T)
                     ] * shape.directions
    return products


def backward_products(shape):
    """Per layer-direction: T step-gradient products dH_{t-1} = g_t W_hh [B, G*H] x [G*H, H],
    then one product each for dX = g W_ih, dW_ih = g^T X and dW_hh = g^T [h_0..h_{T-1}] (g:
    the gates' gradients, [T*B, G*H])."""
    products, gated, tokens = [], shape.gates * shape.H, shape.T * shape.B
    for width in shape.layer_inputs():
        products += [Product("step gradient", shape.B, gated, shape.H, count=shape.T),
                     Product("dX", tokens, gated, width),
                     Product("dW_ih", gated, tokens, width, trans_a=True),
                     Product("dW_hh", gated, tokens, shape.H, trans_a=True)] * shape.directions
    return products


def products(shape, mode):
    """The products of one forward ('forward') or of forward and backward ('forward_backward')."""
    return forward_products(shape) + (backward_products(shape) if mode == "forward_backward"
                                      else [])


def flops(shape, mode):
    """The products' FLOPs; for a ragged batch only its tokens' share (every product's T*B
    rows or T steps of B rows shrink to the tokens)."""
    padded = sum(product.flops for product in products(shape, mode))
    return padded * shape.tokens // (shape.T * shape.B)


DEVICE_INFERENCE = [Shape(672, 1, 32, 32, group="device inference"),
                    Shape(96, 1, 64, 64, group="device inference")]
SMALL = [Shape(100, 16, 64, 64, group="small"), Shape(100, 32, 256, 256, group="small"),
         Shape(100, 64, 512, 512, group="torch default"),
         Shape(50, 32, 128, 256, 2, True, group="stacked")]
DEEPBENCH = [Shape(50, B, H, H, group="DeepBench training")
             for H in (1760, 2048, 2560) for B in (16, 32, 64, 128)]
TINY = [Shape(8, 2, 8, 8, group="tiny"), Shape(5, 3, 6, 10, 2, True, group="tiny")]
SHAPE_SETS = {"small": DEVICE_INFERENCE + SMALL, "deepbench": DEEPBENCH,
              "all": DEVICE_INFERENCE + SMALL + DEEPBENCH, "tiny": TINY}

# The ragged section (issue 11): design.md's ragged batch (64 sequences, lengths 10..200,
# I = H = 256), and an equal-lengths batch given as lengths, against the same without them.
RAGGED = [Shape(200, 64, 256, 256, group="ragged", shortest=10),
          Shape(100, 16, 64, 64, group="equal lengths", shortest=100)]
TINY_RAGGED = [Shape(9, 4, 5, 6, group="ragged", shortest=2),
               Shape(5, 3, 4, 4, group="equal lengths", shortest=5)]

# The latency section: per-call cost of a streaming step (T=1) and of a short chunk (T=16).
LATENCY = [Shape(1, 1, 64, 64, group="latency"), Shape(16, 1, 64, 64, group="latency")]


def ragged_shapes(shape_set):
    """The ragged section's shapes: the toy ones with the toy set, else design.md's."""
    return TINY_RAGGED if shape_set == "tiny" else RAGGED


def with_cells(shape_list, cells):
    """Each shape once per cell, a shape's cells side by side."""
    return [dataclasses.replace(shape, cell=cell) for shape in shape_list for cell in cells]


def parse_shape(text):
    """'T,B,I,H[,layers[,bi|uni]]' -> Shape (argparse reports the error as a usage error)."""
    parts = text.split(",")
    if not 4 <= len(parts) <= 6 or (len(parts) == 6 and parts[5] not in ("bi", "uni", "no")):
        raise argparse.ArgumentTypeError(f"expected T,B,I,H[,layers[,bi|uni]], got {text!r}")
    try:
        sizes = [int(part) for part in parts[:5]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers in {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return Shape(*sizes, bidirectional=parts[5:] == ["bi"], group="custom")
