"""The report's and MLflow's plots: each is a PNG of the size asked, nothing drawn is cut off (long titles
included), legends sit outside the axes, baselines are drawn and named, and axes go log where values span decades."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.legend import Legend

from fitgap.tracking import plots
from fitgap.tracking.records import EpochRecord, TrialRecord

LONG = ("a-study-with-a-long-name-that-goes-on-and-on trial 12: the fit gap against the regularization weight "
        "(mean and 95 % interval over seeds; unregularized: the dashed line and its band)")


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plots render, in order (each PNG is still written by the real `_png`)."""
    figures, png = [], plots._png
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or png(figure))
    return figures


def epochs(n: int = 60, decay: bool = False) -> list[dict]:
    """Curves that overfit: the training loss falls, the validation loss rises again after epoch 20."""
    t = np.arange(n)
    return [{"loss": 0.7 * np.exp(-t[i] / 10) + 1e-3, "val_loss": 0.3 + 1e-4 * (t[i] - 20) ** 2,
             "accuracy": min(1.0, 0.5 + t[i] / 40), "val_accuracy": min(0.9, 0.5 + t[i] / 50),
             "lr": 0.1 * 0.95 ** t[i] if decay else 0.01} for i in range(n)]


def boundary_npz(seed: int = 0) -> bytes:
    rng = np.random.RandomState(seed)
    grid = np.linspace(-4, 4, 30)
    xx, yy = np.meshgrid(grid, grid)
    x = rng.randn(80, 2).astype(np.float32)
    y = (x[:, :1] ** 2 + x[:, 1:] ** 2 < 2).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, grid_x=grid, grid_y=grid, probability=(1 / (1 + np.exp(xx**2 + yy**2 - 2))).astype(np.float32),
             x_train=x[:40], y_train=y[:40], x_val=x[40:], y_val=y[40:])
    return buffer.getvalue()


PATH_GROUPS = {"l2": ([1e-3, 1e-2, 1e-1], [0.07, 0.02, 0.021], [0.06, 0.015, 0.015], [0.08, 0.025, 0.027]),
               "l1": ([3e-4, 3e-3, 3e-2], [0.09, 0.031, 0.036], [0.08, 0.028, 0.022], [0.1, 0.034, 0.05])}
WEIGHTS = {"l2": ([1e-4, 1e-3, 1e-2, 1e-1], [0.1, 0.05, 0.02, 0.01]), "l1": ([3e-4, 3e-3], [0.09, 0.03])}

# every plot function, with a long title where it takes one and a baseline where it plots a score
EVERY_PLOT = {
    "learning_curves": lambda: plots.learning_curves(epochs(), LONG, 20, 25, 0.6, "majority class"),
    "curves_side_by_side": lambda: plots.curves_side_by_side(
        [(f"trial {i}", epochs()) for i in range(5)], ["loss", "accuracy"], LONG, 0.6, "majority class"),
    "boundaries": lambda: plots.boundaries([(f"{LONG[:40]} {i}", boundary_npz(i)) for i in range(5)]),
    "scatter_groups": lambda: plots.scatter_groups(WEIGHTS, "regularization weight", "fit gap", True, LONG, True),
    "strip_plot": lambda: plots.strip_plot({"none": [0.13, 0.15], "l2": [0.02, 0.03]}, "fit gap", LONG, 0.14),
    "frontier": lambda: plots.frontier({"relu": ([10, 100, 1000], [0.8, 0.9, 0.95])}, "parameters", "val_accuracy",
                                       ([10, 1000], [0.8, 0.95]), title=LONG, baseline=0.6),
    "path_plot": lambda: plots.path_plot(PATH_GROUPS, (0.13, 0.12, 0.145), "fit gap (nats)", LONG, 0.01),
    "history": lambda: plots.history([0, 1, 2], [0.5, 0.3, 0.4], [0.5, 0.3, 0.3], "val_bce", LONG),
    "bars": lambda: plots.bars({"a_rather_long_hyperparameter_name": 0.7, "learning_rate": 0.3}, "importance", LONG),
}


@pytest.mark.parametrize("name", EVERY_PLOT)
def test_each_plot_is_a_png_with_everything_inside_it(name, drawn):
    png = EVERY_PLOT[name]()
    figure = drawn[-1]
    image = imread(io.BytesIO(png), format="png")
    width, height = figure.get_size_inches() * figure.dpi
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and image.shape[:2] == (round(height), round(width))
    renderer = figure.canvas.get_renderer()
    inside = figure.get_tightbbox(renderer)  # inches: everything drawn, titles, labels, ticks and legends
    assert inside.x0 >= -0.01 and inside.y0 >= -0.01, name
    assert inside.x1 <= figure.get_figwidth() + 0.01 and inside.y1 <= figure.get_figheight() + 0.01, name
    titles = [t for t in [*figure.texts, *(ax.title for ax in figure.axes)] if t.get_text()]  # texts: the suptitle
    assert titles
    for title in titles:  # in pixels: wrapped, within the figure
        box = title.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, title.get_text()


@pytest.mark.parametrize("name", ["learning_curves", "curves_side_by_side", "scatter_groups", "strip_plot",
                                  "frontier", "path_plot", "history"])
def test_legends_cover_neither_the_axes_nor_the_title(name, drawn):
    EVERY_PLOT[name]()
    figure = drawn[-1]
    renderer = figure.canvas.get_renderer()
    legends = figure.findobj(Legend)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), name
        assert not any(box.overlaps(title.get_window_extent(renderer)) for title in figure.texts), name


def _baseline_lines(figure, value: float) -> list:
    return [line for ax in figure.axes for line in ax.get_lines()
            if line.get_linestyle() == "--" and np.allclose(line.get_ydata(), value)]


