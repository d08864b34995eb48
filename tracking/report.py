"""The answer a study gives: how regularization (type and weight), activation, loss and the rest trade overfitting
against accuracy, in tables, plain sentences and plots — a Markdown or an HTML document (images embedded).

`build_report` reads only what it is given: the study's rows of the results database (`ResultsDB.trials`), a way
to read a trial's epochs, and optionally the spec, the Optuna study (importances, Pareto front, history) and a way to
fetch a trial's MLflow artifact (decision boundaries). It never imports `studies` or TensorFlow. A section that lacks
its data says what is missing instead of failing.

Gaps are compared at each trial's best epoch. When every trial has the same loss, the gap is its own
``val_loss - loss``; when the loss varies, a loss-independent one — ``val_bce - bce`` (binary), ``val_ce - ce``
(multiclass) or ``val_mse - mse`` (regression) — never each trial's own loss. Trends are Spearman rank correlations
(robust to the log scale and to outliers); two arms are compared by median and interquartile range (IQR), with a
two-sided Mann-Whitney U test.
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tracking import plots

FORMATS = ("md", "html")
CATEGORIES = ("activation", "loss", "optimizer")  # compared like the regularizer types, when they vary
NUMERIC = ("learning_rate", "decay_rate", "dropout", "momentum", "batch_size", "depth", "width")
LOG_SCALE = ("learning_rate", "regularization_weight", "width", "batch_size")
GAP = "_gap"  # the frame column holding the compared gap


@dataclass
class Document:
    """A report as blocks: ("h2", text), ("p", text), ("list", items), ("table", headers, rows), ("img", name, alt)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("list", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(headers), [[_cell(v) for v in row] for row in rows]))

    def image(self, name: str, png: bytes, alt: str) -> None:
        self.images[name] = png
        self.blocks.append(("img", name, alt))

    def lacks(self, what: str) -> None:
        self.missing.append(what)


@dataclass(frozen=True)
class _Context:
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


# ---------------------------------------------------------------- building


def build_report(study: str, trials: Sequence[Mapping[str, Any]], epochs: Callable[[int], list[dict]],
                 spec: Mapping[str, Any] | None = None, optuna_study: Any = None,
                 artifact: Callable[[str, str], bytes | None] | None = None) -> Document:
    """The report of `study` from its results rows. epochs(number) -> that trial's epoch rows; artifact(run_id,
    name) -> bytes or None; optuna_study: an `optuna.Study` (importances and history need it)."""
    spec = spec or {}
    doc = Document(f"fitgap report: {study}")
    frame = pd.DataFrame(list(trials))
    complete = frame[frame["state"] == "COMPLETE"].copy() if len(frame) else frame
    objectives = spec.get("objective") or [{"metric": "objective", "direction": "minimize"}]
    metrics = [o["metric"] for o in objectives]
    directions = [o.get("direction") or ("maximize" if "accuracy" in o["metric"] and o["metric"] != "accuracy_gap"
                                          else "minimize") for o in objectives]
    complete, gap_label, task = _prepare(complete)
    ctx = _Context(study, metrics, directions, gap_label, task)
    _overview(doc, frame, complete, ctx, spec)
    if complete.empty:
        doc.lacks("no COMPLETE trial yet: every table and plot needs at least one (launch the study, or wait for it)")
    else:
        _regularization(doc, complete, ctx)
        doc.h2("Activation, loss and optimizer")
        for column in CATEGORIES:
            _category(doc, complete, ctx, column)
        _numeric_trends(doc, complete, ctx)
        if len(metrics) > 1:
            _pareto(doc, complete, ctx, optuna_study)
        else:
            _best_per_regularizer(doc, complete, ctx)
        _curves_and_boundaries(doc, complete, ctx, epochs, artifact)
        _complexity_frontier(doc, complete, ctx)
    _importances(doc, ctx, optuna_study, spec)
    _history(doc, complete, ctx)
    return doc


