"""Yearly sunspot numbers, 1700-2008: forecast next year's from the past ``--window`` years.

A many-to-one regression: the RNN reads one year per step and a Linear head turns its last
hidden state into the next year's value, trained with mean squared error. The split is by
time (the last quarter of the years is the test set; nothing from the future reaches
training) and values are standardised with the training years' mean and spread. The bar to
clear is the naive forecast "next year = this year"; both are scored in sunspot units.

    python examples/sunspots_forecast.py [--quick] [--backend numpy|cpu] [--plot curves.png]
"""
import numpy as np

import fastrnn
from fastrnn import nn

from _common import ManyToOne, build_parser, progress, save_curves_if_asked


def load_sunspots():
    """(years [N], yearly mean sunspot numbers [N]) from statsmodels' bundled data."""
    import statsmodels.api as sm
    data = sm.datasets.sunspots.load_pandas().data
    return data["YEAR"].to_numpy().astype(int), data["SUNACTIVITY"].to_numpy()


def make_windows(series, window):
    """Inputs ``[window, N, 1]`` (time-major) and targets ``[N]``: years t-window..t-1 -> t."""
    starts = np.arange(len(series) - window)
    steps = starts[None, :] + np.arange(window)[:, None]            # [window, N]
    return series[steps][:, :, None], series[starts + window]


def split_by_time(years, series, window, test_fraction):
    """Windows whose target year falls in the first (1 - test_fraction) of the record train."""
    inputs, targets = make_windows(series, window)
    target_years = years[window:]
    cut = int(round(len(targets) * (1 - test_fraction)))
    train = (inputs[:, :cut], targets[:cut])
    test = (inputs[:, cut:], targets[cut:])
    return train, test, target_years[cut]


def errors(prediction, target):
    difference = prediction - target
    return {"RMSE": float(np.sqrt(np.mean(difference ** 2))),
            "MAE": float(np.mean(np.abs(difference)))}


class Scaler:
    """Standardisation with statistics of the training years only."""

    def __init__(self, values):
        self.mean, self.std = float(np.mean(values)), float(np.std(values))

    def scale(self, values):
        return ((values - self.mean) / self.std).astype(np.float32)

    def unscale(self, values):
        return values.astype(np.float64) * self.std + self.mean


def forecast(model, inputs, scaler):
    with fastrnn.no_grad():
        return scaler.unscale(model(scaler.scale(inputs))[:, 0])


def mse_on_column(prediction, target):
    """MSE between the head's ``[B, 1]`` output and ``[B]`` targets, gradient ``[B, 1]``."""
    return nn.mse_loss(prediction, target[:, None])


def train(args, train_split, test_split, scaler):
    x_train, y_train = scaler.scale(train_split[0]), scaler.scale(train_split[1])
    model = ManyToOne(rnn=fastrnn.RNN(1, args.hidden_size, backend=args.backend, seed=args.seed),
                      head=nn.Linear(args.hidden_size, 1, seed=args.seed + 1))
    optimizer = nn.Adam(model.modules, lr=args.lr)
    clip = lambda modules: nn.clip_grad_norm(modules, 1.0)
    rng = np.random.default_rng(args.seed)
    curves = {"RMSE (sunspot number)": {"train": [], "test": []}}
    bar = progress(range(args.epochs), "epochs")
    for _ in bar:
        order = rng.permutation(x_train.shape[1])
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            model.train_step(optimizer, x_train[:, batch], y_train[batch], mse_on_column, clip)
        for split, (inputs, targets) in (("train", train_split), ("test", test_split)):
            curves["RMSE (sunspot number)"][split].append(
                errors(forecast(model, inputs, scaler), targets)["RMSE"])
        bar.set_postfix(test_rmse=f"{curves['RMSE (sunspot number)']['test'][-1]:.2f}")
    return model, curves


def main():
    parser = build_parser(__doc__.splitlines()[0], "train for a few epochs only (CI smoke run)",
                          backends=("cpu", "numpy"))
    parser.add_argument("--epochs", type=int, help="training epochs (default: 100, quick: 20)")
    parser.add_argument("--window", type=int, default=11,
                        help="past years per forecast (default: 11, one solar cycle)")
    parser.add_argument("--hidden-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.003, help="Adam learning rate")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    args = parser.parse_args()
    args.epochs = args.epochs or (20 if args.quick else 100)
    fastrnn.set_num_threads(1)       # small matrices: one BLAS thread is faster and steadier

    years, series = load_sunspots()
    train_split, test_split, first_test_year = split_by_time(years, series, args.window,
                                                             args.test_fraction)
    scaler = Scaler(series[years < first_test_year])
    print(f"sunspots {years[0]}-{years[-1]}: {train_split[1].size} training windows, "
          f"{test_split[1].size} test years ({first_test_year}-{years[-1]}), window {args.window}")
    model, curves = train(args, train_split, test_split, scaler)

    test_inputs, test_targets = test_split
    model_errors = errors(forecast(model, test_inputs, scaler), test_targets)
    naive_errors = errors(test_inputs[-1, :, 0], test_targets)       # next year = this year
    save_curves_if_asked(args.plot, curves, "sunspots_forecast (fastrnn.RNN + fastrnn.nn)")
    beaten = [name for name in model_errors if model_errors[name] < naive_errors[name]]
    print(f"the model beats the naive forecast on {', '.join(beaten) or 'neither error'}"
          + ("" if len(beaten) == 2 else " (see the numbers below)"))
    print(" | ".join(f"test {name}: model {model_errors[name]:.2f}, naive {naive_errors[name]:.2f}"
                     for name in ("RMSE", "MAE")))


if __name__ == "__main__":
    main()
