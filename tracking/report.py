"""Tracking side: the answer a study gives — how regularization (type and weight), activation, loss and the rest
trade overfitting against accuracy — opening with that answer in at most five lines (`tracking.answer`), then the
evidence in tables, plain sentences and plots: a Markdown or an HTML document (images embedded). Never imports
studies, training or TensorFlow.

`build_report` reads only what it is given: the study's rows of the results database (`ResultsDB.trials`), a way
to read a trial's epochs, and optionally the spec, the Optuna study (importances, Pareto front, history) and a way to
fetch a trial's MLflow artifact (decision boundaries). A controlled study over regularization weights (a `fitgap
path` study, or a spec of that shape) gets the regularization path: the fit gap and the objective against the weight
with their intervals over seeds, learning curves and decision boundaries along it, and the weight that best trades
one against the other. A section that lacks its data says what is missing instead of failing; a section with
nothing to compare (one model size, one searched parameter) is left out. The statistics are `tracking.analysis`'s
and `tracking.answer`'s; the document and its renderings are `tracking.document`'s; `write_report` writes one.
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
    best_trial,
    groups_by,
    non_dominated,
    overfit_share,
    own_metric,
    prepare,
    score_notes,
    summary_row,
    test_column,
    trend_text,
    weight_bins,
)
from fitgap.tracking.answer import answer_lines, best_weights, compare, design, observations, path, why_none
from fitgap.tracking.diagnosis import VERDICTS
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
    complete, gap_label, task = prepare(complete)
    ctx = context(study, spec, gap_label, task)
    doc.h2("The answer")
    doc.items(answer_lines(complete, ctx) if len(complete) else ["No complete trial yet: no answer."])
    _overview(doc, frame, complete, ctx, spec)
    if complete.empty:
        doc.lacks("no COMPLETE trial yet: every table and plot needs at least one (launch the study, or wait for it)")
    else:
        _best(doc, complete, ctx)
        is_path = _is_path(complete)
        if is_path:
            _path(doc, complete, ctx, epochs, artifact)
        else:
            _regularization(doc, complete, ctx)
        _verdicts(doc, complete)
        _categories(doc, complete, ctx)
        _numeric_trends(doc, complete, ctx)
        if len(ctx.metrics) > 1:
            _pareto(doc, complete, ctx, optuna_study)
        else:
            _best_per_regularizer(doc, complete, ctx)
        if not is_path:
            _curves_and_boundaries(doc, complete, ctx, epochs, artifact)
        _complexity_frontier(doc, complete, ctx)
    _importances(doc, ctx, optuna_study, spec)
    _history(doc, complete, ctx)
    return doc


def context(study: str, spec: Mapping[str, Any], gap_label: str = "fit gap", task: str | None = None) -> Context:
    """The study's objectives and gap, from its spec (as stored with the study)."""
    objectives = spec.get("objective") or [{"metric": "objective", "direction": "minimize"}]
    metrics = [o["metric"] for o in objectives]
    directions = [o.get("direction") or default_direction(o["metric"]) for o in objectives]
    return Context(study, metrics, directions, gap_label, task)


def _overview(doc: Document, frame: pd.DataFrame, complete: pd.DataFrame, ctx: Context, spec: Mapping) -> None:
    doc.h2("The study")
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"
    objective = ", ".join(f"{m} ({d})" for m, d in zip(ctx.metrics, ctx.directions))
    dataset = spec.get("dataset", {}).get("name", "?") if spec else "?"
    doc.p(f"Study **{ctx.study}**: {states}. Objective: {objective}. Dataset: {dataset}.")
    doc.p(f"Gap compared: the {ctx.gap_label}, the same for every loss; positive = validation worse than training. "
          "Verdicts are each trial's diagnosis at its best epoch (README: Diagnosis and the report). Intervals are "
          "95 % (Welch's, over training seeds) and a difference is called lower or higher only when its interval "
          "excludes 0.")
    if len(complete) and complete["verdict"].isna().any():
        doc.lacks(f"{int(complete['verdict'].isna().sum())} trials have no verdict (written before the diagnosis "
                  "existed, or without bce/ce/mse): they count as not overfit")


