"""The limit: the time of just the matrix products a shape needs, measured in the same run.

On a CPU the products are the physical limit of a recurrent layer (everything else is a few
elementwise passes: one per step for the Elman RNN, one fused gate pass for LSTM and GRU), so
"share of limit" = limit time / engine time says how much of the machine an engine uses: 100%
runs at the speed of its products alone; above 100% beats the BLAS on them (fastrnn's fused
step kernels do on skinny steps); torch's large shapes sit at 55-80%.

How it is measured (the products are listed by ``shapes.products``; G = the cell's gates: 1
for the Elman RNN, 4 for LSTM, 3 for GRU, so a gated cell's products are G times as wide on
the gate side and everything below holds for all three):
- per layer and direction, forward: the input projection [T*B, I_l] x [I_l, G*H] and T step
  products [B, H] x [H, G*H]; backward adds T step-gradient products [B, G*H] x [G*H, H] and
  dX = g W_ih, dW_ih = g^T X, dW_hh = g^T [h_0..h_{T-1}] (one product each, K = T*B);
- a product that is one per layer-direction is one call of SciPy's ``sgemm``: the BLAS
  fastrnn's kernels call, on the same threads (fastrnn.set_num_threads set it), with
  preallocated outputs, operands transposed as the kernels store them;
- the T step products of a layer-direction are ONE call of NumPy's ``matmul`` on a [T, B, H]
  stack against W_hh (laid out once, as the product wants it: see shapes.forward_products)
  broadcast to [T, H, G*H] (stride 0, no copy): NumPy's C loop makes one
  BLAS call per product, so no Python runs between products. A Python call per product
  would cost ~2 us, more than a [1, 32] x [32, 32] product itself. These calls run NumPy's
  BLAS, set to the same thread count (the header names both libraries and their kernels);
- the limit is timed like an engine, taking its turn among them in every repeat; so are the
  same calls on 1 x 1 operands (``make_overhead_runner``), whose median is subtracted from
  the limit's: each call costs ~2 us of Python and argument checks (two per layer-direction
  forward, six forward + backward), which is 10-15% of the limit at (96, 1, 64, 64). Where
  the difference is under 2% of the limit's own time (toy shapes), the products cannot be
  told from the calls and no share is given.
- a ragged batch has no limit here: its steps shrink as sequences end, which no fixed stack
  of products times without a Python call per step.
"""
import dataclasses

import numpy as np

from . import shapes
from .engines import Runner

HOW = ("the shape's matrix products alone, timed in the same run on the same threads; their "
       "gate side is G*H wide (G = 1 RNN, 4 LSTM, 3 GRU). Each "
       "product made once per layer-direction (input projection; backward: dX, dW_ih, dW_hh) "
       "is one call of SciPy's sgemm, the BLAS fastrnn's kernels call. The T step products "
       "[B, H] x [H, G*H] of a layer-direction (forward, and backward's step gradients) are "
       "one NumPy matmul over a [T, B, H] stack, so NumPy's C loop makes one BLAS call per "
       "product with no Python between them (NumPy's own BLAS, same thread count). The same "
       "calls on 1 x 1 operands are timed too and their cost (Python, ~2 us a call) is "
       "subtracted")


class ProductCall:
    """One Product, ready to run: operands stored as the Product says (transposed where its
    trans flags are set), the output allocated once."""

    def __init__(self, product, rng):
        from scipy.linalg import blas     # here, not at import: see run.prepare_threads
        self.sgemm = blas.sgemm
        p = product
        stored_a = (p.k, p.m) if p.trans_a else (p.m, p.k)
        stored_b = (p.k, p.n) if not p.trans_b else (p.n, p.k)
        self.product = product
        if p.count == 1:
            self.a = rng.standard_normal(stored_a, dtype=np.float32)
            self.b = rng.standard_normal(stored_b, dtype=np.float32)
            self.out = np.empty((p.m, p.n), dtype=np.float32)
            self.run = self._one_sgemm
        else:
            self.a = rng.standard_normal((p.count,) + stored_a, dtype=np.float32)
            self.b = rng.standard_normal(stored_b, dtype=np.float32)    # the same W each step
            self.out = np.empty((p.count, p.m, p.n), dtype=np.float32)
            self.op_a = self.a.swapaxes(1, 2) if p.trans_a else self.a
            op_b = self.b.T if p.trans_b else self.b
            self.op_b = np.broadcast_to(op_b, (p.count,) + op_b.shape)
            self.run = self._stacked_matmul

    def _one_sgemm(self):
        # Row-major out = op(a) op(b) is column-major out^T = op(b)^T op(a)^T: the
        # transposed views are Fortran-ordered, so SciPy's wrapper passes them without copies.
        p = self.product
        self.sgemm(1.0, self.b.T, self.a.T, c=self.out.T, trans_a=p.trans_b,
                   trans_b=p.trans_a, overwrite_c=True)

    def _stacked_matmul(self):
        np.matmul(self.op_a, self.op_b, out=self.out)

    def expected(self):
        """op(A) op(B) by NumPy, for checking run() (tests)."""
        op = lambda m, trans: m.swapaxes(-1, -2) if trans else m
        return np.matmul(op(self.a, self.product.trans_a), op(self.b, self.product.trans_b))


def _runner(forward_products, backward_products, seed=1):
    """forward() runs the forward products, forward_backward() all of them."""
    import fastrnn
    rng = np.random.default_rng(seed)
    forward_calls = [ProductCall(p, rng) for p in forward_products]
    all_calls = forward_calls + [ProductCall(p, rng) for p in backward_products]

    def forward():
        for call in forward_calls:
            call.run()

    def forward_backward():
        for call in all_calls:
            call.run()

    return Runner(forward, forward_backward, results=dict, threads=fastrnn.get_num_threads)


def make_runner(shape):
    """The limit as an engine."""
    return _runner(shapes.forward_products(shape), shapes.backward_products(shape))


def _unit(product):
    """The same call on 1 x 1 operands (two of them where the call runs a stack)."""
    return dataclasses.replace(product, m=1, k=1, n=1, count=min(product.count, 2))


def make_overhead_runner(shape):
    """The limit's calls with 1 x 1 operands: what they cost besides the products (Python,
    argument checks, the BLAS's own entry). Timed beside the limit and subtracted from it."""
    return _runner([_unit(p) for p in shapes.forward_products(shape)],
                   [_unit(p) for p in shapes.backward_products(shape)])
