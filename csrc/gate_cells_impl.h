/* One instantiation of the gated cells' elementwise passes (the maths: gate_cells.h); included
 * once per float32 step-kernel variant (by step_gemm.h, inside its target pragma) and once for
 * float64 (by gate_cells.h). The includer defines
 *     SUFFIX   name suffix of the functions made here (e.g. avx512, f64)
 *     REAL     float or double
 *     VW       REALs in one FN(vec)
 * and provides the type FN(vec) (VW REALs: a GCC vector, or a plain double when VW is 1) and
 * FN(tanh_vec). A pass walks its rows and, in each row, its units VW at a time; the last,
 * narrower chunk goes through the same code with partial loads and stores (memcpy of w REALs,
 * which the compiler turns into one vector load or store when w == VW).
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE FN(vec) FN(load_units)(const void *row, ptrdiff_t j, ptrdiff_t w)
{
    FN(vec) v = {0};
    memcpy(&v, (const REAL *)row + j, (size_t)w * sizeof(REAL));
    return v;
}

ALWAYS_INLINE void FN(store_units)(void *row, ptrdiff_t j, FN(vec) v, ptrdiff_t w)
{
    memcpy((REAL *)row + j, &v, (size_t)w * sizeof(REAL));
}

ALWAYS_INLINE FN(vec) FN(sigmoid_vec)(FN(vec) a)
{
    return (REAL)0.5 + (REAL)0.5 * FN(tanh_vec)((REAL)0.5 * a);
}

/* Row `row` of a block's array (rows ld apart). */
#define ROW(base, ld, row) ((REAL *)(base) + (row) * (ld))

/* Calls units(r, row, j, w) on every chunk of VW units (the last one w < VW) of every row. */
#define EACH_CHUNK(units, r, unit_begin, unit_end)                                          \
    do {                                                                                    \
        ptrdiff_t row_, j_;                                                                 \
        for (row_ = 0; row_ < (r)->m; row_++) {                                             \
            for (j_ = (unit_begin); j_ + VW <= (unit_end); j_ += VW) units(r, row_, j_, VW); \
            if (j_ < (unit_end)) units(r, row_, j_, (unit_end) - j_);                       \
        }                                                                                   \
    } while (0)

/* ---- LSTM -------------------------------------------------------------------------------- */
ALWAYS_INLINE void FN(lstm_forward_units)(const lstm_rows *r, ptrdiff_t row, ptrdiff_t j,
                                          ptrdiff_t w)
{
    const ptrdiff_t H = r->H;
    REAL *gates = ROW(r->gates, r->ld_gates, row);
    const FN(vec) i = FN(sigmoid_vec)(FN(load_units)(gates, j, w));
    const FN(vec) f = FN(sigmoid_vec)(FN(load_units)(gates, H + j, w));
    const FN(vec) g = FN(tanh_vec)(FN(load_units)(gates, 2 * H + j, w));
    const FN(vec) o = FN(sigmoid_vec)(FN(load_units)(gates, 3 * H + j, w));
    const FN(vec) c = f * FN(load_units)(ROW(r->c_prev, r->ld_c_prev, row), j, w) + i * g;
    FN(store_units)(gates, j, i, w);
    FN(store_units)(gates, H + j, f, w);
    FN(store_units)(gates, 2 * H + j, g, w);
    FN(store_units)(gates, 3 * H + j, o, w);
    FN(store_units)(gates, 4 * H + j, c, w);
    FN(store_units)(ROW(r->hidden, r->ld_hidden, row), j, o * FN(tanh_vec)(c), w);
}

static void FN(lstm_forward_cells)(const void *rows, ptrdiff_t unit_begin, ptrdiff_t unit_end)
{
    EACH_CHUNK(FN(lstm_forward_units), (const lstm_rows *)rows, unit_begin, unit_end);
}

ALWAYS_INLINE void FN(lstm_backward_units)(const lstm_rows *r, ptrdiff_t row, ptrdiff_t j,
                                           ptrdiff_t w)
{
    const ptrdiff_t H = r->H;
    const REAL *gates = ROW(r->gates, r->ld_gates, row);
    REAL *grad_gates = ROW(r->grad_gates, r->ld_grad_gates, row);
    REAL *grad_c = ROW(r->grad_c, r->ld_grad_c, row);
    const FN(vec) i = FN(load_units)(gates, j, w), f = FN(load_units)(gates, H + j, w);
    const FN(vec) g = FN(load_units)(gates, 2 * H + j, w);
    const FN(vec) o = FN(load_units)(gates, 3 * H + j, w);
    const FN(vec) tanh_c = FN(tanh_vec)(FN(load_units)(gates, 4 * H + j, w));
    const FN(vec) dh = FN(load_units)(ROW(r->grad_hidden, r->ld_grad_hidden, row), j, w);
    const FN(vec) dc = FN(load_units)(grad_c, j, w) + dh * o * ((REAL)1 - tanh_c * tanh_c);
    const FN(vec) c_prev = FN(load_units)(ROW(r->c_prev, r->ld_c_prev, row), j, w);
    FN(store_units)(grad_gates, j, dc * g * (i * ((REAL)1 - i)), w);
    FN(store_units)(grad_gates, H + j, dc * c_prev * (f * ((REAL)1 - f)), w);
    FN(store_units)(grad_gates, 2 * H + j, dc * i * ((REAL)1 - g * g), w);
    FN(store_units)(grad_gates, 3 * H + j, dh * tanh_c * (o * ((REAL)1 - o)), w);
    FN(store_units)(grad_c, j, dc * f, w);
    if (r->hidden != NULL)
        FN(store_units)(ROW(r->hidden, r->ld_hidden, row), j, o * tanh_c, w);
}

