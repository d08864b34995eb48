"""Tracking side: the statistics a report states about a study's trials, over a pandas frame of their results rows.
Never imports studies, training or TensorFlow.

Gaps are the one fit gap (`sweeps.vocabulary.fit_gap`) at each trial's best epoch: :func:`prepare` puts it in column
:data:`GAP`. Trends are Spearman rank correlations (robust to the log scale and to outliers), worded by what they
show: no direction for a negligible or non-significant one. A validation accuracy carries its binomial (Wilson)
interval (`wilson`), and `score_notes` says when the best score is not told apart from others or rests on a small
validation set. Trials without a value (NaN, None) are left out of every statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fitgap.sweeps.vocabulary import FIT_GAP_MEASURES, TASK_METRICS, TASKS
from fitgap.tracking.document import num

GAP = "_gap"  # the frame column holding the compared gap


@dataclass(frozen=True)
class Context:
    """What every section needs to know about the study."""

    study: str
    metrics: list[str]  # the objectives, first one first
    directions: list[str]
    gap_label: str
    task: str | None  # binary, multiclass, regression; None without epochs

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def maximize(self) -> bool:
        return self.directions[0] == "maximize"

    @property
    def has_accuracy(self) -> bool:
        return self.task is not None and "accuracy" in TASK_METRICS[self.task]


def prepare(complete: pd.DataFrame) -> tuple[pd.DataFrame, str, str | None]:
    """Adds the compared gap (GAP), the regularizer type and its weight; returns the gap's description and the task."""
    if complete.empty:
        return complete, "fit gap at the best epoch", None
    complete["regularizer"] = complete["regularizer"].fillna("none")
    complete["weight"] = complete["regularization_weight"].where(complete["regularizer"] != "none")
    task = next((t for t in TASKS if complete[f"best_{own_metric(t)}"].notna().any()), None)
    complete[GAP] = complete["best_fit_gap"]
    label = f"fit gap at the best epoch ({FIT_GAP_MEASURES[task]})" if task else "fit gap at the best epoch"
    return complete, label, task


def own_metric(task: str | None) -> str | None:
    """The task's loss-independent metric (bce, ce or mse), whatever each trial's loss; None for no task."""
    return TASK_METRICS[task][0] if task else None


# ---------------------------------------------------------------- how sure a score is

SMALL_VALIDATION = 100  # validation rows below which a best score is flagged as resting on few points


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion `p` measured on `n` rows."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def score_notes(metric: str, best: float, others: Sequence[float], val_size: int | None,
                test: float | None = None, test_name: str | None = None) -> list[str]:
    """What a reader of the best score should know: its binomial interval (an accuracy), how many other trials it
    does not tell apart from, a small validation set, and the test set's score, the honest number."""
    notes = []
    accuracy = "accuracy" in metric and val_size
    if accuracy:
        low, high = wilson(best, val_size)
        within = sum(1 for v in others if v is not None and np.isfinite(v) and low <= v <= high)
        notes.append(f"{metric} {num(best)}, 95 % interval {num(low)} to {num(high)} on {val_size} validation rows"
                     + (f": {within} other trial{'s' if within != 1 else ''} within it, not told apart" if within
                        else ""))
    if val_size and val_size < SMALL_VALIDATION:
        notes.append(f"a small validation set ({val_size} rows): the best of many trials is an optimistic score")
    if test is not None and np.isfinite(test):
        notes.append(f"on the test set, never used to choose: {test_name} {num(test)}")
    return notes


# ---------------------------------------------------------------- groups of trials


