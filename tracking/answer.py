"""Tracking side: the answer a study gives to its question — does each regularizer lower the fit gap here, by how
much, at what cost in the objective, on how many trials — in at most five lines, worded by what the statistics show.
Never imports studies, training or TensorFlow.

- `design(frame)`: whether the comparison is **controlled** (every setting but the regularizer and its weight is
  the same in every complete trial) or **observational** (others vary too, so a difference mixes regularization
  with them), and how many seeds each point has.
- `observations(frame)`: one row per training seed — a trial's repeats each count (`repeats_json`), a trial
  without repeats once — with its point (regularizer, weight), objective (`value`) and fit gap (`fit_gap`).
- `compare(a, b)`: the difference of means b - a with its 95 % Welch interval and two-sided p; None below two
  observations a side. A difference is called lower or higher only when its interval excludes 0.
- `path(obs, ctx)`: per regularizer type and weight, against the unregularized point, and the weight that best
  trades the gap against the objective (`best_weights`): among the weights that lower the fit gap (interval below
  0) without a significant cost in the objective, the one with the best mean objective. None helps when no weight
  qualifies; `why_none` says why.
- `answer_lines(frame, ctx)`: the answer, first line the design, then one line per regularizer type.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fitgap.tracking.analysis import Context
from fitgap.tracking.diagnosis import OVERFIT_GAP
from fitgap.tracking.document import num

# The settings a regularization comparison lets vary; every other param must be equal for it to be controlled.
REGULARIZATION = ("regularizer", "regularization_weight", "l1_ratio")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Design:
    controlled: bool
    varying: tuple[str, ...]  # the other settings that vary (observational)
    seeds: int  # the fewest training seeds at one point (1: no seed spread)

    def line(self, study: str) -> str:
        if not self.controlled:
            names = ", ".join(self.varying[:4]) + (" and more" if len(self.varying) > 4 else "")
            verb = "varies" if len(self.varying) == 1 else "vary"
            return (f"**Observational**: {names} {verb} between trials too, so a difference mixes regularization "
                    f"with {'it' if len(self.varying) == 1 else 'them'}. For a controlled answer: "
                    f"`fitgap path {study}`.")
        seeds = f"{self.seeds} seeds per point" if self.seeds > 1 else "one seed per point (no seed spread measured)"
        return f"**Controlled**: only the regularizer and its weight vary; {seeds}."


@dataclass(frozen=True)
class Difference:
    a_mean: float
    b_mean: float
    low: float | None  # the 95 % interval of b - a; None below two observations a side
    high: float | None
    p: float | None
    n_a: int
    n_b: int

    @property
    def delta(self) -> float:
        return self.b_mean - self.a_mean

    @property
    def sign(self) -> int:
        """-1 or +1 when the interval excludes 0, else 0 (no clear difference)."""
        if self.low is None:
            return 0
        return -1 if self.high < 0 else 1 if self.low > 0 else 0

    def interval(self, flip: bool = False) -> str:
        """The 95 % interval and p, of -(b - a) with `flip` (a difference worded as "lower by")."""
        if self.low is None:
            return "no interval: one observation"
        low, high = (-self.high, -self.low) if flip else (self.low, self.high)
        return f"95 % CI {_short(low)} to {_short(high)}, p = {self.p:.2g}"


def compare(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    """b - a (see the module docstring); None when either side has no finite value."""
    a, b = _finite(a), _finite(b)
    if not len(a) or not len(b):
        return None
    if len(a) < 2 or len(b) < 2:
        return Difference(float(a.mean()), float(b.mean()), None, None, None, len(a), len(b))
    from scipy.stats import ttest_ind

    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: the difference is exact
        d = float(b.mean() - a.mean())
        return Difference(float(a.mean()), float(b.mean()), d, d, 0.0 if d else 1.0, len(a), len(b))
    test = ttest_ind(b, a, equal_var=False)
    low, high = test.confidence_interval(CONFIDENCE)
    return Difference(float(a.mean()), float(b.mean()), float(low), float(high), float(test.pvalue), len(a), len(b))


def design(frame: pd.DataFrame) -> Design:
    """The study's design from its complete trials' rows (see the module docstring)."""
    from fitgap.tracking.results import PARAM_COLUMNS

    others = [c for c in PARAM_COLUMNS if c in frame and c not in REGULARIZATION]
    varying = tuple(c for c in others if frame[c].astype(str).nunique(dropna=False) > 1)
    obs = observations(frame)
    seeds = int(obs.groupby(["regularizer", "weight"], dropna=False).size().min()) if len(obs) else 0
    return Design(not varying, varying, seeds)


def observations(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per training seed: regularizer, weight (NaN for none), value, fit_gap, trial number."""
    rows = []
    for _, trial in frame.iterrows():
        kind = trial.get("regularizer") or "none"
        weight = trial.get("regularization_weight") if kind != "none" else math.nan
        repeats = json.loads(trial["repeats_json"]) if isinstance(trial.get("repeats_json"), str) else None
        for seed in repeats or [{"value": trial.get("value"), "fit_gap": trial.get("best_fit_gap")}]:
            rows.append({"regularizer": kind, "weight": _float(weight), "value": _float(seed.get("value")),
                         "fit_gap": _float(seed.get("fit_gap")), "number": int(trial["number"])})
    return pd.DataFrame(rows, columns=["regularizer", "weight", "value", "fit_gap", "number"])


@dataclass(frozen=True)
class PathPoint:
    regularizer: str
    weight: float
    gap: Difference  # against the unregularized point
    objective: Difference
    numbers: tuple[int, ...]  # its trials