def _prepare(complete: pd.DataFrame) -> tuple[pd.DataFrame, str, str | None]:
    """Adds the compared gap (GAP), the regularizer type and its weight; returns the gap's description and the task."""
    if complete.empty:
        return complete, "gap at the best epoch", None
    complete["regularizer"] = complete["regularizer"].fillna("none")
    complete["weight"] = complete["regularization_weight"].where(complete["regularizer"] != "none")
    task = ("binary" if complete["best_bce"].notna().any() else "multiclass" if complete["best_ce"].notna().any()
            else "regression" if complete["best_mse"].notna().any() else None)
    losses = complete["loss"].dropna().unique()
    if len(losses) <= 1:
        complete[GAP] = complete["best_gap"]
        label = f"gap at the best epoch (val_loss − loss, {losses[0] if len(losses) else 'the loss'})"
    else:
        own = {"binary": "bce", "multiclass": "ce", "regression": "mse"}.get(task)
        complete[GAP] = complete[f"best_val_{own}"] - complete[f"best_{own}"] if own else np.nan
        label = (f"{own} gap at the best epoch (val_{own} − {own}: the loss varies, so gaps are compared on a "
                 "loss-independent measure)")
    return complete, label, task


def _overview(doc: Document, frame: pd.DataFrame, complete: pd.DataFrame, ctx: _Context, spec: Mapping) -> None:
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"
    objective = ", ".join(f"{m} ({d})" for m, d in zip(ctx.metrics, ctx.directions))
    dataset = spec.get("dataset", {}).get("name", "?") if spec else "?"
    doc.p(f"Study **{ctx.study}**: {states}. Objective: {objective}. Dataset: {dataset}.")
    doc.p(f"Gap compared: {ctx.gap_label}. Positive = validation worse than training. Verdicts (underfit, good_fit, "
          "overfit) and overfitting onsets are each trial's diagnosis (tracking/diagnosis.py).")
    if len(complete) and complete["verdict"].isna().any():
        doc.lacks(f"{int(complete['verdict'].isna().sum())} trials have no verdict (written before the diagnosis "
                  "existed, or without accuracy/mse): they count as not overfit")


# ---------------------------------------------------------------- regularization


def _regularization(doc: Document, complete: pd.DataFrame, ctx: _Context) -> None:
    doc.h2("Regularization: gap and objective by type and weight")
    rows = []
    for kind, group in _groups(complete, "regularizer"):
        bins = [("—", group)] if kind == "none" else _weight_bins(group)
        for label, members in bins:
            rows.append([kind, label, *_summary(members, ctx)])
    doc.table(["regularizer", "weight bin (log)", "trials", "median gap", "gap IQR", f"median {ctx.metric}",
               "overfit"], rows)
    doc.p("Trend of the gap against log10(weight), per type:")
    trends = [f"{kind}: " + _trend(np.log10(group["weight"].where(group["weight"] > 0)), group[GAP],
                                   "log weight", "the gap")
              for kind, group in _groups(complete, "regularizer") if kind != "none"]
    doc.items(trends or ["no regularized trial: no trend to measure"])
    _arms(doc, complete, ctx)
    regularized = complete[complete["weight"] > 0]
    if regularized.empty:
        doc.lacks("no regularized trial with a positive weight: no gap-vs-weight plot")
        return
    groups = {kind: (g["weight"], g[GAP]) for kind, g in _groups(regularized, "regularizer")}
    png = plots.scatter_groups(groups, "regularization weight", "gap", log_x=True, title=ctx.gap_label, zero_line=True)
    doc.image("gap_vs_weight.png", png, "gap against regularization weight")
    values = {kind: (g["weight"], g["value"]) for kind, g in _groups(regularized, "regularizer")}
    png = plots.scatter_groups(values, "regularization weight", ctx.metric, log_x=True)
    doc.image("objective_vs_weight.png", png, f"{ctx.metric} against regularization weight")


