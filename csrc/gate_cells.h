/* The elementwise passes of the gated cells (torch's LSTM and GRU), one per cell and direction.
 * Each runs over a block of rows after the step's product h_prev W_hh^T and before the next
 * step's, for the units [unit_begin, unit_end) (threads share a step's pass by units).
 *
 * LSTM (workspace row [5H] = i f g o c; a = x W_ih^T + b_ih + h_prev W_hh^T + b_hh, [4H]; the
 *       workspace holds a without the biases, which the forward pass adds):
 *   forward    i, f, o = sigmoid(a_i, a_f, a_o)   g = tanh(a_g)
 *              c = f * c_prev + i * g              hidden = o * tanh(c)   (h, or h before W_hr)
 *   backward   (dh = dL/d hidden, dc = dL/dc_t from the step after)
 *              dc += dh * o * (1 - tanh(c)^2)
 *              da_i = dc * g * i (1 - i)    da_f = dc * c_prev * f (1 - f)
 *              da_g = dc * i * (1 - g^2)    da_o = dh * tanh(c) * o (1 - o)
 *              dc_prev = dc * f
 * GRU (workspace row [4H] = r z n hn, hn = h_prev W_hn^T + b_hn; the step's product gives
 *      h_prev W_hh^T [3H], the input projection x [3H] = x W_ih^T, the forward pass adds the
 *      biases: b_ih + b_hh to r and z, b_in to x_n, b_hn inside r * (.)):
 *   forward    r = sigmoid(x_r + h_r + b_r)   z = sigmoid(x_z + h_z + b_z)   hn = h_n + b_hn
 *              n = tanh(x_n + b_in + r * hn)    h = (1 - z) * n + z * h_prev
 *   backward   (dh = dL/dh_t)
 *              dn = dh (1 - z)(1 - n^2)   dr = dn * hn * r (1 - r)   dz = dh (h_prev - n) z (1 - z)
 *              grad_gates = [dr, dz, dn * r, dn]: the first 3H reach W_hh and b_hh, [dr dz dn]
 *              reach W_ih and b_ih;  dh_prev (+)= dh * z  (the product adds [dr dz dn*r] W_hh)
 * sigmoid(a) = 0.5 + 0.5 tanh(a / 2), as in backends/activations.py; the derivatives are written
 * in terms of the activations' outputs, which the workspace keeps.
 * They must match fastrnn/backends/reference.py (lstm_*_numpy, gru_*_numpy).
 *
 * Why one templated source (gate_cells_impl.h): the same passes run on float32 vectors of every
 * step-kernel variant (step_gemm.h includes them next to the products, so the tanh is the
 * products' rational one and the variant is chosen once for both) and on float64 scalars with
 * libm's tanh (instantiated here).
 */
#ifndef FASTRNN_GATE_CELLS_H
#define FASTRNN_GATE_CELLS_H

#include <math.h>
#include <stddef.h>
#include <string.h>

/* One block of rows of an LSTM pass; every array [m, .] rows ld_* apart, in the call's dtype.
 * Fields a pass does not use are NULL. */
typedef struct {
    ptrdiff_t m, H;
    void *gates; ptrdiff_t ld_gates;              /* [m, 5H] workspace rows: forward: a minus
                                                     the biases in the first 4H, written with
                                                     i f g o c; backward: read */
    const void *bias;                             /* [4H] forward: b_ih + b_hh, or NULL */
    const void *c_prev; ptrdiff_t ld_c_prev;      /* [m, H] c_{t-1} */
    void *hidden; ptrdiff_t ld_hidden;            /* [m, H] written with o * tanh(c) (forward;
                                                     backward: when not NULL) */
    const void *grad_hidden; ptrdiff_t ld_grad_hidden;   /* [m, H] backward: dL/d hidden */
    void *grad_c; ptrdiff_t ld_grad_c;            /* [m, H] backward: dL/dc_t in, dL/dc_{t-1} out */
    void *grad_gates; ptrdiff_t ld_grad_gates;    /* [m, 4H] backward: written with dL/da */
} lstm_rows;

/* One block of rows of a GRU pass (as lstm_rows). */
typedef struct {
    ptrdiff_t m, H;
    void *gates; ptrdiff_t ld_gates;              /* [m, 4H] workspace rows: forward: x W_ih^T
                                                     in the first 3H, written with r z n hn;
                                                     backward: read */
    const void *bias;                             /* [3H] forward: b_ih + [b_hr, b_hz, 0], or
                                                     NULL */
    const void *hidden_part; ptrdiff_t ld_hidden_part;   /* [m, 3H] forward: h_prev W_hh^T */
    const void *b_hn;                             /* [H] forward: b_hh's n block, or NULL */
    const void *h_prev; ptrdiff_t ld_h_prev;      /* [m, H] */
    void *h; ptrdiff_t ld_h;                      /* [m, H] forward: written with h_t */
    const void *grad_h; ptrdiff_t ld_grad_h;      /* [m, H] backward: dL/dh_t */
    void *grad_gates; ptrdiff_t ld_grad_gates;    /* [m, 4H] backward: written, dr dz dn*r dn */
    void *grad_h_prev; ptrdiff_t ld_grad_h_prev;  /* [m, H] backward: dh * z added (or written, */
    int assign_grad_h_prev;                       /*   when assign_grad_h_prev) */
} gru_rows;

/* A pass over one block of rows (an lstm_rows or gru_rows) for units [unit_begin, unit_end). */
typedef void (*cell_pass_fn)(const void *rows, ptrdiff_t unit_begin, ptrdiff_t unit_end);

typedef struct {
    cell_pass_fn lstm_forward, lstm_backward, gru_forward, gru_backward;
} gate_cell_passes;

/* ---- float64: scalars and libm ----------------------------------------------------------- */
#define SUFFIX f64
#define REAL double
#define VW 1
typedef double vec_f64;
static inline vec_f64 tanh_vec_f64(vec_f64 v) { return tanh(v); }
#include "gate_cells_impl.h"
#undef SUFFIX
#undef REAL
#undef VW

static const gate_cell_passes gate_cells_f64 = {
    lstm_forward_cells_f64, lstm_backward_cells_f64, gru_forward_cells_f64,
    gru_backward_cells_f64};

#endif
