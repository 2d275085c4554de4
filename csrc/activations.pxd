# Declarations of activations.h: the activations and their derivatives (g * dh/da, in terms of
# the output h), once for every cell's kernels.
cdef extern from "activations.h" nogil:
    float tanh_f32(float v)
    double tanh_f64(double v)
    float relu_f32(float v)
    double relu_f64(double v)
    float tanh_grad_f32(float g, float h)
    double tanh_grad_f64(double g, double h)
    float relu_grad_f32(float g, float h)
    double relu_grad_f64(double g, double h)
