"""``--plot PATH``: the report as a chart (matplotlib, imported only here).

One panel per measure, one group of bars per shape (and cell), one bar per engine: throughput
and ragged batches as each engine's time relative to fastrnn's (forward, forward + backward;
the limit's bar is fastrnn's share of it), latency as microseconds per call. Log scales,
because the ratios span 0.1x-100x.
"""
import numpy as np


def _panels(report):
    """[(title, x label, reference line or None, {group label: {engine: value}})]."""
    panels = []
    for mode, title in (("forward", "forward"), ("forward_backward", "forward + backward")):
        results = report.get("throughput", []) + report.get("ragged", [])
        groups = {r["shape"]["key"]: {name: e[mode]["rel"] for name, e in r["engines"].items()
                                      if mode in e and "rel" in e[mode]} for r in results}
        if any(groups.values()):
            panels.append((f"throughput, {title}", "time / fastrnn's time (right: slower)",
                           1.0, groups))
    groups = {f"T={r['shape']['T']}": {name: e["forward"]["median_ms"] * 1e3
                                       for name, e in r["engines"].items()}
              for r in report.get("latency", [])}
    if any(groups.values()):
        panels.append(("latency, B=1, I=H=64", "us per call", None, groups))
    return panels


def _draw(ax, title, xlabel, reference, groups, colours):
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    engines = list(dict.fromkeys(name for values in groups.values() for name in values))
    height = 0.8 / max(len(engines), 1)
    y = np.arange(len(groups))
    for i, name in enumerate(engines):
        values = [values.get(name, np.nan) for values in groups.values()]
        ax.barh(y + i * height, values, height=height, label=name, color=colours[name])
    ax.set_xscale("log")
    suffix = "x" if reference is not None else ""
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if reference is not None:
        ax.axvline(reference, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y + 0.4 - height / 2, list(groups), fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.legend(fontsize=7, frameon=False)


def write_plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = _panels(report)
    palette = plt.get_cmap("tab10").colors
    names = report["settings"]["engines"] + ["limit"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    rows = max((len(groups) for *_, groups in panels), default=1)
    fig, axes = plt.subplots(1, max(len(panels), 1), squeeze=False,
                             figsize=(5.5 * max(len(panels), 1), 0.55 * rows + 2.5))
    for ax, panel in zip(axes[0], panels):
        _draw(ax, *panel, colours)
    s = report["settings"]
    fig.suptitle(f"fastrnn bench on {report['machine']['cpu']}: {s['threads']} thread(s), "
                 f"medians of {s['repeats']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