def _arms(doc: Document, complete: pd.DataFrame, ctx: _Context) -> None:
    """Does regularization lower the gap? Each type against `none`: medians, IQRs, Mann-Whitney U."""
    doc.h2("Does regularization lower the gap?")
    arms = dict(_groups(complete, "regularizer"))
    if "none" not in arms or len(arms) < 2:
        doc.lacks("the regularized-vs-unregularized comparison needs trials with `regularizer: none` and with a "
                  f"regularizer; this study has {', '.join(arms) or 'neither'}")
        doc.p("Not measurable here (see What is missing).")
        return
    accuracy = ctx.task in ("binary", "multiclass")
    rows = [[kind, len(g), _median(g[GAP]), _iqr_text(g[GAP]), *([_median(g["best_accuracy_gap"])] if accuracy else []),
             _median(g["value"]), _iqr_text(g["value"]), _overfit_share(g)] for kind, g in arms.items()]
    doc.table(["regularizer", "trials", "median gap", "gap IQR", *(["median accuracy gap"] if accuracy else []),
               f"median {ctx.metric}", f"{ctx.metric} IQR", "overfit"], rows)
    doc.items([_arm_sentence(kind, arms["none"][GAP], group[GAP], ctx) for kind, group in arms.items()
               if kind != "none"])
    objective = {kind: _median(g["value"]) for kind, g in arms.items()}
    doc.p(f"Median {ctx.metric} ({'higher' if ctx.maximize else 'lower'} is better): "
          + ", ".join(f"{kind} {_num(v)}" for kind, v in objective.items()) + ".")
    doc.image("gap_by_regularizer.png", plots.strip_plot({k: g[GAP].dropna() for k, g in arms.items()}, "gap",
                                                         title=ctx.gap_label), "gap per trial, by regularizer")


def _arm_sentence(kind: str, base: pd.Series, other: pd.Series, ctx: _Context) -> str:
    base, other = base.dropna(), other.dropna()
    if len(base) == 0 or len(other) == 0:
        return f"{kind.upper()}: no gap measured in one of the arms"
    m0, m1 = float(base.median()), float(other.median())
    change = m1 - m0
    verb = "lowers" if change < 0 else "raises" if change > 0 else "leaves unchanged"
    relative = f" ({abs(change) / abs(m0):.0%})" if m0 else ""
    text = (f"{kind.upper()} {verb} the median gap, from {_num(m0)} (IQR {_iqr_text(base)}, n = {len(base)}) without "
            f"regularization to {_num(m1)} (IQR {_iqr_text(other)}, n = {len(other)}) with it")
    text += f": by {_num(abs(change))}{relative}." if change else "."
    (q1a, q3a), (q1b, q3b) = _iqr(base), _iqr(other)
    text += (" The interquartile ranges do not overlap." if q3b < q1a or q3a < q1b else
             " The interquartile ranges overlap: part of the difference is within seed-to-seed spread.")
    if len(base) >= 2 and len(other) >= 2:
        from scipy.stats import mannwhitneyu

        p = mannwhitneyu(base, other, alternative="two-sided").pvalue
        text += f" Mann-Whitney U two-sided p = {p:.2g}."
    if m0 < 0 and m1 < 0:
        text += (f" Both medians are negative — the validation points are fit better than the training points, so "
                 f"neither arm overfits here; {kind.upper()} moves the gap "
                 f"{'toward' if abs(m1) < abs(m0) else 'away from'} zero (|gap| {_num(abs(m0))} → {_num(abs(m1))}).")
    return text


