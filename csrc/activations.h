/* The activations of the CPU kernels and their derivatives, defined once for C.
 *
 *   tanh:  h = tanh(a)              dh/da = 1 - h^2
 *   relu:  h = max(a, 0)            dh/da = (h > 0)       (NaN passes through the forward)
 *
 * The derivatives are written in terms of the OUTPUT h = act(a), which is what backward keeps.
 * This matches src/fastrnn/backends/activations.py (the Python-language definition).
 *
 * Why a rational tanh for float32: libm's scalar tanhf costs more than the matrix product it
 * follows, and it does not vectorise. tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= TANH_CLAMP, fitted
 * for this project by iterated weighted least squares on relative error (max 3.1e-7 relative
 * in float32, about 5 ulp); Q >= 1 on the range, so there is no pole. Beyond the clamp float32
 * tanh rounds to +-1. Branch-free, so loops over it vectorise. The same expression serves the
 * scalar (tanh_f32) and the SIMD form (step_gemm_impl.h), through TANH_RATIONAL.
 * float64 keeps libm's tanh for full accuracy.
 */
#ifndef FASTRNN_ACTIVATIONS_H
#define FASTRNN_ACTIVATIONS_H

#include <math.h>

#define TANH_CLAMP 7.90531110763549805f

/* x P(x^2) / Q(x^2) with s = x^2: v and s may be floats or GCC float vectors. */
#define TANH_RATIONAL(v, s)                                                                     \
    ((v) * (9.999999984e-01f + (s) * (1.312633455e-01f + (s) * (3.151615143e-03f               \
          + (s) * (1.166729047e-05f + (s) * (-2.242689466e-08f + (s) * (6.428730564e-11f       \
          + (s) * -1.176104782e-13f))))))                                                      \
     / (1.0f + (s) * (4.645966619e-01f + (s) * (2.468386526e-02f + (s) * 2.616320310e-04f))))

static inline float tanh_f32(float v)
{
    v = v > TANH_CLAMP ? TANH_CLAMP : v;
    v = v < -TANH_CLAMP ? -TANH_CLAMP : v;
    return TANH_RATIONAL(v, v * v);
}

static inline double tanh_f64(double v) { return tanh(v); }

static inline float relu_f32(float v) { return v <= 0.0f ? 0.0f : v; }    /* NaN passes */
static inline double relu_f64(double v) { return v <= 0.0 ? 0.0 : v; }

/* g * dh/da for h = act(a) */
static inline float tanh_grad_f32(float g, float h) { return g * (1.0f - h * h); }
static inline double tanh_grad_f64(double g, double h) { return g * (1.0 - h * h); }
static inline float relu_grad_f32(float g, float h) { return h > 0.0f ? g : 0.0f; }
static inline double relu_grad_f64(double g, double h) { return h > 0.0 ? g : 0.0; }

#endif
