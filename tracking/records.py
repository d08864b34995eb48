"""Tracking side: the records that cross package borders — plain frozen dataclasses, nothing else. Never imports
studies, training or TensorFlow.

Executors produce them, the coordinator completes them, and tracking stores them. They hold only builtins, so they
pickle across processes and rebuild anything (a model, a plot) from data alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch of one trial measured, on the train and validation sets, without the regularization penalty."""

    trial: int  # the Optuna trial number
    epoch: int  # counted from 0
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class TrialRecord:
    """Everything fitgap keeps about a finished trial (COMPLETE, PRUNED or FAIL)."""

    study: str
    number: int
    state: str
    params: Mapping[str, Any]  # every hyperparameter the trial trained with: fixed, sampled and defaulted
    values: tuple[float, ...] | None  # what Optuna was told: the objectives at the best epoch
    best_epoch: int | None
    epochs: tuple[EpochRecord, ...]
    complexity: Mapping[str, int]  # params_total, params_trainable, macs
    seed: int
    device: str
    slot: int
    started_at: float  # unix seconds
    finished_at: float
    reason: str | None = None  # why a trial failed or was pruned
    mlflow_run_id: str | None = None
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # file name -> content, e.g. a traceback
    repeats: int = 1  # trainings with different seeds: values are their mean, epochs their mean curves
    value_std: float | None = None  # spread of the first objective over the repeats
    test_metrics: Mapping[str, float] = field(default_factory=dict)  # on the test set, never used for selection
    executor: str = "keras"  # which training ran: keras, compiled or fused

    def __repr__(self) -> str:
        """Compact, for a notebook: the epochs counted and the artifacts named, not their bytes."""
        values = f"[{', '.join(f'{v:.4g}' for v in self.values)}]" if self.values else None
        return (f"TrialRecord(study={self.study!r}, number={self.number}, state={self.state!r}, values={values}, "
                f"best_epoch={self.best_epoch}, epochs={len(self.epochs)}, params={dict(self.params)!r}, "
                f"reason={self.reason!r}, artifacts={sorted(self.artifacts)!r})")

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at

    @property
    def final(self) -> Mapping[str, float]:
        return self.epochs[-1].metrics if self.epochs else {}

    @property
    def best(self) -> Mapping[str, float]:
        if self.best_epoch is None:
            return {}
        return next(e.metrics for e in self.epochs if e.epoch == self.best_epoch)