def groups_by(frame: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """(value, rows) per value of `column`, `none` first, then by name."""
    if column not in frame or frame.empty:
        return []
    values = sorted(frame[column].dropna().astype(str).unique(), key=lambda v: (v != "none", v))
    return [(v, frame[frame[column].astype(str) == v]) for v in values]


def summary_row(members: pd.DataFrame) -> list:
    """trials, median gap, gap IQR, median objective, overfit share: a table row of a group of trials."""
    return [len(members), median_of(members[GAP]), iqr_text(members[GAP]), median_of(members["value"]),
            overfit_share(members)]


def weight_bins(group: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The type's trials by decade of weight: [1e-4, 1e-3), ... (a zero weight is its own bin)."""
    decade = np.floor(np.log10(group["weight"].where(group["weight"] > 0)))
    bins = []
    if (group["weight"] <= 0).any():
        bins.append(("0", group[group["weight"] <= 0]))
    for d in sorted(decade.dropna().unique()):
        bins.append((f"[1e{int(d)}, 1e{int(d) + 1})", group[decade == d]))
    if group["weight"].isna().any():
        bins.append(("unknown", group[group["weight"].isna()]))
    return bins


def median_of(values: pd.Series) -> float | None:
    """The median of the numeric values, None when there are none."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def iqr_of(values: pd.Series) -> tuple[float, float]:
    """The first and third quartiles of the numeric values."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.quantile(0.25)), float(values.quantile(0.75))


def iqr_text(values: pd.Series) -> str:
    if pd.to_numeric(values, errors="coerce").dropna().empty:
        return "—"
    low, high = iqr_of(values)
    return f"[{num(low)}, {num(high)}]"


def overfit_share(group: pd.DataFrame) -> str:
    """How many of the group's judged trials the diagnosis calls overfit, as "n/judged (share)"."""
    judged = group["verdict"].notna().sum() if "verdict" in group else 0
    if not judged:
        return "—"
    overfit = int((group["verdict"] == "overfit").sum())
    return f"{overfit}/{judged} ({overfit / judged:.0%})"


# ---------------------------------------------------------------- comparisons and trends


def trend_text(x: pd.Series, y: pd.Series, what_x: str, what_y: str) -> str:
    """A Spearman rank correlation and its sign in words."""
    ok = np.isfinite(np.asarray(x, dtype=float)) & np.isfinite(np.asarray(y, dtype=float))
    x, y = np.asarray(x, dtype=float)[ok], np.asarray(y, dtype=float)[ok]
    distinct = len(np.unique(x))
    if len(x) < 3 or distinct < 2:
        return (f"{what_x} does not vary enough to measure a trend ({len(x)} trials, {distinct} distinct "
                f"value{'s' if distinct != 1 else ''}; needs 3 trials and 2 values)")
    if len(np.unique(y)) < 2:
        return f"{what_y} does not vary: no trend"
    from scipy.stats import spearmanr

    rho, p = spearmanr(x, y)
    stats = f"Spearman ρ = {rho:+.2f}, n = {len(x)}, p = {p:.2g}"
    if p >= 0.05 or abs(rho) < 0.1:
        return f"no clear trend of {what_y} with {what_x} ({stats})"
    strength = "weakly" if abs(rho) < 0.3 else "moderately" if abs(rho) < 0.6 else "strongly"
    return f"{what_y} {'falls' if rho < 0 else 'rises'} {strength} as {what_x} grows ({stats})"


# ---------------------------------------------------------------- best trials


def best_trial(group: pd.DataFrame, ctx: Context) -> pd.Series:
    """The group's trial with the best first objective (the lowest number among ties)."""
    ranked = group.dropna(subset=["value"]).sort_values(["value", "number"], ascending=[not ctx.maximize, True])
    return ranked.iloc[0] if len(ranked) else group.iloc[0]


def test_column(complete: pd.DataFrame, ctx: Context) -> str | None:
    """The test-set score to show: test_accuracy (classification) or test_mse (regression), else test_loss."""
    for column in (("test_mse",) if ctx.task == "regression" else ("test_accuracy",)) + ("test_loss",):
        if column in complete and complete[column].notna().any():
            return column
    return None


def non_dominated(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows of `points` (one column per objective) no other row beats on every objective."""
    signed = points * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    ok = np.isfinite(signed).all(axis=1)
    front = np.zeros(len(points), dtype=bool)
    for i in np.flatnonzero(ok):
        others = signed[ok]
        dominated = ((others <= signed[i]).all(axis=1) & (others < signed[i]).any(axis=1)).any()
        front[i] = not dominated
    return front
