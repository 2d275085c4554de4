/* One instantiation of the gated cells' elementwise passes (the maths: gate_cells.h); included
 * once per float32 step-kernel variant (by step_gemm.h, inside its target pragma) and once for
 * float64 (by gate_cells.h). The includer defines
 *     SUFFIX   name suffix of the functions made here (e.g. avx512, f64)
 *     REAL     float or double
 *     VW       REALs in one FN(vec)
 * and provides the type FN(vec) (VW REALs: a GCC vector that may be unaligned, or a plain
 * double when VW is 1) and FN(tanh_vec). A pass walks its rows and, in each row, its units VW
 * at a time; the last, narrower chunk goes through the same code with partial loads and
 * stores (memcpy of w REALs through a temporary). Whole chunks load and store the vector
 * directly: a memcpy of 32 bytes became two 16-byte stores and a 32-byte load of the
 * temporary in the AVX2 variant, a store-forwarding stall that made the pass 9x slower.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE FN(vec) FN(load_units)(const void *row, ptrdiff_t j, ptrdiff_t w)
{
    FN(vec) v = {0};
    if (w == VW) return *(const FN(vec) *)((const REAL *)row + j);
    memcpy(&v, (const REAL *)row + j, (size_t)w * sizeof(REAL));
    return v;
}

ALWAYS_INLINE void FN(store_units)(void *row, ptrdiff_t j, FN(vec) v, ptrdiff_t w)
{
    if (w == VW)
        *(FN(vec) *)((REAL *)row + j) = v;
    else
        memcpy((REAL *)row + j, &v, (size_t)w * sizeof(REAL));
}

ALWAYS_INLINE FN(vec) FN(sigmoid_vec)(FN(vec) a)
{
    return (REAL)0.5 + (REAL)0.5 * FN(tanh_vec)((REAL)0.5 * a);
}

/* Inside a units function (arguments r, row, j, w): the chunk of units of gate k of a row of
 * gates ([G*H], gate k at k*H), the chunk of a block's array `base` (rows ld apart), and the
 * chunk of gate k of the forward's folded biases (zeros without biases). */
#define ROW(base, ld) ((REAL *)(base) + row * (ld))
#define GATE(gates, k) FN(load_units)(gates, (k) * r->H + j, w)
#define PUT_GATE(gates, k, v) FN(store_units)(gates, (k) * r->H + j, v, w)
#define UNITS(base, ld) FN(load_units)(ROW(base, ld), j, w)
#define BIAS(k) (r->bias != NULL ? GATE(r->bias, k) : (FN(vec)){0})
#define PUT_UNITS(base, ld, v) FN(store_units)(ROW(base, ld), j, v, w)

/* The pass FN(name_cells) over a block of rows (a rows_type): FN(name_units)(r, gates, row,
 * j, w) on every chunk of VW units (the last one w < VW) of every row (gates: the row's). */