def path(obs: pd.DataFrame) -> list[PathPoint]:
    """Every regularized point (type, weight) against the unregularized one, by type then weight."""
    base = obs[obs["regularizer"] == "none"]
    points = []
    for (kind, weight), group in obs[obs["regularizer"] != "none"].groupby(["regularizer", "weight"]):
        gap, objective = compare(base["fit_gap"], group["fit_gap"]), compare(base["value"], group["value"])
        if gap is not None and objective is not None:
            points.append(PathPoint(kind, float(weight), gap, objective, tuple(sorted(set(group["number"])))))
    return points


def worse(objective: Difference, ctx: Context) -> bool:
    """Whether the objective is clearly worse than the baseline's (its interval excludes 0)."""
    return objective.sign == (-1 if ctx.maximize else 1)


def best_weights(points: list[PathPoint], ctx: Context) -> dict[str, PathPoint]:
    """Per type, the weight that best trades the gap against the objective (module docstring); absent: none helps."""
    chosen: dict[str, PathPoint] = {}
    sign = -1.0 if ctx.maximize else 1.0
    for point in points:
        if point.gap.sign < 0 and not worse(point.objective, ctx):
            best = chosen.get(point.regularizer)
            if best is None or sign * point.objective.b_mean < sign * best.objective.b_mean:
                chosen[point.regularizer] = point
    return chosen


def why_none(kind: str, points: list[PathPoint], ctx: Context) -> str:
    """Why no weight of `kind` helps here."""
    mine = [p for p in points if p.regularizer == kind]
    base_gap = mine[0].gap.a_mean if mine else math.nan
    if base_gap <= OVERFIT_GAP:
        return f"the unregularized model hardly overfits here (fit gap {_short(base_gap)}): there is little to fix"
    if all(p.gap.low is None for p in mine):
        return "with one seed per point, no difference is clear"
    if not any(p.gap.sign < 0 for p in mine):
        return "at no weight is the fit gap clearly below the unregularized one, given the seed spread"
    return f"every weight that lowers the fit gap costs {ctx.metric}"


def answer_lines(frame: pd.DataFrame, ctx: Context) -> list[str]:
    """The answer (module docstring): at most five lines, Markdown."""
    if frame.empty:
        return ["No complete trial yet: no answer."]
    study_design = design(frame)
    obs = observations(frame)
    lines = [study_design.line(ctx.study)]
    kinds = [k for k in sorted(obs["regularizer"].unique()) if k != "none"]
    if "none" not in set(obs["regularizer"]) or not kinds:
        have = ", ".join(sorted(obs["regularizer"].unique()))
        lines.append(f"Not measurable: the comparison needs unregularized and regularized trials; this study has "
                     f"only {have}.")
        return lines
    if study_design.controlled:
        points = path(obs)
        chosen = best_weights(points, ctx)
        for kind in kinds[:4]:
            mine = [p for p in points if p.regularizer == kind]
            if not mine:
                lines.append(f"{kind.upper()}: no fit gap or objective measured.")
                continue
            point = chosen.get(kind) or min(mine, key=lambda p: p.gap.b_mean)
            which = f"at weight {num(point.weight)}"
            if len(mine) > 1:
                which += f", the {'best trade' if kind in chosen else 'lowest fit gap'} of {len(mine)} weights"
            seeds = f"{point.gap.n_b} vs {point.gap.n_a} seed{'s' if point.gap.n_a > 1 else ''}"
            verdict = "" if kind in chosen else f" No weight helps here: {why_none(kind, points, ctx)}."
            lines.append(f"{kind.upper()} {which} ({seeds}): {gap_words(point.gap)}; "
                         f"{objective_words(point.objective, ctx)}.{verdict}")
        return lines
    base = obs[obs["regularizer"] == "none"]
    for kind in kinds[:4]:
        arm = obs[obs["regularizer"] == kind]
        gap, objective = compare(base["fit_gap"], arm["fit_gap"]), compare(base["value"], arm["value"])
        if gap is None or objective is None:
            lines.append(f"{kind.upper()}: no fit gap or objective measured in one of the arms.")
            continue
        weights = arm["weight"].dropna()
        span = f", weights {num(weights.min())} to {num(weights.max())}" if weights.nunique() > 1 else ""
        lines.append(f"{kind.upper()} ({len(arm)} trials{span}) vs none ({len(base)}): {gap_words(gap)}; "
                     f"{objective_words(objective, ctx)}.")
    return lines


def gap_words(gap: Difference) -> str:
    if gap.sign:
        change = f"{'lower' if gap.sign < 0 else 'higher'} by {_short(abs(gap.delta))} ({gap.interval(gap.sign < 0)})"
    else:
        change = f"no clear difference ({_short(gap.delta)}, {gap.interval()})"
    return f"fit gap {_short(gap.a_mean)} → {_short(gap.b_mean)}, {change}"


def objective_words(objective: Difference, ctx: Context) -> str:
    """The objective's change, worded by its direction: better, a cost, or no clear change."""
    gain = 1 if ctx.maximize else -1  # the sign of an improvement
    if objective.sign:
        better = objective.sign == gain
        change = (f"{'better' if better else 'costs'} {'by ' if better else ''}{_short(abs(objective.delta))} "
                  f"({objective.interval(objective.sign < 0)})")
    else:
        change = f"no clear change ({_short(objective.delta)}, {objective.interval()})"
    return f"{ctx.metric} {_short(objective.a_mean)} → {_short(objective.b_mean)}, {change}"


def _short(value: float) -> str:
    """Three significant digits: what an answer line needs."""
    return f"{value:.3g}" if math.isfinite(value) else "—"


def _finite(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce"), dtype=float)
    return values[np.isfinite(values)]


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