def _weight_bins(group: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
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


def _summary(members: pd.DataFrame, ctx: _Context) -> list:
    return [len(members), _median(members[GAP]), _iqr_text(members[GAP]), _median(members["value"]),
            _overfit_share(members)]


# ---------------------------------------------------------------- other parameters


def _category(doc: Document, complete: pd.DataFrame, ctx: _Context, column: str) -> None:
    groups = _groups(complete, column)
    if len(groups) < 2:
        fixed = f"`{groups[0][0]}` in every complete trial" if groups else "not recorded"
        doc.p(f"{column.capitalize()}: {fixed} — nothing to compare.")
        return
    doc.p(f"By {column}:")
    doc.table([column, "trials", "median gap", "gap IQR", f"median {ctx.metric}", "overfit"],
              [[name, *_summary(g, ctx)] for name, g in groups])
    lowest = min(((name, g[GAP].median()) for name, g in groups if g[GAP].notna().any()), key=lambda x: x[1],
                 default=None)
    if lowest:
        doc.p(f"Smallest median gap: {column} = {lowest[0]} ({_num(lowest[1])}).")


def _numeric_trends(doc: Document, complete: pd.DataFrame, ctx: _Context) -> None:
    lines = []
    for name in NUMERIC:
        if name not in complete or complete[name].nunique() < 2:
            continue
        x = complete[name].astype(float)
        if name in LOG_SCALE:
            x = np.log10(x.where(x > 0))
        lines.append(f"{name}: " + _trend(x, complete[GAP], f"{'log ' if name in LOG_SCALE else ''}{name}",
                                          "the gap"))
    if lines:
        doc.h2("Gap against the other searched numbers")
        doc.items(lines)


def _trend(x: pd.Series, y: pd.Series, what_x: str, what_y: str) -> str:
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


def _test_column(complete: pd.DataFrame, ctx: _Context) -> str | None:
    for column in (("test_mse",) if ctx.task == "regression" else ("test_accuracy",)) + ("test_loss",):
        if column in complete and complete[column].notna().any():
            return column
    return None


def _best_per_regularizer(doc: Document, complete: pd.DataFrame, ctx: _Context) -> None:
    doc.h2("Best trial per regularizer type")
    test = _test_column(complete, ctx)
    rows = []
    for kind, group in _groups(complete, "regularizer"):
        best = _best(group, ctx)
        rows.append([kind, int(best["number"]), best["weight"], best["value"], best[GAP], best.get("verdict"),
                     best.get("overfit_epoch"), best[test] if test else None])
    doc.table(["regularizer", "trial", "weight", ctx.metric, "gap", "verdict", "overfit from epoch",
               test or "test score"], rows)
    if test is None:
        doc.p("The data has no test set (`test_*` columns are empty): no test score.")


def _best(group: pd.DataFrame, ctx: _Context) -> pd.Series:
    ranked = group.dropna(subset=["value"]).sort_values(["value", "number"], ascending=[not ctx.maximize, True])
    return ranked.iloc[0] if len(ranked) else group.iloc[0]


def _pareto(doc: Document, complete: pd.DataFrame, ctx: _Context, optuna_study: Any) -> None:
    doc.h2("Pareto front")
    values = complete["values_json"].map(lambda v: _json_list(v)).tolist()
    points = np.array([v if v and len(v) == len(ctx.metrics) else [np.nan] * len(ctx.metrics) for v in values],
                      dtype=float)
    if optuna_study is not None:
        on_front = {t.number for t in optuna_study.best_trials}
        front = np.array([n in on_front for n in complete["number"]])
    else:
        front = _non_dominated(points, ctx.directions)
    members = complete[front]
    rows = [[int(r["number"]), *points[i], r["regularizer"], r["weight"], r[GAP], r.get("verdict")]
            for i, (_, r) in zip(np.flatnonzero(front), members.iterrows())]
    rows.sort(key=lambda row: row[1])
    doc.p(f"{len(rows)} of {len(complete)} complete trials are on the front: none is beaten on every objective "
          f"({', '.join(f'{m} {d}' for m, d in zip(ctx.metrics, ctx.directions))}). There is no single best trial.")
    doc.table(["trial", *ctx.metrics, "regularizer", "weight", "gap", "verdict"], rows)
    order = np.argsort(points[front, 1])
    log_x = ctx.metrics[1] in ("params_total", "params_trainable", "macs")
    doc.image("pareto_front.png", plots.frontier({"trials": (points[:, 1], points[:, 0])}, ctx.metrics[1],
                                                 ctx.metrics[0], (points[front, 1][order], points[front, 0][order]),
                                                 log_x=log_x), "Pareto front")


def _non_dominated(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    signed = points * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    ok = np.isfinite(signed).all(axis=1)
    front = np.zeros(len(points), dtype=bool)
    for i in np.flatnonzero(ok):
        others = signed[ok]
        dominated = ((others <= signed[i]).all(axis=1) & (others < signed[i]).any(axis=1)).any()
        front[i] = not dominated
    return front


# ---------------------------------------------------------------- plots of trials


def _curves_and_boundaries(doc: Document, complete: pd.DataFrame, ctx: _Context,
                           epochs: Callable[[int], list[dict]],
                           artifact: Callable[[str, str], bytes | None] | None) -> None:
    doc.h2("Best regularized vs best unregularized trial")
    regularized, plain = complete[complete["regularizer"] != "none"], complete[complete["regularizer"] == "none"]
    if regularized.empty or plain.empty:
        doc.lacks("learning curves and decision boundaries of the best regularized vs the best unregularized trial "
                  "need both kinds of trial")
        doc.p("Not available (see What is missing).")
        return
    best_regularized = _best(regularized, ctx)
    pair = [("unregularized", _best(plain, ctx)), (str(best_regularized["regularizer"]), best_regularized)]
    names = [f"{label} (trial {int(best['number'])})" for label, best in pair]
    losses = complete["loss"].dropna().unique()
    own = {"binary": "bce", "multiclass": "ce", "regression": "mse"}.get(ctx.task, "loss")
    metrics = ["loss" if len(losses) <= 1 else own]
    if ctx.task in ("binary", "multiclass"):
        metrics.append("accuracy")
    curves = [(name, epochs(int(best["number"]))) for name, (_, best) in zip(names, pair)]
    doc.image("curves_best.png", plots.curves_side_by_side(curves, metrics),
              "learning curves: best unregularized vs best regularized")
    if ctx.task != "binary":
        return
    grids = [artifact(best["mlflow_run_id"], "boundary.npz") if artifact and best.get("mlflow_run_id") else None
             for _, best in pair]
    if all(grids):
        doc.image("boundaries_best.png", plots.boundaries([(f"{n}: p = 0.5", g) for n, g in zip(names, grids)]),
                  "decision boundaries at p = 0.5")
    else:
        doc.lacks("decision boundaries: no `boundary.npz` artifact in the two trials' MLflow runs (only 2-D binary "
                  "data has one)")


def _complexity_frontier(doc: Document, complete: pd.DataFrame, ctx: _Context) -> None:
    score = "best_val_accuracy" if ctx.task in ("binary", "multiclass") else "best_val_mse"
    usable = complete.dropna(subset=["params_total", score]) if score in complete else complete.iloc[0:0]
    if usable.empty:
        doc.lacks("complexity/accuracy frontier: no trial with both params_total and a validation score")
        return

    higher_better = score == "best_val_accuracy"
    doc.h2("Complexity against accuracy" if higher_better else "Complexity against validation error")
    ordered = usable.sort_values(["params_total", score], ascending=[True, not higher_better])
    front_x, front_y, best = [], [], None
    for _, row in ordered.iterrows():
        if best is None or (row[score] > best if higher_better else row[score] < best):
            best = row[score]
            front_x.append(row["params_total"])
            front_y.append(best)
    groups = {kind: (g["params_total"], g[score]) for kind, g in _groups(usable, "regularizer")}
    doc.image("complexity_frontier.png", plots.frontier(groups, "parameters (space complexity)",
                                                        score.removeprefix("best_"), (front_x, front_y)),
              "validation score against parameter count")
    doc.p(f"The front: the best {score.removeprefix('best_')} reached with at most that many parameters "
          f"({len(front_x)} step{'s' if len(front_x) != 1 else ''}; {int(usable['params_total'].nunique())} distinct "
          f"model size{'s' if usable['params_total'].nunique() != 1 else ''}).")


# ---------------------------------------------------------------- Optuna: importances and history


def _importances(doc: Document, ctx: _Context, optuna_study: Any, spec: Mapping) -> None:
    doc.h2("Parameter importances")
    if optuna_study is None:
        doc.lacks("parameter importances: no Optuna study was given")
        doc.p("Not available (see What is missing).")
        return
    import optuna

    complete = optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    searched = list((spec.get("search") or {}).keys())
    if len(complete) < 2:
        doc.lacks(f"parameter importances need at least 2 complete trials, the study has {len(complete)}")
        doc.p("Not available (see What is missing).")
        return
    quantile = min(0.5, max(0.1, 5 / len(complete)))  # PED-ANOVA wants ~5 trials in the top quantile
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    sign = -1.0 if ctx.maximize else 1.0
    target = (lambda t: sign * t.values[0]) if len(ctx.metrics) > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = evaluator.evaluate(optuna_study, target=target)
    total = sum(raw.values())
    seen = {name: sum(name in t.params for t in complete) for name in raw}
    rows = [[name, value / total if total else 0.0, f"{seen[name]} of {len(complete)}"
             + (" (conditional)" if seen[name] < len(complete) else "")] for name, value in raw.items()]
    doc.p(f"PED-ANOVA (Optuna's `PedAnovaImportanceEvaluator`, top {quantile:.0%} of {len(complete)} complete "
          f"trials by {ctx.metric}): it keeps conditional parameters, which fANOVA silently drops.")
    doc.table(["parameter", "importance", "in complete trials"], rows)
    left_out = [name for name in searched if name not in raw]
    if left_out:
        doc.p("Left out: " + ", ".join(f"`{n}` (never sampled in a complete trial)" for n in left_out) + ".")
    else:
        doc.p("Left out: none — every searched parameter is evaluated.")
    if total == 0:
        doc.p("Every importance is 0: no parameter separates the best trials from the rest (too few trials?).")
    elif raw:
        doc.image("importances.png", plots.bars({n: v / total for n, v in raw.items()}, "importance"),
                  "parameter importances")


def _history(doc: Document, complete: pd.DataFrame, ctx: _Context) -> None:
    doc.h2("Optimization history")
    done = complete.dropna(subset=["value"]).sort_values("number") if len(complete) else complete
    if len(done) < 2:
        doc.lacks(f"optimization history needs at least 2 complete trials, the study has {len(done)}")
        doc.p("Not available (see What is missing).")
        return
    best = done["value"].cummax() if ctx.maximize else done["value"].cummin()
    doc.image("history.png", plots.history(done["number"], done["value"], best, ctx.metric), "optimization history")
    first = int(done.loc[done["value"] == best.iloc[-1], "number"].iloc[0])
    doc.p(f"Best {ctx.metric} {_num(best.iloc[-1])}, first reached at trial {first} (complete trials "
          f"{int(done['number'].min())}–{int(done['number'].max())}).")


# ---------------------------------------------------------------- writing


def write_report(doc: Document, out: Path, format: str = "md") -> Path:
    """Write the report (and, for md, its PNGs) into `out`; return the report file."""
    if format not in FORMATS:
        raise ValueError(f"unknown report format {format!r}: use one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    for name, png in doc.images.items():
        (out / name).write_bytes(png)  # html embeds them too; the files are what MLflow shows as artifacts
    path = out / f"report.{format}"
    path.write_text(to_markdown(doc) if format == "md" else to_html(doc), encoding="utf-8")
    return path


def _with_missing(doc: Document) -> list[tuple]:
    """The blocks, with a "What is missing" section after the overview."""
    missing = [("h2", "What is missing"), ("list", doc.missing)] if doc.missing else []
    overview = next((i for i, b in enumerate(doc.blocks) if b[0] == "h2"), len(doc.blocks))
    return doc.blocks[:overview] + missing + doc.blocks[overview:]


def to_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for block in _with_missing(doc):
        kind = block[0]
        if kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines)


def to_html(doc: Document) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(doc.title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{e(doc.title)}</h1>"]
    for block in _with_missing(doc):
        kind = block[0]
        if kind == "h2":
            parts.append(f"<h2 id='{_anchor(block[1])}'>{e(block[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(doc.images[block[1]]).decode()
            parts.append(f"<figure><img alt='{e(block[2])}' data-name='{e(block[1])}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{e(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


_CSS = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}")


def _inline(text: str) -> str:
    """Escaped text with **bold** and `code` from the Markdown source."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


# ---------------------------------------------------------------- small helpers


def _groups(frame: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """(value, rows) per value of `column`, `none` first, then by name."""
    if column not in frame or frame.empty:
        return []
    values = sorted(frame[column].dropna().astype(str).unique(), key=lambda v: (v != "none", v))
    return [(v, frame[frame[column].astype(str) == v]) for v in values]


def _median(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def _iqr(values: pd.Series) -> tuple[float, float]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.quantile(0.25)), float(values.quantile(0.75))


def _iqr_text(values: pd.Series) -> str:
    if pd.to_numeric(values, errors="coerce").dropna().empty:
        return "—"
    low, high = _iqr(values)
    return f"[{_num(low)}, {_num(high)}]"


def _overfit_share(group: pd.DataFrame) -> str:
    judged = group["verdict"].notna().sum() if "verdict" in group else 0
    if not judged:
        return "—"
    overfit = int((group["verdict"] == "overfit").sum())
    return f"{overfit}/{judged} ({overfit / judged:.0%})"


def _json_list(value: Any) -> list | None:
    return json.loads(value) if isinstance(value, str) else None


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4g}"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (float, np.floating)):
        return _num(float(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)
