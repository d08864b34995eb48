"""What the coordinator and an executor process say to each other: pickled frozen dataclasses over pipes.

Coordinator -> executor: `Batch` (trials to train, one for now, fused batches later), `Stop` (a trial should end after
its current epoch), `Decision` (the answer the executor waits for at each epoch in a task's `decide_at`: go on, or
stop because the pruner says so). End of input means shut down.
Executor -> coordinator: `Ready` once TensorFlow is up, then for each trial its `tracking.records.EpochRecord`s in
`Epochs` bunches and one `TrialOutcome`.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Mapping

_HEADER = struct.Struct("!I")


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


def send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next message, or None at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)