#define CELL_PASS(name, rows_type)                                                          \
    static void FN(name##_cells)(const void *rows, ptrdiff_t unit_begin, ptrdiff_t unit_end) \
    {                                                                                       \
        const rows_type *r = (const rows_type *)rows;                                       \
        ptrdiff_t row, j;                                                                   \
        for (row = 0; row < r->m && unit_begin < unit_end; row++) {                         \
            REAL *gates = ROW(r->gates, r->ld_gates);                                       \
            for (j = unit_begin; j + VW <= unit_end; j += VW)                               \
                FN(name##_units)(r, gates, row, j, VW);                                     \
            if (j < unit_end) FN(name##_units)(r, gates, row, j, unit_end - j);             \
        }                                                                                   \
    }

/* ---- LSTM: gates i f g o, then c ------------------------------------------------------- */
ALWAYS_INLINE void FN(lstm_forward_units)(const lstm_rows *r, REAL *gates, ptrdiff_t row,
                                          ptrdiff_t j, ptrdiff_t w)
{
    const FN(vec) i = FN(sigmoid_vec)(GATE(gates, 0) + BIAS(0));
    const FN(vec) f = FN(sigmoid_vec)(GATE(gates, 1) + BIAS(1));
    const FN(vec) g = FN(tanh_vec)(GATE(gates, 2) + BIAS(2));
    const FN(vec) o = FN(sigmoid_vec)(GATE(gates, 3) + BIAS(3));
    const FN(vec) c = f * UNITS(r->c_prev, r->ld_c_prev) + i * g;
    PUT_GATE(gates, 0, i);
    PUT_GATE(gates, 1, f);
    PUT_GATE(gates, 2, g);
    PUT_GATE(gates, 3, o);
    PUT_GATE(gates, 4, c);
    PUT_UNITS(r->hidden, r->ld_hidden, o * FN(tanh_vec)(c));
}
CELL_PASS(lstm_forward, lstm_rows)

ALWAYS_INLINE void FN(lstm_backward_units)(const lstm_rows *r, const REAL *gates, ptrdiff_t row,
                                           ptrdiff_t j, ptrdiff_t w)
{
    REAL *grad_gates = ROW(r->grad_gates, r->ld_grad_gates);
    const FN(vec) i = GATE(gates, 0), f = GATE(gates, 1), g = GATE(gates, 2), o = GATE(gates, 3);
    const FN(vec) tanh_c = FN(tanh_vec)(GATE(gates, 4));
    const FN(vec) dh = UNITS(r->grad_hidden, r->ld_grad_hidden);
    const FN(vec) dc = UNITS(r->grad_c, r->ld_grad_c) + dh * o * ((REAL)1 - tanh_c * tanh_c);
    PUT_GATE(grad_gates, 0, dc * g * (i * ((REAL)1 - i)));
    PUT_GATE(grad_gates, 1, dc * UNITS(r->c_prev, r->ld_c_prev) * (f * ((REAL)1 - f)));
    PUT_GATE(grad_gates, 2, dc * i * ((REAL)1 - g * g));
    PUT_GATE(grad_gates, 3, dh * tanh_c * (o * ((REAL)1 - o)));
    PUT_UNITS(r->grad_c, r->ld_grad_c, dc * f);
    if (r->hidden != NULL) PUT_UNITS(r->hidden, r->ld_hidden, o * tanh_c);
}
CELL_PASS(lstm_backward, lstm_rows)

/* ---- GRU: gates r z n, then hn ----------------------------------------------------------- */
ALWAYS_INLINE void FN(gru_forward_units)(const gru_rows *r, REAL *gates, ptrdiff_t row,
                                         ptrdiff_t j, ptrdiff_t w)
{
    const REAL *hidden_part = ROW(r->hidden_part, r->ld_hidden_part);
    const FN(vec) reset = FN(sigmoid_vec)(GATE(gates, 0) + BIAS(0) + GATE(hidden_part, 0));
    const FN(vec) update = FN(sigmoid_vec)(GATE(gates, 1) + BIAS(1) + GATE(hidden_part, 1));
    const FN(vec) hidden_n = GATE(hidden_part, 2) + (r->b_hn != NULL ? GATE(r->b_hn, 0)
                                                                      : (FN(vec)){0});
    const FN(vec) candidate = FN(tanh_vec)(GATE(gates, 2) + BIAS(2) + reset * hidden_n);
    PUT_GATE(gates, 0, reset);
    PUT_GATE(gates, 1, update);
    PUT_GATE(gates, 2, candidate);
    PUT_GATE(gates, 3, hidden_n);
    PUT_UNITS(r->h, r->ld_h, ((REAL)1 - update) * candidate
                             + update * UNITS(r->h_prev, r->ld_h_prev));
}
CELL_PASS(gru_forward, gru_rows)

ALWAYS_INLINE void FN(gru_backward_units)(const gru_rows *r, const REAL *gates, ptrdiff_t row,
                                          ptrdiff_t j, ptrdiff_t w)
{
    REAL *grad_gates = ROW(r->grad_gates, r->ld_grad_gates);
    const FN(vec) reset = GATE(gates, 0), update = GATE(gates, 1);
    const FN(vec) candidate = GATE(gates, 2), hidden_n = GATE(gates, 3);
    const FN(vec) dh = UNITS(r->grad_h, r->ld_grad_h);
    const FN(vec) d_candidate = dh * ((REAL)1 - update) * ((REAL)1 - candidate * candidate);
    const FN(vec) carried = dh * update + (r->assign_grad_h_prev ? (FN(vec)){0}
                                           : UNITS(r->grad_h_prev, r->ld_grad_h_prev));
    PUT_GATE(grad_gates, 0, d_candidate * hidden_n * (reset * ((REAL)1 - reset)));
    PUT_GATE(grad_gates, 1, dh * (UNITS(r->h_prev, r->ld_h_prev) - candidate)
                            * (update * ((REAL)1 - update)));
    PUT_GATE(grad_gates, 2, d_candidate * reset);
    PUT_GATE(grad_gates, 3, d_candidate);
    PUT_UNITS(r->grad_h_prev, r->ld_grad_h_prev, carried);
}
CELL_PASS(gru_backward, gru_rows)

#undef CELL_PASS
#undef BIAS
#undef PUT_UNITS
#undef UNITS
#undef PUT_GATE
#undef GATE
#undef ROW
#undef ALWAYS_INLINE
#undef FN
#undef CAT
#undef CAT_
