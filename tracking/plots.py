"""Tracking side: PNG plots of trials and studies, rendered from records and plain arrays with matplotlib's Agg.
Never imports studies, training or TensorFlow.

Figures are made with `matplotlib.figure.Figure`, never pyplot: no global state. Every function returns the PNG's
bytes. `python -P -m fitgap.tracking.plots` is the plotting process of `tracking.mlflow_sink` (see `main`).

Readable by construction: the constrained layout makes room for every title, label and legend; titles are wrapped to
the figure's width; legends sit outside the axes; a score's baseline (e.g. the majority class) is a dashed black
line in the legend; an axis whose positive values span decades is logarithmic.
"""

from __future__ import annotations

import io
import math
import sys
import tempfile
import textwrap
import traceback
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

DPI = 100
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
BASELINE = dict(color="black", linestyle="--", linewidth=1)  # a score's baseline, in every plot that has one
TITLE_SIZE, LABEL_SIZE, LEGEND_SIZE = 10, 9, 8  # points
LOG_SPAN = 30  # positive values whose largest is this many times the smallest (1.5 decades) get a log axis


def _figure(width: float, height: float, panels: int = 1, columns: int | None = None) -> tuple[Figure, list]:
    """A figure of `panels` axes in rows of `columns` (default: one row), under matplotlib's constrained layout:
    titles, axis labels, tick labels and outside legends get the room they need, so none is cut off."""
    columns = min(columns or panels, panels)
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(math.ceil(panels / columns), columns, squeeze=False).ravel())
    for ax in axes[panels:]:  # the last row's empty cells
        ax.remove()
    return figure, axes[:panels]


def _wrap(text: str, width: float, size: float) -> str:
    """`text` in lines that fit `width` inches at `size` points: a layout can move a title, never shorten it."""
    chars = max(12, int(width * 72 / (0.6 * size)))  # a character is at most ~0.6 em wide in the default font
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.splitlines())


def _title(figure: Figure, text: str) -> None:
    """The figure's title, wrapped to its width (an axes title would overflow a narrow axes' cell)."""
    if text:
        figure.suptitle(_wrap(text, figure.get_figwidth() - 0.2, TITLE_SIZE), fontsize=TITLE_SIZE)


def _labels(ax, xlabel: str, ylabel: str, width: float, height: float) -> None:
    ax.set_xlabel(_wrap(xlabel, width, LABEL_SIZE), fontsize=LABEL_SIZE)
    ax.set_ylabel(_wrap(ylabel, height, LABEL_SIZE), fontsize=LABEL_SIZE)


def _legend(figure: Figure, axes: Sequence, handles: Sequence = (), below: bool = False) -> None:
    """One legend outside the axes, where it never covers data: the axes' labelled artists, one entry per label,
    then `handles`. Right of the (single) axes, below its title; or, `below`, under every panel in as many rows as
    the figure's width needs."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    entries.update((h.get_label(), h) for h in handles)
    if not entries:
        return
    if not below:  # an axes legend: the layout keeps it clear of the figure's title
        axes[0].legend(list(entries.values()), list(entries), loc="upper left", bbox_to_anchor=(1.02, 1),
                       borderaxespad=0, fontsize=LEGEND_SIZE)
        return
    entry = 0.6 + max(map(len, entries)) * 0.6 * LEGEND_SIZE / 72  # inches: handle, gap and the longest label
    ncols = max(1, min(len(entries), int(figure.get_figwidth() / entry)))
    figure.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=LEGEND_SIZE,
                  ncols=ncols)


def _baseline(ax, baseline: float | None, label: str) -> None:
    if baseline is not None and math.isfinite(baseline):
        ax.axhline(baseline, label=label, **BASELINE)


def _log_if_spread(ax, axis: str, *values) -> None:
    """A log axis when the values are positive and span decades: on a linear one all but the largest would sit at
    the bottom."""
    v = _finite(*values)
    if len(v) and v.min() > 0 and v.max() >= LOG_SPAN * v.min():
        _log_axis(ax, axis, v)


def _log_axis(ax, axis: str, values: np.ndarray) -> None:
    """A log axis with ticks in plain numbers (0.02, not 2e-02); under two decades, 2 and 5 times each labelled
    too, so that the axis always reads."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    values = values[values > 0]
    few = bool(len(values)) and values.max() < 100 * values.min()
    ticks = ax.xaxis if axis == "x" else ax.yaxis
    ticks.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ticks.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if few and _leading_digit(v) in (2, 5) else ""))


def _leading_digit(value: float) -> int:
    return round(value / 10 ** math.floor(math.log10(value) + 1e-9))


def _finite(*values) -> np.ndarray:
    v = np.concatenate([np.ravel(np.asarray(x, dtype=float)) for x in values] or [np.zeros(0)])
    return v[np.isfinite(v)]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})  # fast; the files stay small
    return buffer.getvalue()