static void FN(lstm_backward_cells)(const void *rows, ptrdiff_t unit_begin, ptrdiff_t unit_end)
{
    EACH_CHUNK(FN(lstm_backward_units), (const lstm_rows *)rows, unit_begin, unit_end);
}

/* ---- GRU --------------------------------------------------------------------------------- */
ALWAYS_INLINE void FN(gru_forward_units)(const gru_rows *r, ptrdiff_t row, ptrdiff_t j,
                                         ptrdiff_t w)
{
    const ptrdiff_t H = r->H;
    REAL *gates = ROW(r->gates, r->ld_gates, row);
    const REAL *hidden_part = ROW(r->hidden_part, r->ld_hidden_part, row);
    const FN(vec) h_prev = FN(load_units)(ROW(r->h_prev, r->ld_h_prev, row), j, w);
    const FN(vec) reset = FN(sigmoid_vec)(FN(load_units)(gates, j, w)
                                          + FN(load_units)(hidden_part, j, w));
    const FN(vec) update = FN(sigmoid_vec)(FN(load_units)(gates, H + j, w)
                                           + FN(load_units)(hidden_part, H + j, w));
    FN(vec) hidden_n = FN(load_units)(hidden_part, 2 * H + j, w);
    FN(vec) candidate;
    if (r->b_hn != NULL) hidden_n += FN(load_units)(r->b_hn, j, w);
    candidate = FN(tanh_vec)(FN(load_units)(gates, 2 * H + j, w) + reset * hidden_n);
    FN(store_units)(gates, j, reset, w);
    FN(store_units)(gates, H + j, update, w);
    FN(store_units)(gates, 2 * H + j, candidate, w);
    FN(store_units)(gates, 3 * H + j, hidden_n, w);
    FN(store_units)(ROW(r->h, r->ld_h, row), j,
                    ((REAL)1 - update) * candidate + update * h_prev, w);
}

static void FN(gru_forward_cells)(const void *rows, ptrdiff_t unit_begin, ptrdiff_t unit_end)
{
    EACH_CHUNK(FN(gru_forward_units), (const gru_rows *)rows, unit_begin, unit_end);
}

ALWAYS_INLINE void FN(gru_backward_units)(const gru_rows *r, ptrdiff_t row, ptrdiff_t j,
                                          ptrdiff_t w)
{
    const ptrdiff_t H = r->H;
    const REAL *gates = ROW(r->gates, r->ld_gates, row);
    REAL *grad_gates = ROW(r->grad_gates, r->ld_grad_gates, row);
    REAL *grad_h_prev = ROW(r->grad_h_prev, r->ld_grad_h_prev, row);
    const FN(vec) reset = FN(load_units)(gates, j, w), update = FN(load_units)(gates, H + j, w);
    const FN(vec) candidate = FN(load_units)(gates, 2 * H + j, w);
    const FN(vec) hidden_n = FN(load_units)(gates, 3 * H + j, w);
    const FN(vec) h_prev = FN(load_units)(ROW(r->h_prev, r->ld_h_prev, row), j, w);
    const FN(vec) dh = FN(load_units)(ROW(r->grad_h, r->ld_grad_h, row), j, w);
    const FN(vec) d_candidate = dh * ((REAL)1 - update) * ((REAL)1 - candidate * candidate);
    FN(vec) carried = dh * update;
    FN(store_units)(grad_gates, j, d_candidate * hidden_n * (reset * ((REAL)1 - reset)), w);
    FN(store_units)(grad_gates, H + j,
                    dh * (h_prev - candidate) * (update * ((REAL)1 - update)), w);
    FN(store_units)(grad_gates, 2 * H + j, d_candidate * reset, w);
    FN(store_units)(grad_gates, 3 * H + j, d_candidate, w);
    if (!r->assign_grad_h_prev) carried += FN(load_units)(grad_h_prev, j, w);
    FN(store_units)(grad_h_prev, j, carried, w);
}

static void FN(gru_backward_cells)(const void *rows, ptrdiff_t unit_begin, ptrdiff_t unit_end)
{
    EACH_CHUNK(FN(gru_backward_units), (const gru_rows *)rows, unit_begin, unit_end);
}

#undef EACH_CHUNK
#undef ROW
#undef ALWAYS_INLINE
#undef FN
#undef CAT
#undef CAT_
