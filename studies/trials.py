"""Coordinator side: what a trial is, apart from any store — its trainings and how they combine. No TensorFlow.

A trial is `repeats` trainings of one params dict, each a `TrialTask` with its own seed (`trial_seed`: the one seed
rule, from the study seed, the trial number and the repeat) and, in the coordinator, its own number
(`training_number`), so that repeats can share a fused batch. Its curves are the mean of the repeats' curves, epoch
by epoch (`mean_curves`); its best epoch is the mean curves' best, and its values are the mean curves' objectives
there (`Combined`: one definition for `value`, `best_<metric>` and the best epoch). While it trains, its live curve
(`reached_by_all`) is the mean over the epochs every repeat has reached: such a point is final, since no repeat will
change it. `launch`'s coordinator and `rerun` both build their tasks and combine their trainings here.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping

from fitgap.studies.messages import TrialOutcome, TrialTask
from fitgap.sweeps.pruning import report_epochs
from fitgap.sweeps.space import derive_seed
from fitgap.sweeps.spec import SweepSpec
from fitgap.sweeps.vocabulary import COMPLEXITY_METRICS
from fitgap.tracking.records import EpochRecord


def trial_seed(spec: SweepSpec, number: int, repeat: int = 0) -> int:
    """The training seed of one repeat of trial `number` (the first repeat's is the trial's own, tag fitgap.seed)."""
    return derive_seed(spec.seed, "trial", number, *([repeat] if repeat else []))


def training_number(number: int, repeat: int) -> int:
    """The number a training of trial `number` goes by in an executor (`TrialTask.number`, its epoch records and
    outcome): the trial's own for its first repeat, a negative one unique to (trial, repeat) for the others, so that
    a trial's repeats can share a fused batch."""
    return number if repeat == 0 else -(number * 1_000_000 + repeat)


def trial_of(training: int) -> int:
    """The trial a training number belongs to (`training_number`'s inverse)."""
    return training if training >= 0 else -training // 1_000_000


def trial_task(spec: SweepSpec, number: int, params: Mapping[str, Any], repeat: int, executor: str,
               save_model: bool = False, prune: bool = True) -> TrialTask:
    """One training of trial `number`. With `prune`, the executor waits for the pruner at the spec's pruner epochs."""
    return TrialTask(spec.name, number, params, trial_seed(spec, number, repeat), spec.dataset.model_dump(),
                     str(spec.base_dir), tuple(zip(spec.metrics, spec.directions)),
                     report_epochs(spec.pruner, params["epochs"]) if prune else frozenset(), repeat, executor,
                     save_model=save_model)


def best_epoch(epochs: list[EpochRecord], metric: str, direction: str) -> EpochRecord | None:
    """The epoch where the first objective is best (the first of ties); the last epoch for complexity objectives."""
    finite = [e for e in epochs if math.isfinite(e.metrics.get(metric, math.nan))]
    if metric in COMPLEXITY_METRICS or not finite:
        return epochs[-1] if epochs else None
    choose = max if direction == "maximize" else min
    return choose(finite, key=lambda e: e.metrics[metric])


def mean_curves(runs: list[list[EpochRecord]]) -> list[EpochRecord]:
    """Epoch by epoch, the mean of each metric over the runs that reached that epoch, ended when the last of them
    ended it."""
    if len(runs) == 1:
        return runs[0]
    by_epoch: dict[int, list[EpochRecord]] = {}
    for run in runs:
        for record in run:
            by_epoch.setdefault(record.epoch, []).append(record)
    return [EpochRecord(group[0].trial, epoch, {k: statistics.fmean(r.metrics[k] for r in group)
                                                for k in group[0].metrics},
                        max((r.ended_at for r in group if r.ended_at is not None), default=None))
            for epoch, group in sorted(by_epoch.items())]


def reached_by_all(runs: list[list[EpochRecord]], start: int = 0) -> list[EpochRecord]:
    """The mean curves (`mean_curves`) from epoch `start` up to the last epoch every one of `runs` has reached (each
    run's records in epoch order, from 0): what a trial of `len(runs)` repeats can show while they train."""
    end = min(map(len, runs))
    return mean_curves([run[start:end] for run in runs]) if end > start else []


@dataclass(frozen=True)
class Combined:
    """A trial's trainings (one per repeat, in repeat order) as one result, by one definition: its curves are the
    repeats' mean curves, its best epoch is theirs (the first of ties), and its values, `best_<metric>` and each
    repeat's numbers are all taken at that epoch."""

    epochs: list[EpochRecord]  # the mean curves
    best: EpochRecord | None  # the mean curves' best epoch; None for a failed trial
    values: tuple[float, ...] | None  # the objectives at `best`; None for a failed trial
    value_std: float | None  # the first objective's spread over the repeats at `best`; None for one repeat
    per_repeat: tuple[dict[str, float], ...]  # with repeats: each one's first objective and fit gap at `best`
    test_metrics: dict[str, float]  # means over the repeats

    @classmethod
    def of(cls, spec: SweepSpec, done: list[tuple[list[EpochRecord], TrialOutcome]], failed: bool) -> "Combined":
        epochs = mean_curves([e for e, _ in done])
        best = values = value_std = None
        per_repeat: tuple[dict[str, float], ...] = ()
        if not failed:
            best = best_epoch(epochs, spec.metrics[0], spec.directions[0])
            complexity = done[0][1].complexity
            values = tuple(float({**best.metrics, **complexity}[m]) for m in spec.metrics)
            if len(done) > 1:
                per_repeat = tuple(_at(run, best.epoch, spec.metrics[0], outcome.complexity) for run, outcome in done)
                value_std = statistics.pstdev(r["value"] for r in per_repeat)
        test_metrics = {k: statistics.fmean(o.test_metrics[k] for _, o in done if k in o.test_metrics)
                        for k in done[0][1].test_metrics}
        return cls(epochs, best, values, value_std, per_repeat, test_metrics)


def _at(run: list[EpochRecord], epoch: int, metric: str, complexity: Mapping[str, int]) -> dict[str, float]:
    """One repeat's first objective and fit gap at `epoch` (its last epoch if it stopped before)."""
    metrics = {**next((e for e in run if e.epoch == epoch), run[-1]).metrics, **complexity}
    return {"value": float(metrics[metric]), "fit_gap": float(metrics.get("fit_gap", math.nan))}
