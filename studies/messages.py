"""Both sides: what the coordinator and an executor say to each other: frozen dataclasses, sent over `fitgap.channel`. Plain data
only, no TensorFlow and no storage: both sides import this module.

Coordinator -> executor: `Batch` (trials to train: one, or the members of a fused batch), `Stop` (a trial should end after
its current epoch), `Decision` (the answer the executor waits for at each epoch in a task's `decide_at`: go on, or
stop because the pruner says so). End of input means shut down.
Executor -> coordinator: `Ready` once TensorFlow is up, then for each trial its `tracking.records.EpochRecord`s in
`Epochs` bunches and one `TrialOutcome`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class TrialTask:
    study: str
    number: int
    params: Mapping[str, Any]  # the full params dict (sweeps.space.trial_params): plain data, so any trial can be rebuilt
    seed: int  # training seed: initial weights and batch order
    dataset: Mapping[str, Any]  # the spec's dataset section
    data_dir: str = "."  # relative data paths resolve against it (the spec file's folder)
    objective: tuple[tuple[str, str], ...] = ()  # (metric, direction) pairs, e.g. for early stopping
    decide_at: frozenset[int] = frozenset()  # epochs after which the executor waits for the pruner's Decision
    repeat: int = 0  # which of the spec's `repeats` trainings of this trial (each has its own seed)
    executor: str = "keras"  # keras | compiled | fused: how the executor trains it
    save_model: bool = False  # return the trained model (Keras format) in the outcome's artifacts


@dataclass(frozen=True)
class Batch:
    tasks: tuple[TrialTask, ...]


@dataclass(frozen=True)
class Stop:
    number: int
    reason: str


@dataclass(frozen=True)
class Decision:
    number: int
    epoch: int
    stop: bool


@dataclass(frozen=True)
class Ready:
    pid: int
    device: str  # as the process sees it: "cpu" or "gpu:<CUDA_VISIBLE_DEVICES>"


@dataclass(frozen=True)
class Epochs:
    """Epoch records in a bunch: a message per epoch took about a fifth of the coordinator's time per trial
    (profiled, 100 epochs). Sent when the pruner must decide, at least every `EPOCHS_EVERY_S`, and before the
    outcome."""

    records: tuple  # of tracking.records.EpochRecord


EPOCHS_EVERY_S = 1.0


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str  # COMPLETE, PRUNED (stopped on request) or FAIL
    complexity: Mapping[str, int] = field(default_factory=dict)
    reason: str | None = None
    traceback: str | None = None
    test_metrics: Mapping[str, float] = field(default_factory=dict)  # on the test set, never used for selection
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # file name -> content, for the trial's MLflow run
    executor: str = "keras"  # which training ran
    executor_reason: str | None = None  # why that executor (and XLA mode): the training side says
