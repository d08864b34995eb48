"""Tracking side: PNG plots of trials and studies, rendered from records and plain arrays with matplotlib's Agg.
Never imports studies, training or TensorFlow.

Figures are made with `matplotlib.figure.Figure`, never pyplot: no global state. Every function returns the PNG's
bytes. `python -P -m fitgap.tracking.plots` is the plotting process of `tracking.mlflow_sink` (see `main`).
"""

from __future__ import annotations

import io
import math
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 80
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def _figure(width: float, height: float, panels: int = 1, margins: dict | None = None) -> tuple[Figure, list]:
    """A figure of `panels` axes side by side. Fixed `margins` (subplots_adjust) skip the constrained layout, which
    costs half the drawing time: the per-trial plots, rendered for every trial, use them."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout=None if margins else "constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if margins:
        figure.subplots_adjust(**margins)
    return figure, list(axes)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})  # fast; the files stay small
    return buffer.getvalue()


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


def learning_curves(epochs: Iterable, title: str, best_epoch: int | None = None,
                    overfit_epoch: int | None = None) -> bytes:
    """Train vs validation loss and accuracy (or mse), the learning rate on a second axis, best epoch and the
    overfitting onset marked."""
    rows = _rows(epochs)
    panels = _curve_panels(rows)
    figure, axes = _figure(4.4 * len(panels), 3.2, len(panels),
                           dict(left=0.09, right=0.9, bottom=0.15, top=0.88, wspace=0.5))
    x = np.arange(len(rows))
    for ax, (metric, label) in zip(axes, panels):
        ax.plot(x, _column(rows, metric), label="train", color="tab:blue")
        ax.plot(x, _column(rows, f"val_{metric}"), label="validation", color="tab:orange")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best ({best_epoch})")
        if overfit_epoch is not None:
            ax.axvline(overfit_epoch, color="tab:red", linestyle=":", linewidth=1.5,
                       label=f"overfit from {overfit_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        _log_if_positive(ax, metric, rows)
        rates = _column(rows, "lr")
        if np.isfinite(rates).any():
            twin = ax.twinx()
            twin.plot(x, rates, color="gray", linestyle="-.", linewidth=1)
            twin.set_ylim(0, np.nanmax(rates) * 1.05)
            twin.set_ylabel("learning rate", color="gray")
            twin.tick_params(axis="y", labelcolor="gray", labelsize=7)
        ax.legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def curves_side_by_side(trials: Sequence[tuple[str, Iterable]], metrics: Sequence[str]) -> bytes:
    """Train (solid) and validation (dashed) curves of a few trials, one panel per metric."""
    figure, axes = _figure(4.5 * len(metrics), 3.6, len(metrics))
    for ax, metric in zip(axes, metrics):
        for colour, (label, epochs) in zip(COLOURS, trials):
            rows = _rows(epochs)
            x = np.arange(len(rows))
            ax.plot(x, _column(rows, metric), color=colour, label=f"{label}: train")
            ax.plot(x, _column(rows, f"val_{metric}"), color=colour, linestyle="--", label=f"{label}: validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        _log_if_positive(ax, metric, [r for _, epochs in trials for r in _rows(epochs)])
        ax.legend(fontsize=7)
    return _png(figure)


def _log_if_positive(ax, metric: str, rows: Sequence[Mapping[str, float]]) -> None:
    """Losses on a log axis: the first epochs would otherwise flatten the gap between the curves."""
    if metric == "accuracy":
        return
    values = np.concatenate([_column(rows, metric), _column(rows, f"val_{metric}")])
    values = values[np.isfinite(values)]
    if len(values) and values.min() > 0:
        ax.set_yscale("log")


def read_boundary(npz: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(npz)) as data:
        return {name: data[name] for name in data.files}


def _draw_boundary(ax, grid: Mapping[str, np.ndarray], title: str) -> None:
    xx, yy = np.meshgrid(grid["grid_x"], grid["grid_y"])
    ax.contourf(xx, yy, np.clip(grid["probability"], 0, 1), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    ax.contour(xx, yy, grid["probability"], levels=[0.5], colors="black", linewidths=1.5)
    for split, marker in (("train", "o"), ("val", "^")):
        if f"x_{split}" in grid:
            x, y = grid[f"x_{split}"], grid[f"y_{split}"].ravel()
            ax.scatter(x[:, 0], x[:, 1], c=np.where(y > 0.5, "tab:red", "tab:blue"), marker=marker, s=10,
                       edgecolors="none", label=split)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")


def boundaries(panels: Sequence[tuple[str, bytes]]) -> bytes:
    """Decision boundaries at p = 0.5 (the executor's `boundary.npz`) side by side, over the data points."""
    figure, axes = _figure(4 * len(panels), 3.8, len(panels),
                           dict(left=0.14 / len(panels), right=0.97, bottom=0.13, top=0.92, wspace=0.3))
    for ax, (title, npz) in zip(axes, panels):
        _draw_boundary(ax, read_boundary(npz), title)
    axes[0].legend(fontsize=7, loc="upper right")
    return _png(figure)


def scatter_groups(groups: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                   log_x: bool = False, title: str = "", zero_line: bool = False) -> bytes:
    """One colour per group (e.g. regularizer type): y against x; `zero_line` marks y = 0 (a gap's sign)."""
    figure, (ax,) = _figure(6, 3.8)
    for colour, (name, (x, y)) in zip(COLOURS, groups.items()):
        ax.scatter(x, y, color=colour, label=name, s=18)
    if log_x:
        ax.set_xscale("log")
    if zero_line:
        ax.axhline(0, color="gray", linewidth=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(figure)


def strip_plot(groups: Mapping[str, Sequence[float]], ylabel: str, title: str = "") -> bytes:
    """Each group's values as points with their median: for arms without a weight (e.g. `none`)."""
    figure, (ax,) = _figure(6, 3.8)
    for i, (colour, (name, values)) in enumerate(zip(COLOURS, groups.items())):
        values = np.asarray(values, dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + jitter, values, color=colour, s=18)
        if len(values):
            ax.hlines(np.median(values), i - 0.25, i + 0.25, color="black", linewidth=2)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    return _png(figure)


def frontier(points: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
             front: tuple[Sequence[float], Sequence[float]] | None = None, log_x: bool = True) -> bytes:
    """y against x (e.g. accuracy against parameter count), one colour per group, the non-dominated front (sorted
    by x) drawn as a step line."""
    figure, (ax,) = _figure(6, 3.8)
    for colour, (name, (x, y)) in zip(COLOURS, points.items()):
        ax.scatter(x, y, color=colour, label=name, s=18)
    if front is not None and len(front[0]):
        ax.step(front[0], front[1], where="post", color="black", linewidth=1, label="front")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _png(figure)


def history(numbers: Sequence[int], values: Sequence[float], best_so_far: Sequence[float], ylabel: str) -> bytes:
    figure, (ax,) = _figure(6, 3.4)
    ax.scatter(numbers, values, s=14, color="tab:blue", label="trial")
    ax.step(numbers, best_so_far, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _png(figure)


def bars(values: Mapping[str, float], xlabel: str) -> bytes:
    figure, (ax,) = _figure(6, 0.6 + 0.35 * max(1, len(values)))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set_xlabel(xlabel)
    return _png(figure)


def trial_plots(record, overfit_epoch: int | None) -> dict[str, bytes]:
    """A finished trial's learning_curves.png, and boundary.png when its executor sent a probability grid."""
    title = f"{record.study} trial {record.number}"
    files = {"learning_curves.png": learning_curves(record.epochs, title, record.best_epoch, overfit_epoch)}
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
