"""A fake `Executor` (`fitgap.studies.executors`): trains nothing, imports no TensorFlow, speaks the protocol.

The coordinator's behaviour — budget, retries, faults, batching, pruning, timeouts — is tested on it in seconds. A
`Script` says what the executors it starts do: every trial "trains" a curve that rises to a level set by its learning
rate, and `plan(task)` may make a task fail, stop on a non-finite loss, or kill its executor mid-trial. The script
records what the coordinator asked of the executors (`started`, `batches`, `stops`) for the tests to check.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from fitgap.studies.executors import Died
from fitgap.studies.messages import Epochs, Ready, TrialOutcome, TrialTask
from fitgap.tracking.records import EpochRecord

COMPLEXITY = {"params_total": 45, "params_trainable": 45, "params_non_trainable": 0, "macs": 33}
METRICS = ("loss", "val_loss", "accuracy", "val_accuracy", "reg_loss", "lr")  # per epoch, as a binary trial has


def level(task: TrialTask) -> float:
    """The accuracy a trial's curve rises to: higher for higher learning rates, different for each repeat."""
    return min(0.99, 0.5 + task.params.get("learning_rate", 0.1)) - 0.01 * task.repeat


def metrics_at(task: TrialTask, epoch: int) -> dict[str, float]:
    accuracy = level(task) * (1 - math.exp(-(epoch + 1) / 3))
    return {"loss": 1 - accuracy, "val_loss": 1.05 - accuracy, "accuracy": accuracy + 0.01, "val_accuracy": accuracy,
            "reg_loss": 0.0, "lr": task.params.get("learning_rate", 0.01)}


@dataclass
class Script:
    """What the fake executors do. plan(task) -> "complete" | "fail" | "nan" | "die" (the executor is killed during
    the task's second epoch). before(task) runs before a task trains (to wait for something), during(task, epoch)
    before each of its epochs (to pause it). epoch_s: seconds each epoch takes. die_starting: how many executors, the
    first started, die before they are ready. Each outcome names its executor and why (`executor_reason`)."""

    plan: Callable[[TrialTask], str] = lambda task: "complete"
    before: Callable[[TrialTask], None] = lambda task: None
    during: Callable[[TrialTask, int], None] = lambda task, epoch: None
    epoch_s: float = 0.0
    die_starting: int = 0
    started: list = field(default_factory=list)  # the slot of each executor started
    batches: list[list[TrialTask]] = field(default_factory=list)
    stops: list[tuple[int, str]] = field(default_factory=list)

    def __call__(self, slot, events, log_path) -> "FakeExecutor":
        """A `StartExecutor`: the coordinator starts its executors through this."""
        self.started.append(slot)
        return FakeExecutor(slot, events, self, ready=len(self.started) > self.die_starting)


class FakeExecutor:
    def __init__(self, slot, events, script: Script, ready: bool):
        self.slot, self.events, self.script = slot, events, script
        self.answers: dict[int, dict[int, bool]] = {}  # trial -> epoch -> prune?
        self.stopped: set[int] = set()
        self.changed = threading.Condition()
        self.dead = False
        if ready:
            events.put((self, Ready(os.getpid(), slot.device)))
        else:
            self._die(1)

    def submit(self, *tasks: TrialTask) -> None:
        self.script.batches.append(list(tasks))
        threading.Thread(target=self._train, args=(tasks,), daemon=True).start()

    def stop(self, number: int, reason: str) -> None:
        self.script.stops.append((number, reason))
        with self.changed:
            self.stopped.add(number)
            self.changed.notify_all()

    def decide(self, number: int, epoch: int, stop: bool) -> None:
        with self.changed:
            self.answers.setdefault(number, {})[epoch] = stop
            self.changed.notify_all()

    def close(self, kill: bool = False) -> None:
        self._die(-9 if kill else 0)

    def _die(self, code: int) -> None:
        with self.changed:
            if self.dead:
                return
            self.dead = True
            self.changed.notify_all()
        self.events.put((self, Died(code)))

    def _post(self, message) -> bool:
        if not self.dead:
            self.events.put((self, message))
        return not self.dead

    def _train(self, tasks: tuple[TrialTask, ...]) -> None:
        for task in tasks:
            outcome = self._one(task)
            if outcome is None:
                return  # the executor died
            self._post(outcome)

    def _one(self, task: TrialTask) -> TrialOutcome | None:
        """Train one task; its outcome, or None when the executor died. Epoch records go in bunches, as a real
        executor sends them: at the pruner's epochs, every epoch when epochs take time, and before the outcome."""
        self.script.before(task)
        plan, unsent = self.script.plan(task), []

        def outcome(state: str, reason: str | None = None) -> TrialOutcome | None:
            if unsent and not self._post(Epochs(tuple(unsent))):
                return None
            return TrialOutcome(task.number, state, COMPLEXITY, reason=reason, executor=task.executor,
                                executor_reason=f"fake: {task.executor} as asked")

        if plan == "fail":
            return outcome("FAIL", "ValueError: bad trial")
        for epoch in range(task.params["epochs"]):
            self.script.during(task, epoch)
            time.sleep(self.script.epoch_s)
            if plan == "die" and epoch == 1:
                self._die(-9)
                return None
            if plan == "nan" and epoch == 2:
                return outcome("FAIL", f"non-finite loss (nan) at epoch {epoch}")
            unsent.append(EpochRecord(task.number, epoch, metrics_at(task, epoch), ended_at=time.time()))
            if epoch in task.decide_at or self.script.epoch_s:
                if not self._post(Epochs(tuple(unsent))):
                    return None
                unsent = []
            with self.changed:
                if epoch in task.decide_at:  # the pruner's answer, as a real executor waits for it
                    self.changed.wait_for(lambda: self.dead or epoch in self.answers.get(task.number, {})
                                          or task.number in self.stopped)
                if self.dead:
                    return None
                if self.answers.get(task.number, {}).get(epoch) or task.number in self.stopped:
                    return outcome("PRUNED", f"stopped at epoch {epoch}")
        return outcome("COMPLETE")
