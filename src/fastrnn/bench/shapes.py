"""The benchmark shapes, and the matrix products each one needs.

Why the products live here: the limit (limit.py) and the FLOP counts are both read off the
same list, so they cannot disagree about what a shape costs. The sets are the ones in
design.md ("Performance protocol").
"""
import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """One benchmark case: time steps, batch, input, hidden, layers, bidirectional."""
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    group: str = ""

    @property
    def label(self):
        return (f"{self.T},{self.B},{self.I},{self.H},{self.layers},"
                f"{'bi' if self.bidirectional else 'uni'}")

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
    """Per layer-direction: the input projection x W_ih^T, [T*B, I_l] x [I_l, H] (one product
    for all steps), and T step products h_{t-1} W_hh^T, [B, H] x [H, H]. The step operand is
    taken as already transposed: an implementation lays W_hh out once per call (fastrnn
    packs it), and that layout is the faster one for BLAS on skinny steps (measured: up to
    1.6x at B = 1..32)."""
    products = []
    for width in shape.layer_inputs():
        products += [Product("input projection", shape.T * shape.B, width, shape.H,
                             trans_b=True),
                     Product("step", shape.B, shape.H, shape.H, count=shape.T)
                     ] * shape.directions
    return products


def backward_products(shape):
    """Per layer-direction: T step-gradient products dH_{t-1} = g_t W_hh [B, H] x [H, H], then
    one product each for dX = G W_ih, dW_ih = G^T X and dW_hh = G^T [h_0..h_{T-1}]."""
    products = []
    for width in shape.layer_inputs():
        tokens = shape.T * shape.B
        products += [Product("step gradient", shape.B, shape.H, shape.H, count=shape.T),
                     Product("dX", tokens, shape.H, width),
                     Product("dW_ih", shape.H, tokens, width, trans_a=True),
                     Product("dW_hh", shape.H, tokens, shape.H, trans_a=True)] * shape.directions
    return products


def products(shape, mode):
    """The products of one forward ('forward') or of forward and backward ('forward_backward')."""
    return forward_products(shape) + (backward_products(shape) if mode == "forward_backward"
                                      else [])


def flops(shape, mode):
    return sum(product.flops for product in products(shape, mode))


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

# The latency section: per-call cost of a streaming step (T=1) and of a short chunk (T=16).
LATENCY = [Shape(1, 1, 64, 64, group="latency"), Shape(16, 1, 64, 64, group="latency")]


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