def _one_axes(figure: Figure, ax, xlabel: str, ylabel: str, title: str, height: float = 4) -> bytes:
    """A single-axes figure's labels, title and legend (outside, right), as PNG bytes."""
    _labels(ax, xlabel, ylabel, 5.5, height)
    _title(figure, title)
    _legend(figure, [ax])
    return _png(figure)


def _column(epochs: Sequence[Mapping[str, float]], name: str) -> np.ndarray:
    return np.array([math.nan if e.get(name) is None else e[name] for e in epochs], dtype=float)


def _rows(epochs: Iterable) -> list[Mapping[str, float]]:
    return [getattr(e, "metrics", e) for e in epochs]


def _curve_panels(epochs: Sequence[Mapping[str, float]]) -> list[tuple[str, str]]:
    """(metric, axis label) per panel: the trial's own loss, then accuracy or mse, whichever it measured."""
    panels = [("loss", "loss (data, no penalty)")]
    for metric in ("accuracy", "mse"):
        if np.isfinite(_column(epochs, metric)).any():
            panels.append((metric, metric))
            break
    return panels


def learning_curves(epochs: Iterable, title: str, best_epoch: int | None = None, overfit_epoch: int | None = None,
                    baseline: float | None = None, baseline_label: str = "baseline") -> bytes:
    """Train vs validation loss and accuracy (or mse), best epoch and the overfitting onset marked, the learning
    rate on a second axis of the loss panel when it changes; `baseline` (e.g. the majority class's validation
    accuracy) is a dashed line on the accuracy (or mse) panel."""
    rows = _rows(epochs)
    panels = _curve_panels(rows)
    figure, axes = _figure(4.2 * len(panels), 3.6, len(panels))
    x = np.arange(len(rows))
    extra = []
    for ax, (metric, label) in zip(axes, panels):
        ax.plot(x, _column(rows, metric), label="train", color="tab:blue")
        ax.plot(x, _column(rows, f"val_{metric}"), label="validation", color="tab:orange")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        if overfit_epoch is not None:
            ax.axvline(overfit_epoch, color="tab:red", linestyle=":", linewidth=1.5,
                       label=f"overfitting from {overfit_epoch}")
        if metric != "loss":
            _baseline(ax, baseline, baseline_label)
        _labels(ax, "epoch", label, 4.2, 3.6)
        _log_if_positive(ax, metric, rows)
    rates = _column(rows, "lr")
    if np.isfinite(rates).any() and np.nanmax(rates) > np.nanmin(rates):  # a constant rate says nothing over time
        twin = axes[0].twinx()
        extra += twin.plot(x, rates, color="gray", linestyle="-.", linewidth=1, label="learning rate")
        twin.set_ylim(0, np.nanmax(rates) * 1.05)
        twin.set_ylabel("learning rate", color="gray", fontsize=LABEL_SIZE)
        twin.tick_params(axis="y", labelcolor="gray", labelsize=7)
    _title(figure, title)
    _legend(figure, axes, extra, below=True)
    return _png(figure)


def curves_side_by_side(trials: Sequence[tuple[str, Iterable]], metrics: Sequence[str], title: str = "",
                        baseline: float | None = None, baseline_label: str = "baseline") -> bytes:
    """Train (solid) and validation (dashed) curves of a few trials, one colour per trial, one panel per metric;
    `baseline` is a dashed line on the accuracy (or mse) panel."""
    figure, axes = _figure(4.2 * len(metrics), 3.8, len(metrics))
    for ax, metric in zip(axes, metrics):
        for colour, (label, epochs) in zip(COLOURS, trials):
            rows = _rows(epochs)
            x = np.arange(len(rows))
            ax.plot(x, _column(rows, metric), color=colour, label=label)
            ax.plot(x, _column(rows, f"val_{metric}"), color=colour, linestyle="--")
        if metric in ("accuracy", "mse"):
            _baseline(ax, baseline, baseline_label)
        _labels(ax, "epoch", metric, 4.2, 3.6)
        _log_if_positive(ax, metric, [r for _, epochs in trials for r in _rows(epochs)])
    styles = [Line2D([], [], color="gray", label="train"), Line2D([], [], color="gray", linestyle="--",
                                                                  label="validation")]
    _title(figure, title)
    _legend(figure, axes, styles, below=True)
    return _png(figure)


def _log_if_positive(ax, metric: str, rows: Sequence[Mapping[str, float]]) -> None:
    """Losses on a log axis: the first epochs would otherwise flatten the gap between the curves."""
    if metric == "accuracy":
        return
    values = _finite(_column(rows, metric), _column(rows, f"val_{metric}"))
    if len(values) and values.min() > 0:
        _log_axis(ax, "y", values)


