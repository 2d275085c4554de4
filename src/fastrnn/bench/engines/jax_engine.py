"""JAX: ``jax.lax.scan`` of the Elman step, jit-compiled by XLA; gradients by ``jax.vjp``.

Why the model is written this way: it is what a JAX user writes (the input projection of all
steps as one product, the recurrence as a scan, the reverse direction as ``reverse=True``);
XLA then compiles the whole stack, so JAX's per-call cost is one compiled call.

Threads. XLA has no thread-count setting: its CPU thread pools are sized when JAX starts, from
the CPUs the process may run on. So ``prepare(threads)`` starts JAX (this process, once) with
the calling thread's CPU affinity narrowed to ``threads`` CPUs, then gives every thread back
the full affinity (the pools keep their size; no thread stays pinned), and with one thread it
also adds ``--xla_cpu_multi_thread_eigen=false`` to ``XLA_FLAGS`` before JAX reads it. The
bench is an application, so changing its own process this way is fair; a library would not.
If JAX was imported before the bench prepared it, its threads are whatever JAX chose, and the
bench says so. The CPU time / wall time the bench records per engine shows what really ran.
"""
import os
import sys

from . import Runner, library_available

ONE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"


def unavailable(variant):
    if not library_available("jax"):
        return "jax is not installed (pip install jax)"
    return None


def _thread_ids():
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def prepare(variant, threads):
    if "jax" in sys.modules:
        return ("jax was imported before the bench could size XLA's thread pools; "
                "its thread count is JAX's own choice")
    if threads == 1 and ONE_THREAD_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD_FLAG}".strip()
    if not hasattr(os, "sched_setaffinity"):
        import jax
        jax.devices("cpu")
        return "this OS has no CPU affinity: XLA's pools have their default size"
    allowed = os.sched_getaffinity(0)
    before = _thread_ids()
    os.sched_setaffinity(0, sorted(allowed)[:threads])
    try:
        import jax
        jax.devices("cpu")                 # creates the CPU client and its thread pools
    finally:
        for tid in (_thread_ids() - before) | {0}:
            try:
                os.sched_setaffinity(tid, allowed)
            except OSError:                # a thread that has already ended
                pass
    return None


def _model(shape):
    """rnn(params, x) -> (output [T, B, D*H], h_n [L*D, B, H]) for torch's parameter names."""
    import jax
    import jax.numpy as jnp

    def direction(x, w_ih, w_hh, bias, reverse):
        projected = x @ w_ih.T + bias                       # [T, B, H], all steps at once

        def step(h, a_t):
            h = jnp.tanh(a_t + h @ w_hh.T)
            return h, h

        h0 = jnp.zeros((x.shape[1], w_hh.shape[0]), x.dtype)
        h_n, output = jax.lax.scan(step, h0, projected, reverse=reverse)
        return output, h_n

    def rnn(params, x):
        finals = []
        for layer in range(shape.layers):
            outputs = []
            for suffix in [f"l{layer}", f"l{layer}_reverse"][:shape.directions]:
                output, h_n = direction(x, params[f"weight_ih_{suffix}"],
                                        params[f"weight_hh_{suffix}"],
                                        params[f"bias_ih_{suffix}"] + params[f"bias_hh_{suffix}"],
                                        reverse=suffix.endswith("reverse"))
                outputs.append(output)
                finals.append(h_n)
            x = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        return x, jnp.stack(finals)

    return rnn


def make_runner(variant, problem):
    import jax
    import jax.numpy as jnp
    rnn = _model(problem.shape)

    def gradients(params, x, grad_out):
        (_, h_n), pullback = jax.vjp(rnn, params, x)
        return pullback((grad_out, jnp.zeros_like(h_n)))

    forward_jit, gradients_jit = jax.jit(rnn), jax.jit(gradients)
    params = {name: jax.device_put(w) for name, w in problem.weights.items()}
    x, grad_out = jax.device_put(problem.x), jax.device_put(problem.grad_out)

    def forward():
        jax.block_until_ready(forward_jit(params, x))

    def forward_backward():
        jax.block_until_ready(gradients_jit(params, x, grad_out))

    def results():
        output, h_n = forward_jit(params, x)
        grad_params, grad_input = gradients_jit(params, x, grad_out)
        grads = {f"grad_{name}": grad for name, grad in grad_params.items()}
        arrays = {"output": output, "h_n": h_n, "grad_input": grad_input, **grads}
        return {name: jax.device_get(a) for name, a in arrays.items()}

    return Runner(forward, forward_backward, results)