def _legend_texts(figure) -> list[str]:
    return [t.get_text() for legend in figure.findobj(Legend) for t in legend.get_texts()]


@pytest.mark.parametrize("draw", [
    lambda b: plots.scatter_groups(WEIGHTS, "weight", "val_accuracy", baseline=b, baseline_label="majority class"),
    lambda b: plots.strip_plot({"none": [0.9, 0.92], "l2": [0.95]}, "val_accuracy", baseline=b,
                               baseline_label="majority class"),
    lambda b: plots.frontier({"all": ([10, 100], [0.8, 0.9])}, "parameters", "val_accuracy", baseline=b,
                             baseline_label="majority class"),
    lambda b: plots.learning_curves(epochs(), "t", baseline=b, baseline_label="majority class"),
    lambda b: plots.curves_side_by_side([("a", epochs())], ["loss", "accuracy"], baseline=b,
                                        baseline_label="majority class"),
], ids=["scatter_groups", "strip_plot", "frontier", "learning_curves", "curves_side_by_side"])
def test_a_score_baseline_is_a_dashed_line_with_its_legend_entry(draw, drawn):
    draw(0.625)
    assert len(_baseline_lines(drawn[-1], 0.625)) == 1  # on the score's panel only
    assert "majority class" in _legend_texts(drawn[-1])
    draw(None)
    assert not _baseline_lines(drawn[-1], 0.625) and "majority class" not in _legend_texts(drawn[-1])


def test_the_path_plot_has_a_band_per_regularizer_the_baseline_and_the_chosen_weight(drawn):
    png = plots.path_plot(PATH_GROUPS, (0.13, 0.12, 0.145), "fit gap (nats)", "the path", best_weight=0.01)
    (ax,) = drawn[-1].axes
    assert png.startswith(b"\x89PNG") and ax.get_xscale() == "log"
    assert len(ax.collections) == 2 and len(ax.patches) == 1  # a band per type; the baseline's band
    assert {"l1", "l2", "none (unregularized)", "chosen weight 0.01"} <= set(_legend_texts(drawn[-1]))
    stars = [line for line in ax.get_lines() if line.get_marker() == "*" and len(line.get_xdata())]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([0.01], [0.02])]  # l2's, not l1's
    plots.path_plot({"l2": PATH_GROUPS["l2"]}, None, "val_accuracy", "no baseline, nothing chosen")
    (ax,) = drawn[-1].axes
    assert not ax.patches and "chosen weight" not in " ".join(_legend_texts(drawn[-1]))


def test_five_boundaries_are_two_rows_of_readable_panels(drawn):
    plots.boundaries([(f"panel {i}", boundary_npz(i)) for i in range(5)])
    figure = drawn[-1]
    renderer = figure.canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in figure.axes]
    assert len(boxes) == 5 and len({round(b.y0) for b in boxes}) == 2  # 3 above, 2 below
    assert min(b.width for b in boxes) >= 200  # pixels: as wide as one panel alone
    panels = [ax.get_tightbbox(renderer) for ax in figure.axes]  # with its title, tick and axis labels
    assert not any(a.overlaps(b) for i, a in enumerate(panels) for b in panels[i + 1:])
    assert {"train", "validation", "p = 0.5"} <= set(_legend_texts(figure))


def test_axes_go_log_only_where_values_span_decades(drawn):
    plots.scatter_groups(WEIGHTS, "weight", "gap", zero_line=True)  # log_x None: decided from the data
    assert (drawn[-1].axes[0].get_xscale(), drawn[-1].axes[0].get_yscale()) == ("log", "linear")
    plots.scatter_groups({"a": ([1, 2, 3], [0.5, 0.6, 0.7])}, "x", "y")
    assert (drawn[-1].axes[0].get_xscale(), drawn[-1].axes[0].get_yscale()) == ("linear", "linear")
    plots.history([0, 1, 2], [1e-3, 0.5, 2.0], [1e-3] * 3, "val_loss")
    assert drawn[-1].axes[0].get_yscale() == "log"
    plots.learning_curves(epochs(), "t")
    loss, accuracy = drawn[-1].axes
    assert (loss.get_yscale(), accuracy.get_yscale()) == ("log", "linear")
    ticks = [t.get_text() for t in loss.get_yticklabels() + loss.get_yticklabels(minor=True) if t.get_text()]
    assert "0.1" in ticks and not any("$" in t or "e-" in t for t in ticks)  # plain numbers, not 10^-1 or 1e-01


def test_the_learning_rate_gets_its_own_axis_only_when_it_changes(drawn):
    plots.learning_curves(epochs(decay=True), "decayed")
    assert len(drawn[-1].axes) == 3 and "learning rate" in _legend_texts(drawn[-1])
    plots.learning_curves(epochs(), "constant")
    assert len(drawn[-1].axes) == 2


def test_trial_plots_draw_the_curves_with_the_majority_class_and_the_boundary(drawn):
    rows = tuple(EpochRecord(7, i, m) for i, m in enumerate(epochs()))
    record = TrialRecord("s", 7, "COMPLETE", {}, (0.3,), 20, rows, {}, 0, "cpu", 0, 0.0, 1.0,
                         artifacts={"boundary.npz": boundary_npz()}, val_baseline=0.6)
    files = plots.trial_plots(record, overfit_epoch=25)
    assert sorted(files) == ["boundary.png", "learning_curves.png"]
    assert all(png.startswith(b"\x89PNG") for png in files.values())
    assert len(_baseline_lines(drawn[0], 0.6)) == 1 and "majority class" in _legend_texts(drawn[0])
    assert "overfitting from 25" in _legend_texts(drawn[0]) and "best epoch (20)" in _legend_texts(drawn[0])
