"""Remember the first symbol for 50 steps of noise: where the Elman RNN fails and LSTM/GRU learn.

The tutorials end where Elman RNNs end (seeds 002/003): backpropagated through many steps, the
gradient shrinks (or grows) geometrically, so a plain RNN cannot learn to keep a fact for
long; LSTM and GRU are the cure. This example shows both halves of that story on one task:

- the task: step 0 shows one of 4 symbols (one-hot on 4 input channels); steps 1..T-1 show
  only Gaussian noise (on 4 other channels); after the last step the model must name the
  symbol. Chance is 25%. A model can only solve it by carrying the symbol across T-1 steps.
- the models: RNN, LSTM and GRU of the same width, each followed by a Linear head on the last
  output, trained with fastrnn's NumPy training kit (fastrnn.nn: Adam, gradient clipping,
  cross-entropy) on the same batches.
- the gates start open: the LSTM's forget gate and the GRU's update gate get a bias of
  ``--gate-bias`` (3) on top of torch's initialisation, so that at the start the cell state
  (LSTM) and the state (GRU) are mostly carried from step to step. That is the standard
  practice for long dependencies (a forget-gate bias, "chrono" initialisation); with
  ``--gate-bias 0`` (torch's own initialisation) the gates start half-closed, the gradient
  halves at every step for them too, and this training budget is not enough (see README).
- why: the norm of dL/d state_t (state = h for RNN and GRU, the pair (h, c) for LSTM), the
  gradient of the final loss with respect to the state after step t, against t. Computed
  exactly: the layer is run from the state after step t to the end and backpropagated
  (``layer.backward`` returns dL/d its initial state). For the RNN it falls by orders of
  magnitude towards t = 0, so step 0 (where the symbol is) gets no learning signal; with
  open gates it stays within a small factor. Measured before training and after.

    python examples/long_memory.py [--quick] [--steps 50] [--plot long_memory.png]

The last line prints each model's accuracy on 1000 fresh sequences.
"""
import numpy as np

import fastrnn
from fastrnn import nn

from _common import ManyToOne, build_parser, progress

