"""A small NumPy training kit around ``fastrnn.RNN``: layers, losses, optimizers, clipping.

Why it exists: the seeds train their RNNs by hand in NumPy (000) and the examples should run
without torch. Why it is built this way: every layer follows ``fastrnn.RNN``'s conventions, so
one optimizer loop serves them all: ``named_parameters()`` returns the layer's own live arrays,
``backward`` ADDS into a ``grads`` dict with the same keys, ``zero_grad()`` clears it, and the
optimizers and clipping functions take a list of such modules (a ``fastrnn.RNN`` is one) and
update arrays IN PLACE, so a layer never has to be told its parameters changed. Losses are
plain functions returning ``(loss, grad)``: no autograd graph, the caller chains backward calls.
Initialisation and update rules are torch's, so results can be compared with torch's.
Host NumPy arrays only: parameters on a GPU device are refused with a clear error.
"""
from __future__ import annotations

import numbers
from typing import Iterable, Optional, Union

import numpy as np

from . import _checks
from .grad_mode import is_grad_enabled
from ._parameters import ParameterStore
from .backends import HostArrays

__all__ = ["Linear", "Embedding", "softmax_cross_entropy", "mse_loss", "SGD", "Adam",
           "clip_grad_norm", "clip_grad_value"]


def _check_size(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")


def _check_positive_number(name, value, allow_zero=False):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
        raise TypeError(f"{name} should be a finite real number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


class _Layer(ParameterStore):
    """What Linear and Embedding share: parameters, gradients, state_dict, the last input."""

    def __init__(self, dtype, seed):
        super().__init__()
        self.dtype = _checks.check_dtype_name(dtype)
        self._rng = np.random.default_rng(seed)
        self._params = {}
        self.grads = {}
        self._arrays = HostArrays

    def _set_parameters(self, params):
        self._params = {name: value.astype(self.dtype) for name, value in params.items()}
        self.grads = {name: np.zeros_like(value) for name, value in self._params.items()}

    def _save_for_backward(self, value):
        """Keep ``value`` (the layer's own copy) for this thread's backward, under grad mode."""
        self._keep_for_backward(value if is_grad_enabled() else None)

    def _saved_for_backward(self):
        return self._kept_for_backward("an input")

    def _check_grad_output(self, grad_output, expected_shape):
        grad_output = np.asarray(grad_output)
        _checks.check_same_shape("grad_output", grad_output, expected_shape)
        _checks.check_array_dtype("grad_output", grad_output, self.dtype)
        return grad_output

    def __call__(self, *args):
        return self.forward(*args)


class Linear(_Layer):
    """``y = x W^T + b`` over the last axis, like torch.nn.Linear (same names and init).

    ``x`` is ``[*, in_features]``; ``y`` is ``[*, out_features]`` (so a whole ``[T, B, H]``
    RNN output can go through it at once). ``backward(grad_y)`` returns ``grad_x`` and adds
    into ``grads['weight']`` and ``grads['bias']``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: str = "float32", seed: Optional[int] = None):
        _check_size("in_features", in_features)
        _check_size("out_features", out_features)
        super().__init__(dtype, seed)
        self.in_features, self.out_features = in_features, out_features
        # torch: kaiming_uniform_(a=sqrt(5)) for the weight, which is uniform(+-1/sqrt(fan_in)),
        # and the same bound for the bias.
        bound = 1.0 / np.sqrt(in_features)
        params = {"weight": self._rng.uniform(-bound, bound, (out_features, in_features))}
        if bias:
            params["bias"] = self._rng.uniform(-bound, bound, (out_features,))
        self._set_parameters(params)

    def forward(self, input) -> np.ndarray:
        """``y [*, out_features] = x [*, in_features] W^T + b``, in the layer's dtype."""
        x = np.asarray(input)                                  # [*, in_features]
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise _checks.ShapeError(f"Linear: expected input of shape [*, {self.in_features}] "
                                     f"(in_features={self.in_features}), got {x.shape}")
        _checks.check_array_dtype("input", x, self.dtype)
        self._save_for_backward(x.copy() if is_grad_enabled() else None)   # caller may change x
        y = x @ self.weight.T                                  # [*, out_features]
        if "bias" in self._params:
            y += self.bias
        return y

    def backward(self, grad_output) -> np.ndarray:
        """``grad_input [*, in_features]`` for this thread's most recent forward (grad_output
        [*, out_features]); adds into ``self.grads['weight']`` and ``['bias']``."""
        x = self._saved_for_backward()
        grad_y = self._check_grad_output(grad_output, x.shape[:-1] + (self.out_features,))
        grad_rows = grad_y.reshape(-1, self.out_features)      # [N, out]
        self.grads["weight"] += grad_rows.T @ x.reshape(-1, self.in_features)
        if "bias" in self.grads:
            self.grads["bias"] += grad_rows.sum(axis=0)
        return grad_y @ self.weight                            # [*, in_features]

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={'bias' in self._params})")


class Embedding(_Layer):
    """A lookup table of ``num_embeddings`` rows, like torch.nn.Embedding (init N(0, 1)).

    ``forward(ids)`` takes integer ids of any shape and returns ``[*ids.shape, embedding_dim]``;
    ``backward(grad)`` adds each row of ``grad`` into the row of ``grads['weight']`` its id
    picked (repeated ids add up) and returns None: ids have no gradient.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: str = "float32",
                 seed: Optional[int] = None):
        _check_size("num_embeddings", num_embeddings)
        _check_size("embedding_dim", embedding_dim)
        super().__init__(dtype, seed)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self._set_parameters({"weight": self._rng.standard_normal((num_embeddings, embedding_dim))})

    def forward(self, input) -> np.ndarray:
        """The rows of ``weight`` picked by integer ``ids`` (any shape): [*ids.shape, embedding_dim]."""
        ids = np.asarray(input)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"Embedding: expected integer ids, got an array of dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise IndexError(f"Embedding: id {bad} is out of range; ids must be in "
                             f"[0, {self.num_embeddings}) (num_embeddings={self.num_embeddings})")
        ids = ids.copy()                # kept for backward: later edits by the caller can't leak in
        self._save_for_backward(ids)
        return self.weight[ids]                                # [*ids.shape, embedding_dim]

    def backward(self, grad_output) -> None:
        """Adds ``grad_output`` [*ids.shape, embedding_dim] into the picked rows of
        ``grads['weight']``; ids have no gradient."""
        ids = self._saved_for_backward()
        grad = self._check_grad_output(grad_output, ids.shape + (self.embedding_dim,))
        np.add.at(self.grads["weight"], ids.ravel(), grad.reshape(-1, self.embedding_dim))
        return None

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


# --------------------------------------------------------------------------------- losses
def _check_logits_and_targets(logits, targets):
    logits, targets = np.asarray(logits), np.asarray(targets)
    if logits.ndim < 1 or logits.shape[:-1] != targets.shape:
        raise _checks.ShapeError(f"softmax_cross_entropy: expected logits [*, C] and targets [*] "
                                 f"with the same leading shape, got logits {logits.shape} and "
                                 f"targets {targets.shape}")
    _checks.check_dtype_name(logits.dtype)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError("softmax_cross_entropy: expected integer class indices as targets, "
                        f"got dtype {targets.dtype}")
    if targets.size == 0:
        raise ValueError("softmax_cross_entropy: the batch is empty (mean over no samples)")
    classes = logits.shape[-1]
    if targets.min() < 0 or targets.max() >= classes:
        bad = targets.min() if targets.min() < 0 else targets.max()
        raise IndexError(f"Target {bad} is out of bounds: classes are 0 .. {classes - 1}")
    return logits, targets


def softmax_cross_entropy(logits, targets) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``softmax(logits)`` against class ``targets``, and its gradient.

    ``logits`` is ``[*, C]`` (float32 or float64), ``targets`` ``[*]`` integer class indices.
    Returns ``(loss, grad_logits)``: ``loss`` a float, the mean over every sample like
    torch.nn.functional.cross_entropy; ``grad_logits = (softmax(logits) - onehot) / N``.
    """
    logits, targets = _check_logits_and_targets(logits, targets)
    classes = logits.shape[-1]
    rows = logits.reshape(-1, classes)                        # [N, C]
    picked = targets.reshape(-1)                              # [N]
    shifted = rows - rows.max(axis=1, keepdims=True)          # stable log-sum-exp
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = rows.shape[0]
    loss = -log_probs[np.arange(n), picked].mean()
    grad = np.exp(log_probs)
    grad[np.arange(n), picked] -= 1
    grad /= n
    return float(loss), grad.reshape(logits.shape)


def mse_loss(prediction, target) -> tuple[float, np.ndarray]:
    """Mean squared error over every element, and its gradient w.r.t. ``prediction``.

    Returns ``(loss, grad_prediction)`` with ``grad = 2 (prediction - target) / N``, like
    torch.nn.functional.mse_loss with its default mean reduction.
    """
    prediction, target = np.asarray(prediction), np.asarray(target)
    _checks.check_dtype_name(prediction.dtype)
    _checks.check_same_shape("target", target, prediction.shape)
    if prediction.size == 0:
        raise ValueError("mse_loss: the batch is empty (mean over no elements)")
    difference = prediction - target.astype(prediction.dtype)
    return float(np.mean(difference ** 2)), 2 * difference / difference.size


# --------------------------------------------------------------------------------- modules
def _module_list(modules):
    """A list of modules from one module or an iterable of them; TypeError for anything else."""
    modules = [modules] if hasattr(modules, "named_parameters") else list(modules)
    for module in modules:
        if not (hasattr(module, "named_parameters") and hasattr(module, "grads")):
            raise TypeError("expected modules with named_parameters() and a grads dict "
                            f"(fastrnn.RNN, fastrnn.nn.Linear, ...), got {type(module).__name__}")
    return modules


def _parameters_and_grads(modules):
    """(key, parameter, gradient) for every parameter; keys are (module index, name)."""
    for index, module in enumerate(modules):
        for name, parameter in module.named_parameters():
            grad = module.grads.get(name)
            where = f"parameter {name!r} of {type(module).__name__} #{index}"
            if not isinstance(parameter, np.ndarray) or not isinstance(grad, np.ndarray):
                raise TypeError(f"fastrnn.nn works on host NumPy arrays; {where} or its gradient "
                                f"is a {type(parameter).__name__} / {type(grad).__name__}")
            if grad.shape != parameter.shape:
                raise _checks.ShapeError(f"{where} has shape {parameter.shape} but its gradient "
                                         f"has shape {grad.shape}")
            yield (index, name), parameter, grad


# --------------------------------------------------------------------------------- clipping
def clip_grad_norm(modules: Union[object, Iterable], max_norm: float, norm_type: float = 2.0) -> float:
    """Scale every gradient so that their joint norm is at most ``max_norm``, in place.

    torch.nn.utils.clip_grad_norm_'s rule: the norm is taken over all gradients as if they
    were one vector; each is multiplied by ``min(1, max_norm / (total_norm + 1e-6))``.
    ``norm_type`` is any p > 0 or ``float('inf')``. Returns the total norm before clipping.
    """
    _check_positive_number("max_norm", max_norm, allow_zero=True)
    if not (norm_type == float("inf") or (isinstance(norm_type, numbers.Real) and norm_type > 0)):
        raise ValueError(f"norm_type must be a positive number or inf, got {norm_type!r}")
    grads = [grad for _, _, grad in _parameters_and_grads(_module_list(modules))]
    if not grads:
        return 0.0
    if norm_type == float("inf"):
        total_norm = max(float(np.max(np.abs(g), initial=0.0)) for g in grads)
    else:
        total_norm = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads)
        total_norm **= 1.0 / norm_type
    scale = min(1.0, max_norm / (total_norm + 1e-6))
    for grad in grads:
        grad *= grad.dtype.type(scale)
    return total_norm


