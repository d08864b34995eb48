"""The coordinator: the one process per machine that writes storage.

It asks Optuna for trials, hands them to executor processes (one per slot), collects their epoch records and
outcomes as events, and for each finished trial writes MLflow and the results database and then tells Optuna.
Telling last means a coordinator killed mid-write leaves the trial RUNNING, to be failed by the heartbeat check,
never COMPLETE without its records.
"""

from __future__ import annotations

import math
import queue
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna

from studies.executor import Died, ExecutorProcess
from studies.protocol import Ready, TrialOutcome, TrialTask
from studies.slots import Slot
from studies.study import StudyHandle, derive_seed
from sweeps.space import suggest, trial_params
from sweeps.vocabulary import COMPLEXITY_METRICS
from tracking.records import EpochRecord, TrialRecord

HEARTBEAT_S = 10.0


class ExecutorError(RuntimeError):
    """An executor cannot start at all (a broken install, say): retrying would loop for ever."""

    exit_code = 2


@dataclass
class _Running:
    trial: optuna.Trial
    task: TrialTask
    slot: Slot
    run_id: str
    started_at: float = field(default_factory=time.time)
    epochs: list[EpochRecord] = field(default_factory=list)
    stop_reason: str | None = None  # set when the coordinator asked the executor to stop the trial


def best_epoch(epochs: list[EpochRecord], metric: str, direction: str) -> EpochRecord | None:
    """The epoch where the first objective is best (the first of ties); the last epoch for complexity objectives."""
    finite = [e for e in epochs if math.isfinite(e.metrics.get(metric, math.nan))]
    if metric in COMPLEXITY_METRICS or not finite:
        return epochs[-1] if epochs else None
    choose = max if direction == "maximize" else min
    return choose(finite, key=lambda e: e.metrics[metric])


class Coordinator:
    def __init__(self, handle: StudyHandle, slots: list[Slot], budget: int, timeout: float | None = None,
                 on_trial: Callable[[TrialRecord, int, int], None] | None = None):
        self.h = handle
        self.slots = {slot.index: slot for slot in slots}
        self.budget = budget
        self.deadline = time.time() + timeout if timeout else math.inf
        self.on_trial = on_trial or (lambda record, used, budget: None)
        self.events: queue.Queue = queue.Queue()
        self.executors: dict[int, ExecutorProcess] = {}
        self.ready: set[int] = set()
        self.idle: set[int] = set()
        self.running: dict[int, _Running] = {}  # by slot index
        self.finished: list[TrialRecord] = []

    def run(self) -> list[TrialRecord]:
        """Run trials until the budget (or the timeout) is reached; return the records this launch finished."""
        try:
            self.h.fail_stale_trials()
            if self._remaining() > 0:
                for slot in self.slots.values():
                    self._start_executor(slot)
            last_beat = time.time()
            while self.executors:
                self._dispatch()
                if not self.running and (self._remaining() <= 0 or time.time() >= self.deadline):
                    break
                try:
                    index, message = self.events.get(timeout=HEARTBEAT_S)
                    self._handle(index, message)
                except queue.Empty:
                    pass
                if time.time() - last_beat >= HEARTBEAT_S:
                    self.h.heartbeat([r.trial for r in self.running.values()])
                    last_beat = time.time()
        except KeyboardInterrupt:
            for running in list(self.running.values()):
                self.executors[running.slot.index].close(kill=True)
                self._finish(running, TrialOutcome(running.task.number, "FAIL", reason="interrupted"))
            raise
        finally:
            for executor in self.executors.values():
                executor.close()
            self.executors.clear()
        return self.finished

    def _remaining(self) -> int:
        return self.budget - self.h.used_budget() - len(self.running)

    def _start_executor(self, slot: Slot) -> None:
        log = self.h.stores.workspace / "logs" / f"executor-{slot.index}.log"
        self.executors[slot.index] = ExecutorProcess(slot, self.events, log)

    def _dispatch(self) -> None:
        while self.idle and time.time() < self.deadline and self._remaining() > 0:
            slot = self.slots[self.idle.pop()]
            trial = self.h.study.ask()
            params = trial_params(self.h.spec, suggest(trial, self.h.spec))
            seed = derive_seed(self.h.spec.seed, "trial", trial.number)
            run_id = self.h.start_trial_run(trial, seed, slot)
            task = TrialTask(self.h.spec.name, trial.number, params, seed, self.h.spec.dataset.model_dump(),
                             str(self.h.spec.base_dir), tuple(zip(self.h.spec.metrics, self.h.spec.directions)))
            self.running[slot.index] = _Running(trial, task, slot, run_id)
            self.executors[slot.index].submit(task)

    def _handle(self, index: int, message) -> None:
        running = self.running.get(index)
        if isinstance(message, Ready):
            self.ready.add(index)
            self.idle.add(index)
        elif isinstance(message, EpochRecord):
            running.epochs.append(message)
        elif isinstance(message, TrialOutcome):
            self.idle.add(index)
            self._finish(running, message)
        elif isinstance(message, Died):
            self.executors.pop(index).close()
            self.idle.discard(index)
            if index not in self.ready:
                log = self.h.stores.workspace / "logs" / f"executor-{index}.log"
                raise ExecutorError(f"the executor of slot {index} exited (code {message.returncode}) before "
                                    f"it was ready: see {log}")
            self.ready.discard(index)
            if running:
                reason = f"executor died (exit code {message.returncode})"
                self._finish(running, TrialOutcome(running.task.number, "FAIL", reason=reason))
            if self._remaining() > 0:
                self._start_executor(self.slots[index])

    def _finish(self, running: _Running, outcome: TrialOutcome) -> None:
        del self.running[running.slot.index]
        state, reason = outcome.state, outcome.reason
        if state == "PRUNED" and running.stop_reason:
            state, reason = ("FAIL" if running.stop_reason == "interrupted" else "PRUNED"), running.stop_reason
        spec = self.h.spec
        best = best_epoch(running.epochs, spec.metrics[0], spec.directions[0]) if state == "COMPLETE" else None
        values = None
        if best is not None:
            metrics = {**best.metrics, **outcome.complexity}
            values = tuple(float(metrics[m]) for m in spec.metrics)
        record = TrialRecord(
            study=spec.name,
            number=running.task.number,
            state=state,
            params=running.task.params,
            values=values,
            best_epoch=best.epoch if best else None,
            epochs=tuple(running.epochs),
            complexity={k: v for k, v in outcome.complexity.items() if k in COMPLEXITY_METRICS},
            seed=running.task.seed,
            device=running.slot.device,
            slot=running.slot.index,
            started_at=running.started_at,
            finished_at=time.time(),
            reason=reason,
            mlflow_run_id=running.run_id,
            artifacts={"traceback.txt": outcome.traceback.encode()} if outcome.traceback else {},
        )
        self.h.record(running.trial, record)
        self.finished.append(record)
        self.on_trial(record, self.h.used_budget(), self.budget)