SYMBOLS, NOISE_CHANNELS = 4, 4
LAYERS = {"RNN": fastrnn.RNN, "LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU}
# the gate that decides how much of the state is carried on: LSTM's forget gate (rows H..2H
# of torch's i, f, g, o) and GRU's update gate z (rows H..2H of r, z, n; z = 1 keeps h)
CARRY_GATE_ROWS = {"LSTM": slice(1, 2), "GRU": slice(1, 2)}


def make_batch(rng, batch, steps):
    """(x [T, B, 8] float32, first symbols [B]): the symbol at step 0, noise everywhere."""
    symbols = rng.integers(0, SYMBOLS, batch)
    x = np.zeros((steps, batch, SYMBOLS + NOISE_CHANNELS), np.float32)
    x[0, np.arange(batch), symbols] = 1.0
    x[:, :, SYMBOLS:] = rng.standard_normal((steps, batch, NOISE_CHANNELS))
    return x, symbols


def build(kind, args):
    """A ManyToOne model: the recurrent layer, then a Linear head on its last output."""
    layer = LAYERS[kind](SYMBOLS + NOISE_CHANNELS, args.hidden_size, backend=args.backend,
                         seed=args.seed)
    if kind in CARRY_GATE_ROWS and args.gate_bias:
        H, gate = args.hidden_size, CARRY_GATE_ROWS[kind]
        layer.bias_hh_l0[gate.start * H:gate.stop * H] += args.gate_bias    # in place: seen
    return ManyToOne(layer, nn.Linear(args.hidden_size, SYMBOLS, seed=args.seed + 1))


def state_gradient_norms(model, x, symbols):
    """||dL/d state_t|| for t = 0..T-1, averaged over the batch, where L is the mean
    cross-entropy of the final prediction. The state after step t is obtained by stepping
    the layer; dL/d it is what backward returns for the initial state of a run over the
    remaining steps (the last step's comes from the head alone)."""
    layer, head, steps = model.rnn, model.head, x.shape[0]
    state, states = None, []
    with fastrnn.no_grad():
        for t in range(steps):
            state = layer.step(x[t], state)
            states.append(state)
    norms = np.empty(steps)
    for t in range(steps):
        if t == steps - 1:
            top = states[t][0] if isinstance(states[t], tuple) else states[t]
            _, grad_logits = nn.softmax_cross_entropy(head(top[-1]), symbols)
            grads = [head.backward(grad_logits)[None]]
        else:
            output, _ = layer(x[t + 1:], states[t])
            _, grad_logits = nn.softmax_cross_entropy(head(output[-1]), symbols)
            grad_output = np.zeros_like(output)
            grad_output[-1] = head.backward(grad_logits)
            _, grad_state = layer.backward(grad_output)
            grads = list(grad_state) if isinstance(grad_state, tuple) else [grad_state]
        per_sequence = np.sqrt(sum((g.astype(np.float64) ** 2).sum(axis=(0, 2)) for g in grads))
        norms[t] = per_sequence.mean()
    for module in model.modules:         # the measurement must not leak into training
        module.zero_grad()
    return norms


def accuracy(model, x, symbols):
    with fastrnn.no_grad():
        return float(np.mean(model(x).argmax(axis=1) == symbols))


def train(kind, args):
    """Train one model; returns its curves, test accuracy and gradient norms."""
    model = build(kind, args)
    probe_x, probe_symbols = make_batch(np.random.default_rng(args.seed + 7), 64, args.steps)
    norms_before = state_gradient_norms(model, probe_x, probe_symbols)
    optimizer = nn.Adam(model.modules, lr=args.lr)
    clip = lambda modules: nn.clip_grad_norm(modules, 1.0)
    rng = np.random.default_rng(args.seed)          # every model sees the same batches
    hits, curve, learned_at = [], [], None
    for iteration in progress(range(args.iterations), kind):
        x, symbols = make_batch(rng, args.batch_size, args.steps)
        _, prediction = model.train_step(optimizer, x, symbols, nn.softmax_cross_entropy, clip)
        hits.append(np.mean(prediction.argmax(axis=1) == symbols))
        curve.append(float(np.mean(hits[-50:])))
        if learned_at is None and len(hits) >= 50 and curve[-1] >= 0.9:
            learned_at = iteration + 1
    test_x, test_symbols = make_batch(np.random.default_rng(args.seed + 99), 1000, args.steps)
    return dict(curve=curve, accuracy=accuracy(model, test_x, test_symbols),
                learned_at=learned_at, before=norms_before,
                after=state_gradient_norms(model, probe_x, probe_symbols))


def save_plot(path, results, steps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}
    for kind, result in results.items():
        left.plot(np.arange(1, len(result["curve"]) + 1), result["curve"], label=kind,
                  color=colours[kind])
        right.semilogy(np.arange(steps), result["before"], "--", color=colours[kind],
                       label=f"{kind}, before training")
        right.semilogy(np.arange(steps), result["after"], color=colours[kind],
                       label=f"{kind}, trained")
    left.axhline(1 / SYMBOLS, color="grey", lw=0.8, ls=":")
    left.set(xlabel="iteration", ylabel="training accuracy (last 50 batches)", ylim=(0, 1.02),
             title=f"remember the first of {steps} steps")
    right.set(xlabel="step t", ylabel="||dL/d state_t||  (LSTM: state = (h, c))",
              title="gradient reaching step t from the loss at the end")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"plot saved to {path}")


def main(argv=None):
    parser = build_parser(__doc__.split("\n")[0], "300 iterations instead of 600 (seconds)",
                          backends=["auto", "numpy", "cpu"])
    parser.add_argument("--steps", type=int, default=50, help="sequence length T (default 50)")
    parser.add_argument("--iterations", type=int, help="training batches per model (600)")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--gate-bias", type=float, default=3.0,
                        help="added to the LSTM forget / GRU update gate bias (0: torch's init)")
    parser.add_argument("--models", default="RNN,LSTM,GRU")
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 300 if args.quick else 600
    fastrnn.set_num_threads(1)
    print(f"task: the first of {args.steps} steps holds one of {SYMBOLS} symbols, the rest is "
          f"noise; {args.iterations} batches of {args.batch_size}, Adam {args.lr}, "
          f"gate bias {args.gate_bias}, chance {1 / SYMBOLS:.2f}")
    results = {}
    for kind in args.models.split(","):
        result = results[kind] = train(kind, args)
        learned = (f"90% from iteration {result['learned_at']}" if result["learned_at"]
                   else "never 90%")
        print(f"{kind}: test accuracy {result['accuracy']:.3f} ({learned}); "
              f"||dL/d state_0|| / ||dL/d state_T-1||: before training "
              f"{result['before'][0] / result['before'][-1]:.1e}, trained "
              f"{result['after'][0] / result['after'][-1]:.1e}")
    if args.plot:
        save_plot(args.plot, results, args.steps)
    print("test accuracy: " + ", ".join(f"{kind} {r['accuracy']:.3f}" for kind, r in results.items()))


if __name__ == "__main__":
    main()
