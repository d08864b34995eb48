"""Coordinator side: what a trial is, apart from any store — its trainings and how they combine. No TensorFlow.

A trial is `repeats` trainings of one params dict, each a `TrialTask` with its own seed (`trial_seed`: the one seed
rule, from the study seed, the trial number and the repeat). Its curves are the mean of the repeats' curves, epoch
by epoch (`mean_curves`); its values are the mean over the repeats of each repeat's objectives at that repeat's best
epoch (`Combined`). While it trains, its live curve (`reached_by_all`) is the mean over the epochs every repeat has
reached: such a point is final, since no repeat will change it. `launch`'s coordinator and `rerun` both build their
tasks and combine their trainings here.
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
    """A trial's trainings (one per repeat, in repeat order) as one result."""

    epochs: list[EpochRecord]  # the mean curves
    best: EpochRecord | None  # the mean curves' best epoch; None for a failed trial
    values: tuple[float, ...] | None  # None for a failed trial
    value_std: float | None  # the first value's spread over the repeats; None for one repeat
    test_metrics: dict[str, float]  # means over the repeats

    @classmethod
    def of(cls, spec: SweepSpec, done: list[tuple[list[EpochRecord], TrialOutcome]], failed: bool) -> "Combined":
        epochs = mean_curves([e for e, _ in done])
        best = values = value_std = None
        if not failed:
            best = best_epoch(epochs, spec.metrics[0], spec.directions[0])
            per_repeat = [_values(spec, e, o) for e, o in done]
            values = tuple(statistics.fmean(v[i] for v in per_repeat) for i in range(len(spec.metrics)))
            value_std = statistics.pstdev(v[0] for v in per_repeat) if len(per_repeat) > 1 else None
        test_metrics = {k: statistics.fmean(o.test_metrics[k] for _, o in done if k in o.test_metrics)
                        for k in done[0][1].test_metrics}
        return cls(epochs, best, values, value_std, test_metrics)


def _values(spec: SweepSpec, epochs: list[EpochRecord], outcome: TrialOutcome) -> list[float]:
    best = best_epoch(epochs, spec.metrics[0], spec.directions[0])
    metrics = {**best.metrics, **outcome.complexity}
    return [float(metrics[m]) for m in spec.metrics]
