"""Handwritten digits read row by row: each 8x8 image is 8 steps of 8 pixels, one label.

scikit-learn's bundled digits (1797 images, no download). A many-to-one RNN classifies each
image from its last hidden state. The same model is trained twice in one run, once on the
'numpy' backend (the NumPy reference, one Python loop per step) and once on 'cpu' (the
compiled kernels), from the same seed and alternating epoch by epoch, so that the time per
epoch of the two backends is compared under the same machine load (design.md's protocol).
Both models should reach the same accuracy: the backends compute the same maths.

    python examples/digits_rows.py [--quick] [--plot curves.png]
"""
import statistics

import numpy as np

import fastrnn
from fastrnn import nn

from _common import (ManyToOne, blas_description, build_parser, progress,
                     save_curves_if_asked, stopwatch)

BACKENDS = ("numpy", "cpu")


def load_rows(seed, test_fraction=0.25):
    """Train and test splits as ``(images [T=8, N, 8] float32, labels [N])``, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)          # [N, 8 rows, 8 pixels]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed,
        stratify=digits.target)
    time_major = lambda x: np.ascontiguousarray(x.transpose(1, 0, 2))    # [8, N, 8]
    return (time_major(x_train), y_train), (time_major(x_test), y_test)


def build_model(backend, hidden_size, seed):
    return ManyToOne(rnn=fastrnn.RNN(8, hidden_size, backend=backend, seed=seed),
                     head=nn.Linear(hidden_size, 10, seed=seed + 1))


def train_one_epoch(model, optimizer, x, y, batch_size, rng):
    """Mean training loss over one pass of shuffled mini-batches."""
    order = rng.permutation(x.shape[1])
    clip = lambda modules: nn.clip_grad_norm(modules, max_norm=5.0)
    losses = []
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        loss, _ = model.train_step(optimizer, x[:, batch], y[batch], nn.softmax_cross_entropy, clip)
        losses.append(loss)
    return float(np.mean(losses))


def timed_epoch(run, x, y, batch_size):
    """``train_one_epoch`` for one backend's run, recording its time and the RNN's share."""
    times, rnn_before = {}, run["model"].times["rnn"]
    with stopwatch(times, "epoch"):
        loss = train_one_epoch(run["model"], run["optimizer"], x, y, batch_size, run["rng"])
    run["epoch_times"].append(times["epoch"])
    run["rnn_times"].append(run["model"].times["rnn"] - rnn_before)
    return loss


def accuracy(model, x, y):
    with fastrnn.no_grad():
        return float(np.mean(model(x).argmax(axis=1) == y))


def report_timings(runs, test_accuracy):
    """Median time per epoch of each backend: whole training epoch, and RNN calls alone."""
    median_ms = lambda times: statistics.median(times) * 1e3
    for backend, run in runs.items():
        print(f"backend {backend:5s}: test accuracy {test_accuracy[backend][-1]:.3f}, "
              f"median time per epoch {median_ms(run['epoch_times']):.1f} ms "
              f"(RNN forward + backward: {median_ms(run['rnn_times']):.1f} ms)")
    for what in ("epoch_times", "rnn_times"):
        ratio = median_ms(runs["numpy"][what]) / median_ms(runs["cpu"][what])
        label = "time per epoch" if what == "epoch_times" else "RNN time per epoch"
        print(f"{label}, numpy / cpu: {ratio:.2f}x")


def main():
    parser = build_parser(__doc__.splitlines()[0], "train for a few epochs only (CI smoke run)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: 40, quick: 6)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate")
    args = parser.parse_args()
    args.epochs = args.epochs or (6 if args.quick else 40)
    fastrnn.set_num_threads(1)       # small matrices: one BLAS thread is faster and steadier

    (x_train, y_train), (x_test, y_test) = load_rows(args.seed)
    print(f"digits: {x_train.shape[1]} train / {x_test.shape[1]} test images, "
          f"{x_train.shape[0]} steps of {x_train.shape[2]} pixels; BLAS: {blas_description()}")
    runs = {}
    for backend in BACKENDS:
        model = build_model(backend, args.hidden_size, args.seed)
        runs[backend] = dict(model=model, optimizer=nn.Adam(model.modules, lr=args.lr),
                             rng=np.random.default_rng(args.seed), epoch_times=[], rnn_times=[])
    curves = {"loss": {}, "test accuracy": {}}
    for _ in progress(range(args.epochs), "epochs"):
        for backend, run in runs.items():            # alternate: same load for both backends
            loss = timed_epoch(run, x_train, y_train, args.batch_size)
            curves["loss"].setdefault(f"train ({backend})", []).append(loss)
            curves["test accuracy"].setdefault(backend, []).append(
                accuracy(run["model"], x_test, y_test))

    report_timings(runs, curves["test accuracy"])
    save_curves_if_asked(args.plot, curves, "digits_rows (fastrnn.RNN + fastrnn.nn)")
    print(f"test accuracy: {curves['test accuracy']['cpu'][-1]:.3f}")


if __name__ == "__main__":
    main()
