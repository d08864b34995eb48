"""Tracking side: the answer a study gives — how regularization (type and weight), activation, loss and the rest
trade overfitting against accuracy, in tables, plain sentences and plots: a Markdown or an HTML document (images
embedded). Never imports studies, training or TensorFlow.

`build_report` reads only what it is given: the study's rows of the results database (`ResultsDB.trials`), a way
to read a trial's epochs, and optionally the spec, the Optuna study (importances, Pareto front, history) and a way to
fetch a trial's MLflow artifact (decision boundaries). A section that lacks its data says what is missing instead of
failing. The statistics are `tracking.analysis`'s (which gap is compared, and how); the document and its Markdown
and HTML renderings are `tracking.document`'s; `write_report` writes one into a folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fitgap.sweeps.vocabulary import COMPLEXITY_METRICS, default_direction
from fitgap.tracking import plots
from fitgap.tracking.analysis import (
    GAP,
    Context,
    arm_sentence,
    best_trial,
    groups_by,
    iqr_text,
    median_of,
    non_dominated,
    overfit_share,
    own_metric,
    prepare,
    summary_row,
    test_column,
    trend_text,
    weight_bins,
)
from fitgap.tracking.document import Document, num, to_html, to_markdown

FORMATS = ("md", "html")
CATEGORIES = ("activation", "loss", "optimizer")  # compared like the regularizer types, when they vary
NUMERIC = ("learning_rate", "decay_rate", "dropout", "momentum", "batch_size", "depth", "width")
LOG_SCALE = ("learning_rate", "regularization_weight", "width", "batch_size")
# Complexity objectives plotted on a log axis; params_non_trainable is often 0, which a log axis cannot show.
LOG_COMPLEXITY = tuple(m for m in COMPLEXITY_METRICS if m != "params_non_trainable")


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
    directions = [o.get("direction") or default_direction(o["metric"]) for o in objectives]
    complete, gap_label, task = prepare(complete)
    ctx = Context(study, metrics, directions, gap_label, task)
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


def _overview(doc: Document, frame: pd.DataFrame, complete: pd.DataFrame, ctx: Context, spec: Mapping) -> None:
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


def _regularization(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    doc.h2("Regularization: gap and objective by type and weight")
    rows = []
    for kind, group in groups_by(complete, "regularizer"):
        bins = [("—", group)] if kind == "none" else weight_bins(group)
        for label, members in bins:
            rows.append([kind, label, *summary_row(members)])
    doc.table(["regularizer", "weight bin (log)", "trials", "median gap", "gap IQR", f"median {ctx.metric}",
               "overfit"], rows)
    doc.p("Trend of the gap against log10(weight), per type:")
    trends = [f"{kind}: " + trend_text(np.log10(group["weight"].where(group["weight"] > 0)), group[GAP],
                                       "log weight", "the gap")
              for kind, group in groups_by(complete, "regularizer") if kind != "none"]
    doc.items(trends or ["no regularized trial: no trend to measure"])
    _arms(doc, complete, ctx)
    regularized = complete[complete["weight"] > 0]
    if regularized.empty:
        doc.lacks("no regularized trial with a positive weight: no gap-vs-weight plot")
        return
    groups = {kind: (g["weight"], g[GAP]) for kind, g in groups_by(regularized, "regularizer")}
    png = plots.scatter_groups(groups, "regularization weight", "gap", log_x=True, title=ctx.gap_label, zero_line=True)
    doc.image("gap_vs_weight.png", png, "gap against regularization weight")
    values = {kind: (g["weight"], g["value"]) for kind, g in groups_by(regularized, "regularizer")}
    png = plots.scatter_groups(values, "regularization weight", ctx.metric, log_x=True)
    doc.image("objective_vs_weight.png", png, f"{ctx.metric} against regularization weight")


def _arms(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    """Does regularization lower the gap? Each type against `none`: medians, IQRs, Mann-Whitney U."""
    doc.h2("Does regularization lower the gap?")
    arms = dict(groups_by(complete, "regularizer"))
    if "none" not in arms or len(arms) < 2:
        doc.lacks("the regularized-vs-unregularized comparison needs trials with `regularizer: none` and with a "
                  f"regularizer; this study has {', '.join(arms) or 'neither'}")
        doc.p("Not measurable here (see What is missing).")
        return
    accuracy = ctx.has_accuracy
    rows = [[kind, len(g), median_of(g[GAP]), iqr_text(g[GAP]),
             *([median_of(g["best_accuracy_gap"])] if accuracy else []),
             median_of(g["value"]), iqr_text(g["value"]), overfit_share(g)] for kind, g in arms.items()]
    doc.table(["regularizer", "trials", "median gap", "gap IQR", *(["median accuracy gap"] if accuracy else []),
               f"median {ctx.metric}", f"{ctx.metric} IQR", "overfit"], rows)
    doc.items([arm_sentence(kind, arms["none"][GAP], group[GAP]) for kind, group in arms.items()
               if kind != "none"])
    objective = {kind: median_of(g["value"]) for kind, g in arms.items()}
    doc.p(f"Median {ctx.metric} ({'higher' if ctx.maximize else 'lower'} is better): "
          + ", ".join(f"{kind} {num(v)}" for kind, v in objective.items()) + ".")
    doc.image("gap_by_regularizer.png", plots.strip_plot({k: g[GAP].dropna() for k, g in arms.items()}, "gap",
                                                         title=ctx.gap_label), "gap per trial, by regularizer")


# ---------------------------------------------------------------- other parameters


def _category(doc: Document, complete: pd.DataFrame, ctx: Context, column: str) -> None:
    groups = groups_by(complete, column)
    if len(groups) < 2:
        fixed = f"`{groups[0][0]}` in every complete trial" if groups else "not recorded"
        doc.p(f"{column.capitalize()}: {fixed} — nothing to compare.")
        return
    doc.p(f"By {column}:")
    doc.table([column, "trials", "median gap", "gap IQR", f"median {ctx.metric}", "overfit"],
              [[name, *summary_row(g)] for name, g in groups])
    lowest = min(((name, g[GAP].median()) for name, g in groups if g[GAP].notna().any()), key=lambda x: x[1],
                 default=None)
    if lowest:
        doc.p(f"Smallest median gap: {column} = {lowest[0]} ({num(lowest[1])}).")


def _numeric_trends(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    lines = []
    for name in NUMERIC:
        if name not in complete or complete[name].nunique() < 2:
            continue
        x = complete[name].astype(float)
        if name in LOG_SCALE:
            x = np.log10(x.where(x > 0))
        lines.append(f"{name}: " + trend_text(x, complete[GAP], f"{'log ' if name in LOG_SCALE else ''}{name}",
                                              "the gap"))
    if lines:
        doc.h2("Gap against the other searched numbers")
        doc.items(lines)


# ---------------------------------------------------------------- best trials


def _best_per_regularizer(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    doc.h2("Best trial per regularizer type")
    test = test_column(complete, ctx)
    rows = []
    for kind, group in groups_by(complete, "regularizer"):
        best = best_trial(group, ctx)
        rows.append([kind, int(best["number"]), best["weight"], best["value"], best[GAP], best.get("verdict"),
                     best.get("overfit_epoch"), best[test] if test else None])
    doc.table(["regularizer", "trial", "weight", ctx.metric, "gap", "verdict", "overfit from epoch",
               test or "test score"], rows)
    if test is None:
        doc.p("The data has no test set (`test_*` columns are empty): no test score.")


def _pareto(doc: Document, complete: pd.DataFrame, ctx: Context, optuna_study: Any) -> None:
    doc.h2("Pareto front")
    values = complete["values_json"].map(lambda v: _json_list(v)).tolist()
    points = np.array([v if v and len(v) == len(ctx.metrics) else [np.nan] * len(ctx.metrics) for v in values],
                      dtype=float)
    if optuna_study is not None:
        on_front = {t.number for t in optuna_study.best_trials}
        front = np.array([n in on_front for n in complete["number"]])
    else:
        front = non_dominated(points, ctx.directions)
    members = complete[front]
    rows = [[int(r["number"]), *points[i], r["regularizer"], r["weight"], r[GAP], r.get("verdict")]
            for i, (_, r) in zip(np.flatnonzero(front), members.iterrows())]
    rows.sort(key=lambda row: row[1])
    doc.p(f"{len(rows)} of {len(complete)} complete trials are on the front: none is beaten on every objective "
          f"({', '.join(f'{m} {d}' for m, d in zip(ctx.metrics, ctx.directions))}). There is no single best trial.")
    doc.table(["trial", *ctx.metrics, "regularizer", "weight", "gap", "verdict"], rows)
    order = np.argsort(points[front, 1])
    log_x = ctx.metrics[1] in LOG_COMPLEXITY
    doc.image("pareto_front.png", plots.frontier({"trials": (points[:, 1], points[:, 0])}, ctx.metrics[1],
                                                 ctx.metrics[0], (points[front, 1][order], points[front, 0][order]),
                                                 log_x=log_x), "Pareto front")


def _json_list(value: Any) -> list | None:
    return json.loads(value) if isinstance(value, str) else None


# ---------------------------------------------------------------- plots of trials


def _curves_and_boundaries(doc: Document, complete: pd.DataFrame, ctx: Context,
                           epochs: Callable[[int], list[dict]],
                           artifact: Callable[[str, str], bytes | None] | None) -> None:
    doc.h2("Best regularized vs best unregularized trial")
    regularized, plain = complete[complete["regularizer"] != "none"], complete[complete["regularizer"] == "none"]
    if regularized.empty or plain.empty:
        doc.unavailable("learning curves and decision boundaries of the best regularized vs the best unregularized "
                        "trial need both kinds of trial")
        return
    best_regularized = best_trial(regularized, ctx)
    pair = [("unregularized", best_trial(plain, ctx)), (str(best_regularized["regularizer"]), best_regularized)]
    names = [f"{label} (trial {int(best['number'])})" for label, best in pair]
    losses = complete["loss"].dropna().unique()
    metrics = ["loss" if len(losses) <= 1 else own_metric(ctx.task) or "loss"]
    if ctx.has_accuracy:
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


def _complexity_frontier(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    score = "best_val_accuracy" if ctx.has_accuracy else "best_val_mse"
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
    groups = {kind: (g["params_total"], g[score]) for kind, g in groups_by(usable, "regularizer")}
    doc.image("complexity_frontier.png", plots.frontier(groups, "parameters (space complexity)",
                                                        score.removeprefix("best_"), (front_x, front_y)),
              "validation score against parameter count")
    doc.p(f"The front: the best {score.removeprefix('best_')} reached with at most that many parameters "
          f"({len(front_x)} step{'s' if len(front_x) != 1 else ''}; {int(usable['params_total'].nunique())} distinct "
          f"model size{'s' if usable['params_total'].nunique() != 1 else ''}).")


# ---------------------------------------------------------------- Optuna: importances and history


def _importances(doc: Document, ctx: Context, optuna_study: Any, spec: Mapping) -> None:
    doc.h2("Parameter importances")
    if optuna_study is None:
        doc.unavailable("parameter importances: no Optuna study was given")
        return
    import optuna

    complete = optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    searched = list((spec.get("search") or {}).keys())
    if len(complete) < 2:
        doc.unavailable(f"parameter importances need at least 2 complete trials, the study has {len(complete)}")
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


def _history(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    doc.h2("Optimization history")
    done = complete.dropna(subset=["value"]).sort_values("number") if len(complete) else complete
    if len(done) < 2:
        doc.unavailable(f"optimization history needs at least 2 complete trials, the study has {len(done)}")
        return
    best = done["value"].cummax() if ctx.maximize else done["value"].cummin()
    doc.image("history.png", plots.history(done["number"], done["value"], best, ctx.metric), "optimization history")
    first = int(done.loc[done["value"] == best.iloc[-1], "number"].iloc[0])
    doc.p(f"Best {ctx.metric} {num(best.iloc[-1])}, first reached at trial {first} (complete trials "
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
