"""JAX: ``jax.lax.scan`` of the cell's step (Elman, LSTM, GRU in torch's formulas and gate
order), jit-compiled by XLA; gradients by ``jax.vjp``.

Why the model is written this way: it is what a JAX user writes (the input projection of all
steps as one product, the recurrence as a scan, the reverse direction as ``reverse=True``);
XLA then compiles the whole stack, so JAX's per-call cost is one compiled call. lax.scan has
no packed sequences (a masked scan computes the padded batch), so ragged batches are skipped.

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

from . import Runner, Skip, library_available

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


def _steps():
    """{cell: step(carry, a_t, w_hh, b_hh) -> (carry, h_t)}; a_t = x_t W_ih^T + b_ih."""
    import jax
    import jax.numpy as jnp

    def rnn(h, a_t, w_hh, b_hh):
        h = jnp.tanh(a_t + h @ w_hh.T + b_hh)
        return h, h

    def lstm(carry, a_t, w_hh, b_hh):
        h, c = carry
        i, f, g, o = jnp.split(a_t + h @ w_hh.T + b_hh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru(h, a_t, w_hh, b_hh):
        a_r, a_z, a_n = jnp.split(a_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = jax.nn.sigmoid(a_r + h_r), jax.nn.sigmoid(a_z + h_z)
        h = (1 - z) * jnp.tanh(a_n + r * h_n) + z * h
        return h, h

    return {"rnn": rnn, "lstm": lstm, "gru": gru}


def _model(shape):
    """rnn(params, x) -> (output [T, B, D*H], final states) for torch's parameter names: the
    states are (h_n [L*D, B, H],), and c_n too for LSTM."""
    import jax
    import jax.numpy as jnp
    cell_step = _steps()[shape.cell]

    def direction(x, w_ih, w_hh, b_ih, b_hh, reverse):
        projected = x @ w_ih.T + b_ih                       # [T, B, G*H], all steps at once
        h0 = jnp.zeros((x.shape[1], w_hh.shape[1]), x.dtype)
        carry0 = (h0, h0) if shape.cell == "lstm" else h0
        step = lambda carry, a_t: cell_step(carry, a_t, w_hh, b_hh)
        final, output = jax.lax.scan(step, carry0, projected, reverse=reverse)
        return output, (final if shape.cell == "lstm" else (final,))

    def rnn(params, x):
        finals = []
        for layer in range(shape.layers):
            outputs = []
            for suffix in [f"l{layer}", f"l{layer}_reverse"][:shape.directions]:
                weights = [params[f"{name}_{suffix}"]
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                output, final = direction(x, *weights, reverse=suffix.endswith("reverse"))
                outputs.append(output)
                finals.append(final)
            x = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        return x, tuple(jnp.stack(states) for states in zip(*finals))

    return rnn


def make_runner(variant, problem):
    if problem.lengths is not None:
        raise Skip("lax.scan has no packed sequences (a masked scan would run the padded batch)")
    import jax
    import jax.numpy as jnp
    rnn = _model(problem.shape)

    def gradients(params, x, grad_out):
        (_, states), pullback = jax.vjp(rnn, params, x)
        return pullback((grad_out, tuple(jnp.zeros_like(s) for s in states)))

    forward_jit, gradients_jit = jax.jit(rnn), jax.jit(gradients)
    params = {name: jax.device_put(w) for name, w in problem.weights.items()}
    x, grad_out = jax.device_put(problem.x), jax.device_put(problem.grad_out)

    def forward():
        jax.block_until_ready(forward_jit(params, x))

    def forward_backward():
        jax.block_until_ready(gradients_jit(params, x, grad_out))

    def results():
        output, states = forward_jit(params, x)
        grad_params, grad_input = gradients_jit(params, x, grad_out)
        grads = {f"grad_{name}": grad for name, grad in grad_params.items()}
        arrays = {"output": output, **dict(zip(["h_n", "c_n"], states)),
                  "grad_input": grad_input, **grads}
        return {name: jax.device_get(a) for name, a in arrays.items()}

    return Runner(forward, forward_backward, results)
