"""Tracking side: the records that cross package borders — plain frozen dataclasses, nothing else. Never imports
studies, training or TensorFlow.

Executors produce them (`EpochRecord`), the coordinator completes them (`TrialRecord` for a finished trial,
`LiveRecord` for a running one's new epochs) and tracking stores them. They hold only builtins, so they pickle
across processes and rebuild anything (a model, a plot) from data alone.
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
    ended_at: float | None = None  # unix seconds: MLflow stamps the epoch's points with it


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
    started_at: float  # unix seconds: when its (first) training was dispatched to a slot
    finished_at: float  # when its (last) outcome came
    reason: str | None = None  # why a trial failed or was pruned
    mlflow_run_id: str | None = None
    artifact_uri: str | None = None  # its MLflow run's, as the run's creation gave it (None: read from the run)
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # file name -> content, e.g. a traceback
    repeats: int = 1  # trainings with different seeds: epochs are their mean curves, values those at best_epoch
    value_std: float | None = None  # spread of the first objective over the repeats, at best_epoch
    test_metrics: Mapping[str, float] = field(default_factory=dict)  # on the test set, never used for selection
    executor: str = "keras"  # which training ran: keras, compiled or fused
    executor_reason: str | None = None  # why that executor (and XLA mode) ran, as the executor says
    wait_s: float | None = None  # from Optuna's ask to started_at: its wait for a slot
    val_size: int | None = None  # validation rows (a val accuracy's binomial interval needs it)
    val_baseline: float | None = None  # what the trivial prediction scores there (`diagnosis.data_facts`)
    per_repeat: tuple[Mapping[str, float], ...] = ()  # with repeats: each one's objective and fit gap at best_epoch

    def __repr__(self) -> str:
        """Compact, for a notebook: the epochs counted and the artifacts named, not their bytes."""
        values = f"[{', '.join(f'{v:.4g}' for v in self.values)}]" if self.values else None
        return (f"TrialRecord(study={self.study!r}, number={self.number}, state={self.state!r}, values={values}, "
                f"best_epoch={self.best_epoch}, epochs={len(self.epochs)}, params={dict(self.params)!r}, "
                f"reason={self.reason!r}, artifacts={sorted(self.artifacts)!r})")

    @property
    def duration_s(self) -> float:
        """The trial's own training time, its wait for a slot apart (`wait_s`)."""
        return self.finished_at - self.started_at

    @property
    def final(self) -> Mapping[str, float]:
        return self.epochs[-1].metrics if self.epochs else {}

    @property
    def best(self) -> Mapping[str, float]:
        if self.best_epoch is None:
            return {}
        return next(e.metrics for e in self.epochs if e.epoch == self.best_epoch)


@dataclass(frozen=True)
class LiveRecord:
    """A running trial's epochs since its last live write (`studies.coordinator.LIVE_EVERY_S`): MLflow gets these
    points, the results database a RUNNING row with every epoch so far. `TrialRecord` replaces it when it ends."""

    study: str
    number: int
    mlflow_run_id: str
    params: Mapping[str, Any]
    epochs: tuple[EpochRecord, ...]  # the new ones, in epoch order, following those written before
    seed: int
    device: str
    slot: int
    started_at: float  # as TrialRecord's
    wait_s: float
    executor: str
    repeats: int = 1  # with several, `epochs` are the mean curves over the epochs every repeat has reached
