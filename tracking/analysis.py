"""Tracking side: the statistics a report states about a study's trials, over a pandas frame of their results rows.
Never imports studies, training or TensorFlow.

Gaps are compared at each trial's best epoch (:func:`prepare` puts the compared one in column :data:`GAP`). When
every trial has the same loss, the gap is its own ``val_loss - loss``; when the loss varies, a loss-independent one
— ``val_bce - bce`` (binary), ``val_ce - ce`` (multiclass) or ``val_mse - mse`` (regression), the task's own metric
in `sweeps.vocabulary.TASK_METRICS` — never each trial's own loss. Trends are Spearman rank correlations (robust to
the log scale and to outliers); two arms are compared by median and interquartile range (IQR), with a two-sided
Mann-Whitney U test. Trials without a value (NaN, None) are left out of every statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fitgap.sweeps.vocabulary import TASK_METRICS, TASKS
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
        return complete, "gap at the best epoch", None
    complete["regularizer"] = complete["regularizer"].fillna("none")
    complete["weight"] = complete["regularization_weight"].where(complete["regularizer"] != "none")
    task = next((t for t in TASKS if complete[f"best_{own_metric(t)}"].notna().any()), None)
    losses = complete["loss"].dropna().unique()
    if len(losses) <= 1:
        complete[GAP] = complete["best_gap"]
        label = f"gap at the best epoch (val_loss − loss, {losses[0] if len(losses) else 'the loss'})"
    else:
        own = own_metric(task)
        complete[GAP] = complete[f"best_val_{own}"] - complete[f"best_{own}"] if own else np.nan
        label = (f"{own} gap at the best epoch (val_{own} − {own}: the loss varies, so gaps are compared on a "
                 "loss-independent measure)")
    return complete, label, task


def own_metric(task: str | None) -> str | None:
    """The task's loss-independent metric (bce, ce or mse), whatever each trial's loss; None for no task."""
    return TASK_METRICS[task][0] if task else None


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


def arm_sentence(kind: str, base: pd.Series, other: pd.Series) -> str:
    """How the `kind` arm's gaps (`other`) compare with the unregularized ones (`base`), in sentences."""
    base, other = base.dropna(), other.dropna()
    if len(base) == 0 or len(other) == 0:
        return f"{kind.upper()}: no gap measured in one of the arms"
    m0, m1 = float(base.median()), float(other.median())
    change = m1 - m0
    verb = "lowers" if change < 0 else "raises" if change > 0 else "leaves unchanged"
    relative = f" ({abs(change) / abs(m0):.0%})" if m0 else ""
    text = (f"{kind.upper()} {verb} the median gap, from {num(m0)} (IQR {iqr_text(base)}, n = {len(base)}) without "
            f"regularization to {num(m1)} (IQR {iqr_text(other)}, n = {len(other)}) with it")
    text += f": by {num(abs(change))}{relative}." if change else "."
    (q1a, q3a), (q1b, q3b) = iqr_of(base), iqr_of(other)
    text += (" The interquartile ranges do not overlap." if q3b < q1a or q3a < q1b else
             " The interquartile ranges overlap: part of the difference is within seed-to-seed spread.")
    if len(base) >= 2 and len(other) >= 2:
        from scipy.stats import mannwhitneyu

        p = mannwhitneyu(base, other, alternative="two-sided").pvalue
        text += f" Mann-Whitney U two-sided p = {p:.2g}."
    if m0 < 0 and m1 < 0:
        text += (f" Both medians are negative — the validation points are fit better than the training points, so "
                 f"neither arm overfits here; {kind.upper()} moves the gap "
                 f"{'toward' if abs(m1) < abs(m0) else 'away from'} zero (|gap| {num(abs(m0))} → {num(abs(m1))}).")
    return text


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
    strength = "weak" if abs(rho) < 0.3 else "moderate" if abs(rho) < 0.6 else "strong"
    direction = "falls" if rho < 0 else "rises" if rho > 0 else "does not change"
    sign = "negative" if rho < 0 else "positive" if rho > 0 else "zero"
    caveat = "" if p < 0.05 else " — not significant at 5 %, could be noise"
    return (f"{what_y} {direction} as {what_x} grows: Spearman ρ = {rho:+.2f} ({strength}, {sign}), n = {len(x)}, "
            f"p = {p:.2g}{caveat}")


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
