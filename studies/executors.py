"""Coordinator side: executors, the processes that train trials and never touch storage, as the coordinator sees them.

`Executor` is all the coordinator knows of one: submit a batch of tasks, stop a trial, answer a pruner's question,
close it. An executor posts `(itself, message)` to the coordinator's event queue: `Ready` once it can train, then per
trial `Epochs` bunches and one `TrialOutcome`, and `Died` when it ends. `ExecutorProcess` is the real one: a process
(`fitgap.training.process`, the TensorFlow side) started fresh with its slot's environment; `tests/fakes.py` has one
that trains nothing, so that the coordinator's behaviour is tested without TensorFlow.
"""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from fitgap.channel import Child
from fitgap.studies.messages import Batch, Decision, Stop, TrialTask
from fitgap.studies.slots import Slot


@dataclass(frozen=True)
class Died:
    """Posted when an executor has ended (its exit code, negative for a signal; None when unknown)."""

    returncode: int | None


class Executor(Protocol):
    slot: Slot

    def submit(self, *tasks: TrialTask) -> None:
        """Train these tasks as one batch (a fused batch, or one task)."""

    def stop(self, number: int, reason: str) -> None:
        """End trial `number` after its current epoch (its outcome says PRUNED; the coordinator knows why)."""

    def decide(self, number: int, epoch: int, stop: bool) -> None:
        """The answer to the pruner's question at `epoch`, which the executor waits for."""

    def close(self, kill: bool = False) -> None:
        """End it: at once with `kill`, else once its input is read; returns when it has ended."""


# (slot, event queue, log file) -> a started executor
StartExecutor = Callable[[Slot, queue.Queue, Path], Executor]


class ExecutorProcess:
    """One executor process on one slot. Its messages go to `events` as (this handle, message), so that a slot's
    replaced executor can still post its last words (its `Died`) after the new one started."""

    def __init__(self, slot: Slot, events: queue.Queue, log_path: Path):
        self.slot = slot
        env = os.environ | dict(slot.env) | {"FITGAP_DEVICE": slot.device, "TF_CPP_MIN_LOG_LEVEL": "2"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:  # TensorFlow's chatter and the user's prints
            self.child = Child("fitgap.training.process", lambda message: events.put((self, message)),
                               lambda code: events.put((self, Died(code))), env=env, stderr=log,
                               name=f"fitgap-executor-{slot.index}")

    @property
    def pid(self) -> int:
        return self.child.process.pid

    def submit(self, *tasks: TrialTask) -> None:
        self.child.send(Batch(tasks))

    def stop(self, number: int, reason: str) -> None:
        self.child.send(Stop(number, reason))

    def decide(self, number: int, epoch: int, stop: bool) -> None:
        self.child.send(Decision(number, epoch, stop))

    def close(self, kill: bool = False) -> None:
        if kill:
            self.child.kill()
        self.child.close_input()
        self.child.wait(timeout=30)
