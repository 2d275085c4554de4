"""Derivatives of the fastrnn operators (every cell), as two autograd.Functions.

Why this shape (seen to work on torch 2.13 with compile, export, vmap, torch.func and
jit.trace): each Function has ``setup_context`` and calls the custom operators of ops.py, and
``generate_vmap_rule`` lets torch.func run it under vmap through the operators' own vmap rules.
``register_autograd`` on the operators alone fails under torch.func.grad.

- ``_Forward`` runs fastrnn::rnn_forward; its backward is ``_Backward``.
- ``_Backward`` runs fastrnn::rnn_backward: every first-order gradient is the fused kernel's.
  It is itself differentiable: its own backward (double backward: ``create_graph=True``,
  gradient penalties, gradgradcheck, torch.func.grad of grad) and both Functions' forward-mode
  rules (torch.func.jvp, jacfwd) differentiate the plain-torch twin in composite.py with
  torch.func. Those paths run a Python loop over time steps: exact, not fast.
- The forward-mode rules live on subclasses (``*WithJvp``), used only when a forward-mode
  derivative can be asked for: dynamo refuses to trace a Function that has a ``jvp``.
- In eager mode with plain tensors (ops.dispatch_free) the Functions call the operators'
  computations directly: the dispatcher's Python layers would cost more than a small call.
- The weights reach the operators as one flat copy (ops.flatten_weights), which backward
  differentiates: changing a parameter in place between forward and backward does not change
  the gradient of the forward that ran.
"""
import inspect
from typing import Optional

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import composite
from .ops import (Config, dispatch_free, flatten_weights, rnn_backward, rnn_backward_impl,
                  rnn_forward, rnn_forward_impl, state_sizes, unflatten_weights, weight_shapes)

__all__ = ["rnn"]


def _zeros_for(tangent, primal):
    """A tangent (or cotangent) with None replaced by zeros shaped like the primal."""
    return torch.zeros_like(primal) if tangent is None else tangent


def _jvp(function, primals, tangents):
    """The tangents of ``function``'s outputs, by reverse mode only: the pullback u -> J^T u is
    linear, so its own pullback at any u maps v to J v. (torch.func.jvp would nest forward-mode
    levels, which torch.autograd.forward_ad refuses.)"""
    outputs, pullback = torch.func.vjp(function, *primals)
    zeros = torch.utils._pytree.tree_map(torch.zeros_like, outputs)
    _, pullback_of_pullback = torch.func.vjp(pullback, zeros)
    return pullback_of_pullback(tuple(tangents))[0]


def _composite_forward(config, batch_sizes, masks):
    """f(input, hx, cx, flat weights) -> (output, h_n, c_n) in differentiable torch operations."""
    def forward(input, hx, cx, weights):
        shapes = weight_shapes(config, input.shape[-1], *state_sizes(config.mode, hx, cx))
        output, h_n, c_n, _ = composite.rnn(input, batch_sizes, hx, cx,
                                            unflatten_weights(weights, shapes), masks, config)
        return output, h_n, c_n
    return forward


def _first_order(config, batch_sizes, masks):
    """f(input, hx, cx, weights, grad_output, grad_h_n, grad_c_n) -> (grad_input, grad_hx,
    grad_cx, grad_weights): the vector-Jacobian product of the composite stack, itself
    differentiable."""
    forward = _composite_forward(config, batch_sizes, masks)

    def first_order(input, hx, cx, weights, grad_output, grad_h_n, grad_c_n):
        _, pullback = torch.func.vjp(forward, input, hx, cx, weights)
        return pullback((grad_output, grad_h_n, grad_c_n))
    return first_order


# Both Functions take their operator's arguments in schema order, so that the same
# setup_context and backward also serve as the operators' registered autograd formulas (for
# callers of torch.ops.fastrnn.* under plain autograd; torch.opcheck checks them).
class _Forward(torch.autograd.Function):
    """output, h_n, c_n, layer_outputs, gates = rnn_forward(...), differentiable in input, hx,
    cx and weights."""
    generate_vmap_rule = True

    @staticmethod
    def forward(input, batch_sizes, hx, cx, weights, masks, mode, num_layers, bidirectional,
                has_biases, backend, need_workspace):
        direct = dispatch_free(input, hx, cx, weights, masks)
        operator = rnn_forward_impl if direct else rnn_forward
        return operator(input, batch_sizes, hx, cx, weights, masks, mode, num_layers,
                        bidirectional, has_biases, backend, need_workspace)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, batch_sizes, hx, cx, weights, masks, *config, _ = inputs
        ctx.config = Config(*config)
        ctx.mark_non_differentiable(output[3], output[4])
        # no zeros made for the gradients of the workspace (as large as the gates of every
        # step), nor for unused outputs: backward makes the few it needs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, batch_sizes, hx, cx, weights, masks, output[0], output[3],
                              output[4])

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_layer_outputs, _grad_gates):
        input, batch_sizes, hx, cx, weights, masks, output, layer_outputs, gates = \
            ctx.saved_tensors
        need_weight_grads = ctx.needs_input_grad[4]
        backward = _BackwardWithJvp if _forward_mode_possible() else _Backward
        grad_input, grad_hx, grad_cx, grad_weights = backward.apply(
            input, batch_sizes, hx, cx, weights, masks, output, layer_outputs, gates,
            _zeros_for(grad_output, output), _zeros_for(grad_h_n, hx), _zeros_for(grad_c_n, cx),
            *ctx.config, need_weight_grads)
        return (grad_input, None, grad_hx, grad_cx,
                grad_weights if need_weight_grads else None) + (None,) * 7