def clip_grad_value(modules: Union[object, Iterable], clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place (seed 000)."""
    _check_positive_number("clip_value", clip_value, allow_zero=True)
    for _, _, grad in _parameters_and_grads(_module_list(modules)):
        np.clip(grad, -clip_value, clip_value, out=grad)


# --------------------------------------------------------------------------------- optimizers
class _Optimizer:
    """Holds the modules and the per-parameter state; ``step()`` updates parameters in place.

    Parameters and gradients are looked up on the modules at every step (not cached), so a
    module that replaces its arrays (loading, a device move) is still updated correctly.
    """

    def __init__(self, modules: Union[object, Iterable], lr: float):
        self.modules = _module_list(modules)
        _check_positive_number("lr", lr, allow_zero=True)
        self.lr = lr
        self.state = {}           # {(module index, name): {buffer name: array}}
        list(_parameters_and_grads(self.modules))     # every parameter checked up front

    def zero_grad(self) -> None:
        """Zero every module's gradients."""
        for module in self.modules:
            module.zero_grad()

    def step(self) -> None:
        """Update every parameter in place from its gradient."""
        for key, parameter, grad in _parameters_and_grads(self.modules):
            self._update(self.state.setdefault(key, {}), parameter, grad)
        for module in self.modules:       # a forward before this step can't be backpropagated
            changed = getattr(module, "_parameters_changed", None)
            if changed is not None:
                changed()

    def _update(self, state, parameter, grad):
        raise NotImplementedError


class SGD(_Optimizer):
    """torch.optim.SGD's rule: ``buf = momentum * buf + g`` (``buf = g`` at the first step),
    ``p -= lr * buf``; plain ``p -= lr * g`` when momentum is 0."""

    def __init__(self, modules: Union[object, Iterable], lr: float, momentum: float = 0.0):
        super().__init__(modules, lr)
        _check_positive_number("momentum", momentum, allow_zero=True)
        self.momentum = momentum

    def _update(self, state, parameter, grad):
        if self.momentum == 0:
            parameter -= self.lr * grad
            return
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.copy()
        else:
            state["momentum_buffer"] *= self.momentum
            state["momentum_buffer"] += grad
        parameter -= self.lr * state["momentum_buffer"]


class Adam(_Optimizer):
    """torch.optim.Adam's defaults and rule (no weight decay, no amsgrad)::

        m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, modules: Union[object, Iterable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(modules, lr)
        if len(betas) != 2 or not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        _check_positive_number("eps", eps, allow_zero=True)
        self.betas, self.eps = tuple(betas), eps

    def _update(self, state, parameter, grad):
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(parameter),
                         exp_avg_sq=np.zeros_like(parameter))
        state["step"] += 1
        exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** step)
        denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2 ** step) + self.eps
        parameter -= step_size * (exp_avg / denom)