def read_boundary(npz: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(npz)) as data:
        return {name: data[name] for name in data.files}


def _draw_boundary(ax, grid: Mapping[str, np.ndarray], title: str, width: float) -> None:
    xx, yy = np.meshgrid(grid["grid_x"], grid["grid_y"])
    ax.contourf(xx, yy, np.clip(grid["probability"], 0, 1), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    ax.contour(xx, yy, grid["probability"], levels=[0.5], colors="black", linewidths=1.5)
    for split, marker in (("train", "o"), ("val", "^")):
        if f"x_{split}" in grid:
            x, y = grid[f"x_{split}"], grid[f"y_{split}"].ravel()
            ax.scatter(x[:, 0], x[:, 1], c=np.where(y > 0.5, "tab:red", "tab:blue"), marker=marker, s=10,
                       edgecolors="none")
    ax.set_title(_wrap(title, width - 0.7, TITLE_SIZE - 1), fontsize=TITLE_SIZE - 1)  # the axes is narrower
    _labels(ax, "x1", "x2", width - 0.7, width - 0.7)


BOUNDARY_KEY = (Line2D([], [], color="black", linewidth=1.5, label="p = 0.5"),
                Line2D([], [], color="gray", marker="o", linestyle="none", markersize=4, label="train"),
                Line2D([], [], color="gray", marker="^", linestyle="none", markersize=4, label="validation"),
                Patch(color="tab:red", alpha=0.6, label="label 1"), Patch(color="tab:blue", alpha=0.6, label="label 0"))


def boundaries(panels: Sequence[tuple[str, bytes]]) -> bytes:
    """Decision boundaries at p = 0.5 (the executor's `boundary.npz`) over the data points, in rows of three
    about square panels (so that five or six stay as readable as one)."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = _figure(3.3 * columns, 3.6 * rows + 0.5, len(panels), columns)
    for ax, (title, npz) in zip(axes, panels):
        _draw_boundary(ax, read_boundary(npz), title, 3.3)
    _legend(figure, [], BOUNDARY_KEY, below=True)
    return _png(figure)


def scatter_groups(groups: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                   log_x: bool | None = None, title: str = "", zero_line: bool = False,
                   baseline: float | None = None, baseline_label: str = "baseline") -> bytes:
    """One colour per group (e.g. regularizer type): y against x; `zero_line` marks y = 0 (a gap's sign),
    `baseline` is a dashed line (e.g. the unregularized score). `log_x` None: log when x spans decades."""
    figure, (ax,) = _figure(7, 4)
    for colour, (name, (x, y)) in zip(COLOURS, groups.items()):
        ax.scatter(x, y, color=colour, label=name, s=18)
    _x_scale(ax, log_x, [x for x, _ in groups.values()])
    if zero_line:
        ax.axhline(0, color="gray", linewidth=0.5)
    else:
        _log_if_spread(ax, "y", *[y for _, y in groups.values()])
    _baseline(ax, baseline, baseline_label)
    return _one_axes(figure, ax, xlabel, ylabel, title)


def _x_scale(ax, log_x: bool | None, values: Sequence) -> None:
    if log_x is None:
        _log_if_spread(ax, "x", *values)
    elif log_x:
        _log_axis(ax, "x", _finite(*values))


def strip_plot(groups: Mapping[str, Sequence[float]], ylabel: str, title: str = "", baseline: float | None = None,
               baseline_label: str = "baseline") -> bytes:
    """Each group's values as points with their median: for arms without a weight (e.g. `none`)."""
    figure, (ax,) = _figure(7, 4)
    for i, (colour, (name, values)) in enumerate(zip(COLOURS, groups.items())):
        values = np.asarray(values, dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + jitter[:len(values)], values, color=colour, s=18)
        if len(values):
            ax.hlines(np.median(values), i - 0.25, i + 0.25, color="black", linewidth=2, label="median")
    crowded = sum(map(len, groups)) > 60  # characters: more would run into each other on one line
    ax.set_xticks(range(len(groups)), list(groups), rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    _log_if_spread(ax, "y", *groups.values())
    _baseline(ax, baseline, baseline_label)
    return _one_axes(figure, ax, "", ylabel, title)


def frontier(points: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
             front: tuple[Sequence[float], Sequence[float]] | None = None, log_x: bool | None = None,
             title: str = "", baseline: float | None = None, baseline_label: str = "baseline") -> bytes:
    """y against x (e.g. accuracy against parameter count), one colour per group, the non-dominated front (sorted
    by x) drawn as a step line. `log_x` None: log when x spans decades."""
    figure, (ax,) = _figure(7, 4)
    for colour, (name, (x, y)) in zip(COLOURS, points.items()):
        ax.scatter(x, y, color=colour, label=name, s=18)
    if front is not None and len(front[0]):
        ax.step(front[0], front[1], where="post", color="black", linewidth=1, label="front")
    _x_scale(ax, log_x, [x for x, _ in points.values()])
    _log_if_spread(ax, "y", *[y for _, y in points.values()])
    _baseline(ax, baseline, baseline_label)
    return _one_axes(figure, ax, xlabel, ylabel, title)


def path_plot(groups: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
              baseline: tuple[float, float, float] | None, ylabel: str, title: str,
              best_weight: float | None = None) -> bytes:
    """A metric (the fit gap, the objective) against the regularization weight on a log axis: per regularizer
    type (`groups`: name -> (weights, means, lows, highs)) a line through the means in its interval band; the
    unregularized `baseline` (mean, low, high) as a dashed line in its band; the chosen weight marked."""
    figure, (ax,) = _figure(7, 4)
    for colour, (name, (weights, means, lows, highs)) in zip(COLOURS, groups.items()):
        order = np.argsort(np.asarray(weights, dtype=float))
        w, m, lo, hi = (np.asarray(v, dtype=float)[order] for v in (weights, means, lows, highs))
        ax.plot(w, m, color=colour, marker="o", markersize=4, label=name)
        ax.fill_between(w, lo, hi, color=colour, alpha=0.2, linewidth=0)
        if best_weight is not None:
            chosen = np.isclose(w, best_weight)
            ax.plot(w[chosen], m[chosen], linestyle="none", marker="*", markersize=14, color=colour,
                    markeredgecolor="black")
    if baseline is not None and math.isfinite(baseline[0]):
        ax.axhline(baseline[0], label="none (unregularized)", **BASELINE)
        ax.axhspan(baseline[1], baseline[2], color="black", alpha=0.08, linewidth=0)
    if best_weight is not None:
        ax.axvline(best_weight, color="gray", linestyle=":", linewidth=1, label=f"chosen weight {best_weight:g}")
    _log_axis(ax, "x", _finite(*(weights for weights, *_ in groups.values())))
    return _one_axes(figure, ax, "regularization weight", ylabel, title)


def history(numbers: Sequence[int], values: Sequence[float], best_so_far: Sequence[float], ylabel: str,
            title: str = "") -> bytes:
    """Each trial's objective in trial order, with the best so far as a step line."""
    figure, (ax,) = _figure(7, 3.6)
    ax.scatter(numbers, values, s=14, color="tab:blue", label="trial")
    ax.step(numbers, best_so_far, where="post", color="tab:red", label="best so far")
    _log_if_spread(ax, "y", values)
    return _one_axes(figure, ax, "trial", ylabel, title, height=3.6)


def bars(values: Mapping[str, float], xlabel: str, title: str = "") -> bytes:
    """One horizontal bar per name, the first at the top."""
    figure, (ax,) = _figure(6, 0.9 + 0.35 * max(1, len(values)))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    _labels(ax, xlabel, "", 4.5, 1)
    _title(figure, title)
    return _png(figure)


def trial_plots(record, overfit_epoch: int | None) -> dict[str, bytes]:
    """A finished trial's learning_curves.png, and boundary.png when its executor sent a probability grid."""
    title = f"{record.study} trial {record.number}"
    score = _curve_panels(_rows(record.epochs))[-1][0]  # the trivial prediction's score is an accuracy or an mse
    label = {"accuracy": "majority class", "mse": "predicting the mean"}.get(score, "baseline")
    files = {"learning_curves.png": learning_curves(record.epochs, title, record.best_epoch, overfit_epoch,
                                                    record.val_baseline, label)}
    if "boundary.npz" in record.artifacts:
        files["boundary.png"] = boundaries([(f"{title}: p = 0.5", record.artifacts["boundary.npz"])])
    return files


def main() -> None:
    """The plotting process: the MLflow tracking URI, then (artifact URI, TrialRecord, overfit epoch) triples until
    its input ends (`fitgap.channel`); each trial's plots go to its run's artifact store (never the tracking
    database), and its number goes back once it is done."""
    import os
    import signal

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from fitgap.channel import child_ends, receive, send

    if hasattr(os, "nice"):
        os.nice(19)  # the coordinator, the tracking process and the executors come first
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's; this process ends with its input
    inbox, done = child_ends()
    tracking_uri = receive(inbox)
    while (message := receive(inbox)) is not None:
        artifact_uri, record, overfit_epoch = message
        try:
            with tempfile.TemporaryDirectory(prefix="fitgap-plots-") as folder:
                for name, content in trial_plots(record, overfit_epoch).items():
                    Path(folder, name).write_bytes(content)
                get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifacts(folder)
        except Exception:
            print(f"fitgap: warning: no plots for trial {record.number} of {record.study}:\n{traceback.format_exc()}",
                  file=sys.stderr)
        send(done, record.number)


if __name__ == "__main__":
    main()