class _Backward(torch.autograd.Function):
    """grad_input, grad_hx, grad_cx, grad_weights = rnn_backward(...), differentiable in input,
    hx, cx, weights, grad_output, grad_h_n and grad_c_n (through composite.py)."""
    generate_vmap_rule = True

    @staticmethod
    def forward(input, batch_sizes, hx, cx, weights, masks, output, layer_outputs, gates,
                grad_output, grad_h_n, grad_c_n, mode, num_layers, bidirectional, has_biases,
                backend, need_weight_grads):
        direct = dispatch_free(input, hx, cx, weights, masks, output, layer_outputs, gates,
                               grad_output, grad_h_n, grad_c_n)
        operator = rnn_backward_impl if direct else rnn_backward
        return operator(input, batch_sizes, hx, cx, weights, masks, output, layer_outputs,
                        gates, grad_output, grad_h_n, grad_c_n, mode, num_layers,
                        bidirectional, has_biases, backend, need_weight_grads)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, batch_sizes, hx, cx, weights, masks = inputs[:6]
        grad_output, grad_h_n, grad_c_n, *config, need = inputs[9:]
        ctx.config, ctx.need_weight_grads = Config(*config), need
        ctx.set_materialize_grads(False)           # backward and jvp make the zeros they need
        ctx.save_for_backward(input, batch_sizes, hx, cx, weights, masks, grad_output, grad_h_n,
                              grad_c_n)

    @staticmethod
    def backward(ctx, grad_grad_input, grad_grad_hx, grad_grad_cx, grad_grad_weights):
        input, batch_sizes, hx, cx, weights, masks, *grads_out = ctx.saved_tensors
        if not ctx.need_weight_grads:
            grad_grad_weights = None                   # the output was an empty placeholder
        _, pullback = torch.func.vjp(_first_order(ctx.config, batch_sizes, masks),
                                     input, hx, cx, weights, *grads_out)
        g_input, g_hx, g_cx, g_weights, *g_grads_out = pullback(
            (_zeros_for(grad_grad_input, input), _zeros_for(grad_grad_hx, hx),
             _zeros_for(grad_grad_cx, cx), _zeros_for(grad_grad_weights, weights)))
        return (g_input, None, g_hx, g_cx, g_weights, None, None, None, None, *g_grads_out,
                None, None, None, None, None, None)


# torch's Function.apply binds its arguments to forward's signature on every call, and
# inspect.signature honours a precomputed __signature__: without it, building the signature
# is a third of the cost of a small call.
for _function in (_Forward, _Backward):
    _function.forward.__signature__ = inspect.signature(_function.forward)

for _operator, _function in ((rnn_forward, _Forward), (rnn_backward, _Backward)):
    torch.library.register_autograd(_operator, _function.backward,
                                    setup_context=_function.setup_context)


class _ForwardWithJvp(_Forward):
    """_Forward with a forward-mode rule (torch.compile refuses Functions that have one)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Forward.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:6])          # input, batch_sizes, hx, cx, weights, masks

    @staticmethod
    def jvp(ctx, input_t, _batch_sizes_t, hx_t, cx_t, weights_t, *_):
        input, batch_sizes, hx, cx, weights, masks = ctx.saved_tensors
        primals = (input, hx, cx, weights)
        tangents = [_zeros_for(t, p) for t, p in zip((input_t, hx_t, cx_t, weights_t), primals)]
        output_t, h_n_t, c_n_t = _jvp(_composite_forward(ctx.config, batch_sizes, masks),
                                      primals, tangents)
        return output_t, h_n_t, c_n_t, None, None


class _BackwardWithJvp(_Backward):
    """_Backward with a forward-mode rule (torch.compile refuses Functions that have one)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Backward.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:6], *inputs[9:12])

    @staticmethod
    def jvp(ctx, input_t, _batch_sizes_t, hx_t, cx_t, weights_t, _masks_t, _output_t,
            _layer_outputs_t, _gates_t, grad_output_t, grad_h_n_t, grad_c_n_t, *_):
        input, batch_sizes, hx, cx, weights, masks, *grads_out = ctx.saved_tensors
        primals = (input, hx, cx, weights, *grads_out)
        tangents = [_zeros_for(t, p) for t, p in zip(
            (input_t, hx_t, cx_t, weights_t, grad_output_t, grad_h_n_t, grad_c_n_t), primals)]
        g_input_t, g_hx_t, g_cx_t, g_weights_t = _jvp(
            _first_order(ctx.config, batch_sizes, masks), primals, tangents)
        if not ctx.need_weight_grads:
            g_weights_t = weights.new_zeros(0)
        return g_input_t, g_hx_t, g_cx_t, g_weights_t


def _forward_mode_possible() -> bool:
    """Whether a forward-mode derivative may be asked for: under torch.autograd.forward_ad or
    a torch.func transform, never while torch.compile traces."""
    return not torch.compiler.is_compiling() and (
        forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active())


def rnn(input: Tensor, batch_sizes: Optional[Tensor], hx: Tensor, cx: Tensor, weights: list,
        masks: Optional[Tensor], config: Config):
    """The stacked layer through the operators, differentiable (autograd, torch.func) in
    ``input``, ``hx``, ``cx`` (LSTM's c; width 0 for the other cells, ops.no_cell_state) and
    ``weights`` (a list in torch's flat order): ``(output, h_n, c_n)``. Shapes: see
    ops.rnn_forward. The workspace is always kept, so that a trace does not depend on the grad
    mode it was recorded in; without a gradient it is dropped on return."""
    forward = _ForwardWithJvp if _forward_mode_possible() else _Forward
    output, h_n, c_n, _, _ = forward.apply(input, batch_sizes, hx, cx, flatten_weights(weights),
                                           masks, *config, True)
    return output, h_n, c_n
