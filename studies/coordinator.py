"""Coordinator side: the coordinator, the one process per machine that writes storage (`Coordinator.run`).

It asks Optuna for trials (`study.StudyHandle`), hands their trainings to executors, one per slot (an `Executor`:
the process handle, or a test's fake), and reacts to events: epoch records (reported to the pruner at its epochs),
outcomes, executors that die, Ctrl-C. For each finished trial it has MLflow and the results database written and
then tells Optuna. Telling last means a coordinator killed mid-write leaves the trial RUNNING, to be failed (and
retried) by the heartbeat check, never COMPLETE without its records. The writing is the tracking process's
(`fitgap.tracking.writer`), on another core: the coordinator tells Optuna when it says a trial is written.

Live curves: a trial training for longer than `LIVE_EVERY_S` has its new epochs written (a `LiveRecord`) whenever
that much time has passed since its last live write, at the next `Epochs` bunch; a trial that ends sooner is written
once, at its end. The clock of a trial (`duration_s`, `trial_timeout`, live writes) starts when its first training is
dispatched to a slot; its wait before that is `wait_s`.

A trial is `repeats` trainings with different seeds, possibly on different slots; its record holds their mean
(`trials.Combined`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna
from mlflow.entities import RunInfo
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from fitgap.errors import RunError, one_line
from fitgap.studies.batching import in_flight_limit
from fitgap.studies.choice import choose_executor, take_batch
from fitgap.studies.executors import Died, Executor, ExecutorProcess, StartExecutor
from fitgap.studies.messages import Epochs, Ready, TrialOutcome, TrialTask
from fitgap.studies.options import RunOptions
from fitgap.studies.slots import Slot
from fitgap.studies.study import HEARTBEAT_S, StudyHandle
from fitgap.studies.trials import Combined, reached_by_all, trial_seed, trial_task, training_number
from fitgap.sweeps.space import suggest, trial_params
from fitgap.tracking.records import EpochRecord, LiveRecord, TrialRecord
from fitgap.tracking.writer import TrackingWriter, WriterDied, Written

# What a store raises when it refuses a write mid-launch (Optuna wraps a failed commit in its own error): the launch
# stops with a run error
STORE_FAILURES = (SQLAlchemyError, optuna.exceptions.StorageInternalError, MlflowException, OSError)
MAX_START_FAILURES = 3  # executors of one slot in a row that die before they are ready: then the launch stops
# The reason recorded for the trials a signal interrupts (they are not retried: the user stopped them)
INTERRUPTIONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}
# A running trial's new epochs are written at least this often (seconds; inf: only at its end). Trials shorter than it
# are written once, so the reference sweep's ~1 s trials cost no more.
LIVE_EVERY_S = float(os.environ.get("FITGAP_LIVE_S", "10"))


@dataclass
class _Trial:
    trial: optuna.Trial
    params: dict
    run: RunInfo  # its MLflow run
    executor: str  # fused, compiled or keras: the fastest that trains it as the reference would
    why: str  # why that executor (`choice.choose_executor`)
    asked_at: float  # when Optuna gave it
    started_at: float | None = None  # when its first training was dispatched to a slot
    curves: dict[int, list[EpochRecord]] = field(default_factory=dict)  # each started repeat's epochs so far
    done: dict[int, tuple[list[EpochRecord], TrialOutcome]] = field(default_factory=dict)  # by repeat
    failure: TrialOutcome | None = None  # the first training that failed fails the trial
    live_epochs: int = 0  # epochs of its curve already written live
    live_at: float = 0.0  # when they were (or when it started)


@dataclass
class _Training:
    """One training of one trial, running on one slot."""

    trial: _Trial
    task: TrialTask
    slot: int
    device: str
    started_at: float = field(default_factory=time.time)
    epochs: list[EpochRecord] = field(default_factory=list)
    stop_reason: str | None = None  # set when the coordinator asked the executor to stop it


class Coordinator:
    def __init__(self, handle: StudyHandle, slots: list[Slot], options: RunOptions, fuse: int = 1,
                 on_trial: Callable[[TrialRecord, int, int], None] | None = None,
                 start_executor: StartExecutor = ExecutorProcess,
                 on_epoch: Callable[[int, int, int], None] | None = None,
                 data_facts: tuple[int, float] | None = None):
        self.h = handle
        self.spec = handle.spec
        self.fuse = fuse  # trainings per fused batch (`choice.choose_k`)
        self.slots = {slot.index: slot for slot in slots}
        self.deadline = time.time() + options.timeout if options.timeout else math.inf
        self.retries = options.retries
        self.max_trials_per_executor = options.max_trials_per_executor
        self.on_trial = on_trial or (lambda record, used, budget: None)
        self.on_epoch = on_epoch or (lambda number, epoch, epochs: None)  # a display's: each epoch record received
        self.start_executor = start_executor
        self.val_size, self.val_baseline = data_facts or (None, None)  # `diagnosis.data_facts`, for every record
        self.events: queue.Queue = queue.Queue()
        self.executors: dict[int, Executor] = {}
        self.devices: dict[int, str] = {}  # slot -> device its executor reported when ready
        self.trained: dict[int, int] = {}  # slot -> trainings done by its current executor
        self.idle: set[int] = set()
        self.running: dict[int, dict[int, _Training]] = {}  # slot -> trial number -> its training there
        self.waiting: list[tuple[_Trial, int]] = []  # repeats of asked trials that no slot has taken yet
        self.trials: dict[int, _Trial] = {}  # trials not yet told to Optuna, by number
        self.writer: TrackingWriter | None = None
        self.writing: dict[int, tuple[_Trial, TrialRecord, bool]] = {}  # records the tracking process is writing
        self.finished: list[TrialRecord] = []
        self.used = 0  # the study's used budget, for progress: read at each heartbeat, counted in between
        self.stopping = False  # `fitgap stop`, the timeout or Ctrl-C: no new trials
        self.spent = False  # the budget was used up at the last ask: ask again after a retry or a heartbeat
        self.signal: int | None = None  # the signal that interrupted the launch
        self.start_failures: dict[int, int] = {}  # slot -> executors in a row that died before they were ready

    def run(self) -> list[TrialRecord]:
        """Run trials until the budget is used (or the timeout, or a stop); return the records this launch wrote."""
        previous = self._catch_signals()
        try:
            # Holding the SQLite workspace's lock proves no other coordinator is alive: its RUNNING trials are orphans
            self.h.fail_stale_trials(self.retries, all_running=self.h.stores.exclusive)
            self.used = self.h.used_budget()
            if self._remaining() > 0:
                stores = self.h.stores
                self.writer = TrackingWriter(self.events, stores.tracking_uri, stores.artifact_root, stores.results_url,
                                             stores.workspace / "logs" / "tracking.log")
                for slot in self.slots.values():
                    self._start_executor(slot)
            last_beat = time.time()
            while self.executors:
                self._dispatch()
                if not (self.running or self.waiting or self.writing) and (self.stopping or self._remaining() <= 0):
                    break
                try:
                    self._handle(*self.events.get(timeout=0 if self._prefetching() else self._next_wakeup()))
                except queue.Empty:
                    if self._prefetching():
                        self._ask(1)  # nothing to handle: ask for the next batch while the slots train
                self._enforce_trial_timeout()
                if time.time() - last_beat >= HEARTBEAT_S:
                    self.h.heartbeat([t.trial for t in self.trials.values()])
                    if not self.h.stores.exclusive:  # another coordinator's, on a shared server
                        self.h.fail_stale_trials(self.retries)
                    self.used = self.h.used_budget()  # other coordinators' trials too
                    self.spent = False  # their trials may have failed and been retried
                    self.stopping = self.stopping or self.h.stop_requested()
                    last_beat = time.time()
            if self.waiting:  # stopping, and no executor left to train them
                self._drop_waiting("not started: the launch stopped", retry=True)
            self._drain()
        except (RunError, *STORE_FAILURES) as error:  # a store failing mid-launch (a full disk, a lost server) too
            if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None:
                error = error.__cause__  # Optuna's own message guesses ("invalid data"); its cause says what failed
            stopped = error if isinstance(error, RunError) else RunError(f"a store failed: {one_line(error)}")
            self._abandon(f"not recorded: the launch stopped ({stopped})")
            raise stopped from None
        except KeyboardInterrupt:
            self.stopping = True
            reason = INTERRUPTIONS.get(self.signal, INTERRUPTIONS[signal.SIGINT])
            for executor in self.executors.values():
                executor.close(kill=True)
            self._drop_waiting(reason, retry=False)
            for index in list(self.running):
                for training in self.running.pop(index).values():
                    training.stop_reason = reason
                    self._training_done(training, TrialOutcome(training.task.number, "FAIL", reason=reason,
                                                               executor=training.task.executor))
            self._drain()
            raise
        finally:
            for executor in self.executors.values():
                executor.close(kill=True)
            self.executors.clear()
            if self.writer is not None:
                self.writer.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.finished

    # -- asking and dispatching -------------------------------------------------------------------------------------

    def _remaining(self) -> int:
        """Trials still to ask for. On a workspace this coordinator holds alone its own count is the storage's (a
        storage read re-reads every running trial: ~1 ms each, so per ask of a fused batch, O(K²))."""
        if self.h.stores.exclusive:
            return self.h.budget - self.used - len(self.trials)
        return self.h.remaining()

    def _dispatch(self) -> None:
        """Give idle slots their next batches; once stopping, only the trials already asked (running, for Optuna)."""
        while self.idle:
            if time.time() >= self.deadline:
                self.stopping = True
            if len(self.waiting) < self.fuse and not self.spent and not self.stopping:
                self._ask(math.ceil((self.fuse - len(self.waiting)) / self.spec.repeats))
            if not self.waiting:
                return
            index = self.idle.pop()
            batch = take_batch(self.waiting, self.fuse)
            tasks = [self._task(trial, repeat) for trial, repeat in batch]
            self.running[index] = {task.number: _Training(trial, task, index, self.devices[index])
                                   for (trial, _), task in zip(batch, tasks)}
            for training in self.running[index].values():
                trial = training.trial
                trial.curves[training.task.repeat] = training.epochs
                if trial.started_at is None:
                    trial.started_at = trial.live_at = training.started_at
            self.executors[index].submit(*tasks)

    def _prefetching(self) -> bool:
        """Whether to ask ahead: while slots train, the next batch of each slot is asked in the coordinator's idle
        time, so that asking overlaps training instead of following it (as far as the sampler's rounds let it)."""
        return bool(self.running) and not self.stopping and not self.spent and time.time() < self.deadline and \
            len(self.waiting) < self.fuse * len(self.slots) and self._room() > 0

    def _room(self) -> float:
        """How many more trials this coordinator may ask before more are told (`batching.in_flight_limit`): its
        trials not yet told are in flight, `used` is the study's told trials."""
        limit = in_flight_limit(self.h.study.sampler, self.used, self.spec)
        return math.inf if limit is None else limit - len(self.trials)

    def _drop_waiting(self, reason: str, retry: bool) -> None:
        """The trials asked ahead that no slot took fail with `reason` (and are retried with the same params by the
        next launch). A trial whose other repeats are training fails when they end."""
        pending = list({id(trial): trial for trial, _ in self.waiting}.values())
        self.waiting.clear()
        training = {id(t.trial) for batch in self.running.values() for t in batch.values()}
        for trial in pending:
            outcome = TrialOutcome(trial.trial.number, "FAIL", reason=reason, executor=trial.executor)
            if id(trial) in training:
                trial.failure = trial.failure or outcome
            else:
                self._training_done(_Training(trial, self._task(trial, 0), -1, "none"), outcome, retry=retry)

    def _task(self, trial: _Trial, repeat: int) -> TrialTask:
        """One training of `trial`, numbered apart from its other repeats (`trials.training_number`)."""
        task = trial_task(self.spec, trial.trial.number, trial.params, repeat, trial.executor,
                          save_model=self.h.models.wanted and repeat == 0)
        return dataclasses.replace(task, number=training_number(task.number, repeat)) if repeat else task

    def _ask(self, wanted: int) -> None:
        """Ask Optuna for up to `wanted` more trials, within the budget and the sampler's room (`_room`); their repeats
        join the waiting list. Each trial's params are suggested before the next is asked: each ask refreshes
        Optuna's cache of the study's trials, which would otherwise show the sampler the batch's earlier trials
        without params (on an RDB storage QMC then infers no search space and draws the whole batch at random)."""
        wanted = min(wanted, self._room())
        if wanted <= 0:
            return
        with self.h.asking():  # several coordinators on one server: the budget check and the asks are one step
            self.stopping = self.stopping or self.h.stop_requested()
            remaining = 0 if self.stopping else self._remaining()
            asked = []
            for _ in range(min(wanted, remaining)):
                trial = self.h.ask()
                asked.append((trial, time.time(), trial_params(self.spec, suggest(trial, self.spec))))
        self.spent = remaining <= wanted
        for trial, asked_at, params in asked:
            run = self.h.start_trial_run(trial, trial_seed(self.spec, trial.number), self.spec.repeats, params)
            executor, why = choose_executor(params, self.spec.executor, self.fuse)
            self.trials[trial.number] = _Trial(trial, params, run, executor, why, asked_at)
            self.waiting += [(self.trials[trial.number], r) for r in range(self.spec.repeats)]

    # -- events -----------------------------------------------------------------------------------------------------

    def _handle(self, source: Executor | TrackingWriter | str, message) -> None:
        if source == "interrupt":
            self.signal = message
            raise KeyboardInterrupt
        if source is self.writer:
            if isinstance(message, WriterDied):
                raise RunError(f"the tracking process exited (code {message.returncode}): see "
                               f"{self.writer.log_path}")
            self._written(message)
            return
        index = source.slot.index
        if self.executors.get(index) is not source:
            return  # a recycled executor's exit, posted after its successor started
        if isinstance(message, Ready):
            self.devices[index] = message.device
            self.start_failures.pop(index, None)
            self.idle.add(index)
        elif isinstance(message, Epochs):
            trainings = self.running[index]
            for record in message.records:
                training = trainings[record.trial]
                number = training.trial.trial.number
                training.epochs.append(record if record.trial == number else dataclasses.replace(record, trial=number))
                self.on_epoch(number, record.epoch, training.task.params["epochs"])
                if record.epoch in training.task.decide_at:
                    self._decide(index, training, record)
            now = time.time()
            for number in {record.trial for record in message.records}:
                if now - trainings[number].trial.live_at >= LIVE_EVERY_S:
                    self._write_live(trainings[number], now)
        elif isinstance(message, TrialOutcome):
            training = self.running[index].pop(message.number)
            self.trained[index] += 1
            if not self.running[index]:
                del self.running[index]
                if self.trained[index] >= self.max_trials_per_executor:
                    self._recycle(index)
                else:
                    self.idle.add(index)
                self._dispatch()  # the slot trains the next trials while this one is written
            self._training_done(training, message)
        elif isinstance(message, Died):
            self._executor_died(index, message.returncode)

    def _write_live(self, training: _Training, now: float) -> None:
        """Have the trial's epochs since its last live write written (with repeats: those every repeat reached)."""
        trial = training.trial
        epochs = reached_by_all([trial.curves.get(r, []) for r in range(self.spec.repeats)], trial.live_epochs)
        if not epochs:
            return
        self.writer.write_live(LiveRecord(
            study=self.spec.name, number=trial.trial.number, mlflow_run_id=trial.run.run_id, params=trial.params,
            epochs=tuple(epochs), seed=trial_seed(self.spec, trial.trial.number), device=training.device,
            slot=training.slot, started_at=trial.started_at, wait_s=trial.started_at - trial.asked_at,
            executor=trial.executor, repeats=self.spec.repeats))
        trial.live_epochs += len(epochs)
        trial.live_at = now

    def _decide(self, index: int, training: _Training, record: EpochRecord) -> None:
        """Report the objective at a pruner epoch; the executor waits for the answer."""
        trial = training.trial.trial
        prune = False
        if self.spec.repeats == 1 and len(self.spec.objective) == 1:
            trial.report(record.metrics[self.spec.metrics[0]], step=record.epoch + 1)
            prune = trial.should_prune()
        if prune:
            training.stop_reason = f"pruned at epoch {record.epoch}"
        self.executors[index].decide(training.task.number, record.epoch, prune)

    def _executor_died(self, index: int, returncode: int | None) -> None:
        self.executors.pop(index).close()
        self.idle.discard(index)
        if self.devices.pop(index, None) is None:  # it died starting up (killed importing TensorFlow, say): again
            self.start_failures[index] = self.start_failures.get(index, 0) + 1
            if self.start_failures[index] >= MAX_START_FAILURES:  # a broken install: retrying would loop for ever
                log = self.h.stores.workspace / "logs" / f"executor-{index}.log"
                raise RunError(f"the executor of slot {index} exited (code {returncode}) before it was ready, "
                               f"{MAX_START_FAILURES} times: see {log}")
        for training in self.running.pop(index, {}).values():
            reason = training.stop_reason or f"executor died (exit code {returncode})"
            self._training_done(training, TrialOutcome(training.task.number, "FAIL", reason=reason,
                                                       executor=training.task.executor),
                                retry=training.stop_reason is None)
        if not self.stopping:
            self._start_executor(self.slots[index])

    def _enforce_trial_timeout(self) -> None:
        """Ask an over-time training to stop after its epoch; kill its executor if it does not within the grace."""
        limit = self.spec.trial_timeout
        if limit is None:
            return
        now = time.time()
        for index, training in [(i, t) for i, batch in self.running.items() for t in batch.values()]:
            over = now - training.trial.started_at - limit
            if over > 0 and training.stop_reason is None:
                training.stop_reason = f"trial timeout ({limit:g} s) exceeded"
                self.executors[index].stop(training.task.number, training.stop_reason)
            elif over > max(30.0, limit):
                self.executors[index].close(kill=True)  # its reader posts Died, which fails the trial

    def _next_wakeup(self) -> float:
        wakeup = HEARTBEAT_S
        if self.spec.trial_timeout is not None and self.running:
            first = min(t.trial.started_at for batch in self.running.values() for t in batch.values())
            wakeup = min(wakeup, max(0.05, first + self.spec.trial_timeout - time.time()))
        return wakeup

    # -- finishing --------------------------------------------------------------------------------------------------

    def _training_done(self, training: _Training, outcome: TrialOutcome, retry: bool = False) -> None:
        trial = training.trial
        if training.stop_reason and outcome.state == "PRUNED":
            state = "PRUNED" if training.stop_reason.startswith("pruned") else "FAIL"
            outcome = dataclasses.replace(outcome, state=state, reason=training.stop_reason)
        trial.done[training.task.repeat] = (training.epochs, outcome)
        if outcome.state != "COMPLETE" and trial.failure is None:
            trial.failure = outcome
            self.waiting = [(t, r) for t, r in self.waiting if t is not trial]  # no point training the rest
        busy = [t.trial for batch in self.running.values() for t in batch.values()]
        if any(t is trial for t in busy) or any(t is trial for t, _ in self.waiting):
            return  # other repeats of this trial are still training
        self._record(trial, training, retry)

    def _record(self, trial: _Trial, training: _Training, retry: bool) -> None:
        done = [trial.done[r] for r in sorted(trial.done)]
        outcome = trial.failure or done[0][1]
        combined = Combined.of(self.spec, done, failed=trial.failure is not None)
        artifacts = dict(outcome.artifacts)
        if outcome.traceback:
            artifacts["traceback.txt"] = outcome.traceback.encode()
        finished_at = time.time()
        started_at = finished_at if trial.started_at is None else trial.started_at  # None: it never started
        record = TrialRecord(
            study=self.spec.name,
            number=trial.trial.number,
            state=outcome.state if trial.failure else "COMPLETE",
            params=trial.params,
            values=combined.values,
            best_epoch=combined.best.epoch if combined.best else None,
            epochs=tuple(combined.epochs),
            complexity={k: v for k, v in outcome.complexity.items() if isinstance(v, int)},
            seed=trial_seed(self.spec, trial.trial.number),  # of the first repeat
            device=training.device,
            slot=training.slot,
            started_at=started_at,  # the first repeat's dispatch: duration_s runs from there to the last outcome
            finished_at=finished_at,
            wait_s=started_at - trial.asked_at,
            reason=outcome.reason if trial.failure else None,
            mlflow_run_id=trial.run.run_id,
            artifact_uri=trial.run.artifact_uri,
            artifacts=artifacts,
            repeats=self.spec.repeats,
            value_std=combined.value_std,
            per_repeat=combined.per_repeat,
            val_size=self.val_size,
            val_baseline=self.val_baseline,
            test_metrics=combined.test_metrics,
            executor=outcome.executor,
            executor_reason="; ".join(filter(None, (trial.why, outcome.executor_reason))),  # and its XLA mode
        )
        retry = retry and trial.trial.user_attrs.get("fitgap.attempt", 0) < self.retries
        record = self.h.models.keep(record)
        self.writing[record.number] = (trial, record, retry)
        self.writer.write(record, self.h.plots.wants(record))

    def _written(self, message: Written) -> None:
        if message.error:  # its record or a live write of it
            raise RunError(f"trial {message.number} could not be written: {message.error} (see "
                           f"{self.writer.log_path})")
        trial, record, retry = self.writing.pop(message.number)
        self.h.conclude(trial.trial, record, retry=retry, attributes=message.attributes)
        self.spent = self.spent and not retry
        del self.trials[record.number]
        self.finished.append(record)
        self.used += not retry  # a retried failure counts once, as its retry
        self.on_trial(record, self.used, self.h.budget)

    def _abandon(self, reason: str) -> None:
        """On a run error, fail the trials this launch asked and did not record (retried by the next launch), as far
        as the stores still take writes: on a full disk they may not, and what stays RUNNING is failed by the next
        launch."""
        for executor in self.executors.values():
            executor.close(kill=True)
        self.h.abandon([t.trial for t in self.trials.values()], reason[:300], self.retries)

    def _drain(self) -> None:
        """Wait for the records being written, and tell Optuna about them (Ctrl-C: the interrupted trials)."""
        while self.writing:
            try:
                source, message = self.events.get(timeout=300)
            except queue.Empty:
                return  # a hung tracking process: its trials stay RUNNING, failed and retried by the next launch
            if source is self.writer:  # the executors are stopped: what they still post is moot
                self._handle(source, message)

    # -- executors --------------------------------------------------------------------------------------------------

    def _start_executor(self, slot: Slot) -> None:
        log = self.h.stores.workspace / "logs" / f"executor-{slot.index}.log"
        self.executors[slot.index] = self.start_executor(slot, self.events, log)
        self.trained[slot.index] = 0

    def _recycle(self, index: int) -> None:
        """Replace an executor that has trained its share, so that memory cannot creep."""
        self.executors.pop(index).close()
        self.devices.pop(index, None)
        self._start_executor(self.slots[index])

    def _catch_signals(self) -> dict:
        """Ctrl-C (SIGINT) and SIGTERM (`timeout`, `docker stop`, systemd, schedulers) wake the loop instead of raising
        wherever it is (say, in the middle of a storage write); the handlers they replace, to put back."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, lambda signum, _: self.events.put(("interrupt", signum)))
                for signum in INTERRUPTIONS}