def _best(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    """The best trial's score with what a reader should know of it (`analysis.score_notes`)."""
    if len(ctx.metrics) > 1:
        return
    doc.h2("The best trial")
    best = best_trial(complete, ctx)
    others = complete[complete["number"] != best["number"]]["value"].tolist()
    test = test_column(complete, ctx)
    size = best.get("val_size")
    notes = score_notes(ctx.metric, best["value"], others, None if pd.isna(size) else int(size),
                        best.get(test) if test else None, test)
    doc.p(f"Trial {int(best['number'])}: {ctx.metric} {num(best['value'])} at epoch {num(best.get('best_epoch'))} "
          f"(the weights it keeps), fit gap {num(best[GAP])}, verdict {best.get('verdict') or '—'}"
          + (f": {best['verdict_reason']}" if best.get("verdict_reason") else "") + ".")
    doc.items(notes)


# ---------------------------------------------------------------- regularization


def _is_path(complete: pd.DataFrame) -> bool:
    """A controlled study over regularization weights: the path section instead of the observational ones."""
    weights = complete["weight"].dropna()
    return (complete["regularizer"] == "none").any() and weights.nunique() > 1 and design(complete).controlled


def _path(doc: Document, complete: pd.DataFrame, ctx: Context, epochs: Callable[[int], list[dict]],
          artifact: Callable[[str, str], bytes | None] | None) -> None:
    doc.h2("The regularization path")
    obs = observations(complete)
    points = path(obs)
    base = obs[obs["regularizer"] == "none"]
    rows = [["none", None, len(base), _mean(base["fit_gap"]), "—", _mean(base["value"]), "—"]]
    for point in points:
        rows.append([point.regularizer, point.weight, point.gap.n_b, point.gap.b_mean, _ci(point.gap),
                     point.objective.b_mean, _ci(point.objective)])
    doc.table(["regularizer", "weight", "seeds", "fit gap", "vs none (95 % CI)", ctx.metric, "vs none (95 % CI)"],
              rows)
    chosen = best_weights(points, ctx)
    kinds = sorted({p.regularizer for p in points})
    doc.items([f"{kind.upper()}: the best trade is weight {num(chosen[kind].weight)}" if kind in chosen else
               f"{kind.upper()}: no weight helps here — {why_none(kind, points, ctx)}" for kind in kinds])
    for what, column, label in (("fit_gap", "gap", "fit gap"), ("value", "objective", ctx.metric)):
        groups = {}
        for kind in kinds:
            mine = [p for p in points if p.regularizer == kind]
            stats = [_band(obs[(obs["regularizer"] == kind) & (obs["weight"] == p.weight)][what]) for p in mine]
            groups[kind] = ([p.weight for p in mine], *zip(*stats))
        best = next((chosen[k].weight for k in kinds if k in chosen), None)
        png = plots.path_plot(groups, _band(base[what]), label, f"{label} against the regularization weight "
                              "(mean and 95 % interval over seeds; unregularized: the line)", best)
        doc.image(f"path_{column}.png", png, f"{label} against the regularization weight")
    _along_path(doc, complete, ctx, points, chosen, epochs, artifact)


def _along_path(doc: Document, complete: pd.DataFrame, ctx: Context, points, chosen, epochs, artifact) -> None:
    """Learning curves and decision boundaries of the unregularized trial, the chosen weights and the largest."""
    stops = [("none", int(complete[complete["regularizer"] == "none"]["number"].min()))]
    for kind in sorted({p.regularizer for p in points}):
        mine = [p for p in points if p.regularizer == kind]
        picks = ([chosen[kind]] if kind in chosen else []) + [mine[-1]]
        stops += [(f"{kind} {num(p.weight)}", p.numbers[0]) for p in dict.fromkeys(picks)]
    stops = stops[:5]
    metrics = [own_metric(ctx.task) or "loss"] + (["accuracy"] if ctx.has_accuracy else [])
    doc.image("path_curves.png", plots.curves_side_by_side([(n, epochs(t)) for n, t in stops], metrics),
              "learning curves along the path")
    if ctx.task != "binary" or artifact is None:
        return
    runs = complete.set_index("number")["mlflow_run_id"]
    grids = [(name, artifact(runs[number], "boundary.npz") if runs.get(number) else None) for name, number in stops]
    if all(grid for _, grid in grids):
        doc.image("path_boundaries.png", plots.boundaries(grids), "decision boundaries along the path")
    else:
        doc.lacks("decision boundaries along the path: no `boundary.npz` in those trials' MLflow runs (only 2-D "
                  "binary data has one)")


def _regularization(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    arms = dict(groups_by(complete, "regularizer"))
    doc.h2("Regularization")
    if "none" not in arms or len(arms) < 2:
        doc.lacks("the regularized-vs-unregularized comparison needs trials with `regularizer: none` and with a "
                  f"regularizer; this study has {', '.join(arms) or 'neither'}")
    else:
        _arms(doc, complete, arms, ctx)
    regularized = complete[complete["weight"] > 0]
    if regularized["weight"].nunique() > 1:
        _weights(doc, complete, regularized, ctx)


def _arms(doc: Document, complete: pd.DataFrame, arms: dict[str, pd.DataFrame], ctx: Context) -> None:
    """Each regularizer type's trials against the unregularized ones: means and their differences' intervals."""
    obs = observations(complete)
    base = obs[obs["regularizer"] == "none"]
    rows = []
    for kind, group in arms.items():
        mine = obs[obs["regularizer"] == kind]
        gap, value = compare(base["fit_gap"], mine["fit_gap"]), compare(base["value"], mine["value"])
        rows.append([kind, len(group), len(mine), _mean(mine["fit_gap"]), "—" if kind == "none" else _ci(gap),
                     _mean(mine["value"]), "—" if kind == "none" else _ci(value), overfit_share(group)])
    doc.table(["regularizer", "trials", "seeds", "mean fit gap", "vs none (95 % CI)", f"mean {ctx.metric}",
               "vs none (95 % CI)", "overfit"], rows)
    doc.image("gap_by_regularizer.png", plots.strip_plot({k: g[GAP].dropna() for k, g in arms.items()}, "fit gap",
                                                         title=ctx.gap_label), "fit gap per trial, by regularizer")


def _weights(doc: Document, complete: pd.DataFrame, regularized: pd.DataFrame, ctx: Context) -> None:
    doc.p("By weight (log bins), and the trend of the fit gap against log10(weight), per type:")
    rows = []
    for kind, group in groups_by(complete, "regularizer"):
        for label, members in ([("—", group)] if kind == "none" else weight_bins(group)):
            rows.append([kind, label, *summary_row(members)])
    doc.table(["regularizer", "weight bin (log)", "trials", "median fit gap", "fit gap IQR", f"median {ctx.metric}",
               "overfit"], rows)
    doc.items([f"{kind}: " + trend_text(np.log10(group["weight"]), group[GAP], "log weight", "the fit gap")
               for kind, group in groups_by(regularized, "regularizer")])
    groups = {kind: (g["weight"], g[GAP]) for kind, g in groups_by(regularized, "regularizer")}
    png = plots.scatter_groups(groups, "regularization weight", "fit gap", log_x=True, title=ctx.gap_label,
                               zero_line=True)
    doc.image("gap_vs_weight.png", png, "fit gap against regularization weight")
    values = {kind: (g["weight"], g["value"]) for kind, g in groups_by(regularized, "regularizer")}
    png = plots.scatter_groups(values, "regularization weight", ctx.metric, log_x=True)
    doc.image("objective_vs_weight.png", png, f"{ctx.metric} against regularization weight")


def _verdicts(doc: Document, complete: pd.DataFrame) -> None:
    doc.h2("Verdicts")
    counts = complete["verdict"].value_counts()
    doc.table(["verdict", "trials"], [[v, int(counts.get(v, 0))] for v in VERDICTS if counts.get(v, 0)])
    doc.p("Each trial is judged at its best epoch, by the first rule of the README's verdict table that holds; its "
          "reason is the results column `verdict_reason` and the MLflow tag `fitgap.verdict_reason`.")


def _mean(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def _ci(difference) -> str:
    if difference is None:
        return "—"
    if difference.low is None:
        return f"{num(difference.delta)} (one seed)"
    return f"{num(difference.delta)} [{num(difference.low)}, {num(difference.high)}]"


def _band(values: pd.Series) -> tuple[float, float, float]:
    """Mean and its 95 % t interval over the seeds (the mean alone for one seed)."""
    from scipy.stats import t

    values = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2:
        return mean, mean, mean
    half = float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


# ---------------------------------------------------------------- other parameters


def _categories(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    """Activation, loss and optimizer, those that vary; the fixed ones in one line."""
    varying = [(column, groups_by(complete, column)) for column in CATEGORIES]
    fixed = [f"{column} `{groups[0][0]}`" for column, groups in varying if len(groups) == 1]
    varying = [(column, groups) for column, groups in varying if len(groups) > 1]
    if not varying:
        if fixed:
            doc.p(f"Fixed in every complete trial: {', '.join(fixed)}.")
        return
    doc.h2("Activation, loss and optimizer")
    for column, groups in varying:
        doc.p(f"By {column} (observational: other settings vary between these groups too):")
        doc.table([column, "trials", "median fit gap", "fit gap IQR", f"median {ctx.metric}", "overfit"],
                  [[name, *summary_row(g)] for name, g in groups])
    if fixed:
        doc.p(f"Fixed in every complete trial: {', '.join(fixed)}.")


def _numeric_trends(doc: Document, complete: pd.DataFrame, ctx: Context) -> None:
    lines = []
    for name in NUMERIC:
        if name not in complete or complete[name].nunique() < 2:
            continue
        x = complete[name].astype(float)
        if name in LOG_SCALE:
            x = np.log10(x.where(x > 0))
        lines.append(f"{name}: " + trend_text(x, complete[GAP], f"{'log ' if name in LOG_SCALE else ''}{name}",
                                              "the fit gap"))
    if lines:
        doc.h2("Fit gap against the other searched numbers")
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
    doc.table(["regularizer", "trial", "weight", ctx.metric, "fit gap", "verdict", "overfit from epoch",
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
    doc.table(["trial", *ctx.metrics, "regularizer", "weight", "fit gap", "verdict"], rows)
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
    metrics = [own_metric(ctx.task) or "loss"] + (["accuracy"] if ctx.has_accuracy else [])
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
    if usable["params_total"].nunique() < 2:
        return  # one model size: nothing to compare

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
          "model sizes).")


# ---------------------------------------------------------------- Optuna: importances and history


def _importances(doc: Document, ctx: Context, optuna_study: Any, spec: Mapping) -> None:
    doc.h2("Parameter importances")
    if optuna_study is None:
        doc.unavailable("parameter importances: no Optuna study was given")
        return
    import optuna

    complete = optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    searched = list((spec.get("search") or {}).keys())
    if len(searched) < 2:
        doc.p(f"One searched parameter ({', '.join(searched) or 'none'}): no importances to compare.")
        return
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
