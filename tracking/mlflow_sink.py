"""MLflow as a sink of finished trials: one experiment per study, a parent run per study, a nested run per trial.

Everything goes through an explicit `MlflowClient(tracking_uri=...)` (no global fluent state), and a trial's curves
are written in a few `log_batch` calls when it ends (one call per point costs seconds per trial).

A trial's diagnosis (`tracking.diagnosis`) becomes `fitgap.*` tags. Its plots (learning curves, and the decision
boundary when the executor sent `boundary.npz`) cost ~100 ms each to render: a plotting process renders and logs
them (`tracking.plots.main`), so the coordinator only hands it the record; `flush()` waits for it (the study's
close does).
"""

from __future__ import annotations

import logging
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from tracking.diagnosis import diagnose
from tracking.records import TrialRecord

for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # store creation logs its migrations at INFO

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # else MLflow 3's UI opens on GenAI pages
_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100  # log_batch limits
_log = logging.getLogger(__name__)


class TrackingError(Exception):
    """MLflow cannot take this study (for example, its experiment was deleted)."""

    exit_code = 2


@dataclass(frozen=True)
class StudyRun:
    experiment_id: str
    run_id: str


class MlflowSink:
    def __init__(self, tracking_uri: str, artifact_root: Path | None = None):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.artifact_root = artifact_root  # local stores only: else MLflow writes artifacts under the cwd
        self._plotter: _Plotter | None = None  # started by the first trial that has something to plot

    def experiment(self, study: str, create: bool = True) -> str | None:
        """The study's experiment id (created, tagged for model training, when missing and `create`)."""
        found = self.client.get_experiment_by_name(study)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment {study!r} is deleted: restore it (mlflow experiments restore "
                    f"--experiment-id {found.experiment_id}) or give the sweep another `name`"
                )
            return found.experiment_id
        if not create:
            return None
        location = (self.artifact_root / study).as_uri() if self.artifact_root else None
        return self.client.create_experiment(study, artifact_location=location, tags=EXPERIMENT_KIND)

    def study_run(self, study: str, tags: Mapping[str, str], spec_yaml: str) -> StudyRun:
        """The study's parent run, found by tag or created; marked RUNNING while a launch works on it."""
        experiment_id = self.experiment(study)
        found = self.client.search_runs(
            [experiment_id], "tags.`fitgap.role` = 'study'", run_view_type=ViewType.ALL, max_results=1
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(
                experiment_id, run_name=study, tags={"fitgap.role": "study", "fitgap.study": study}
            ).info.run_id
            self.client.log_text(run_id, spec_yaml, "spec.yaml")
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return StudyRun(experiment_id, run_id)

    def start_trial(self, study: StudyRun, name: str, number: int, tags: Mapping[str, Any]) -> str:
        tags = {"mlflow.parentRunId": study.run_id, "fitgap.trial": str(number), "fitgap.state": "RUNNING"} | {
            k: str(v) for k, v in tags.items()
        }
        return self.client.create_run(study.experiment_id, run_name=f"{name}-{number}", tags=tags).info.run_id

    def finish_trial(self, record: TrialRecord, plot: bool = True) -> None:
        """Params, complexity, every epoch's metrics, tags and artifacts, then the final status; the plots, rendered
        in the background, if `plot` (see `studies.study.StudyHandle.wants_plots`)."""
        run_id = record.mlflow_run_id
        now = int(time.time() * 1000)
        params = [Param(k, _text(v)) for k, v in record.params.items()]
        params += [Param(k, str(v)) for k, v in record.complexity.items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in record.complexity.items()]  # also metrics, to sort by
        metrics += [Metric(k, v, now, e.epoch) for e in record.epochs for k, v in e.metrics.items()]
        if record.values is not None:
            metrics += [Metric(f"objective_{i}", v, now, record.best_epoch or 0) for i, v in enumerate(record.values)]
        tags = {"fitgap.state": record.state, "fitgap.device": record.device, "fitgap.slot": record.slot,
                "fitgap.executor": record.executor}
        if record.best_epoch is not None:
            tags["fitgap.best_epoch"] = record.best_epoch
        if record.reason:
            tags["fitgap.reason"] = record.reason[:5000]
        diagnosis = diagnose(record.epochs, record.best_epoch)
        tags |= diagnosis.tags()
        render = plot and bool(record.epochs) and (self._plotter is None or self._plotter.has_room())
        if record.epochs:  # why a run has no learning_curves.png (`fitgap report` still plots the trials it shows)
            tags["fitgap.plots"] = "rendered in the background" if render else \
                "skipped: trials ended faster than plots" if plot else "not rendered (--plots)"
        for i in range(0, len(params), _MAX_PARAMS):
            self.client.log_batch(run_id, params=params[i : i + _MAX_PARAMS])
        for i in range(0, len(metrics), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS])
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in list(tags.items())[:_MAX_TAGS]])
        self.log_files(run_id, record.artifacts)
        self.client.set_terminated(run_id, _STATUS[record.state], end_time=int(record.finished_at * 1000))
        if render:  # the run was started by the coordinator, in another process: its artifact URI is read back
            if self._plotter is None:
                self._plotter = _Plotter(self.client.tracking_uri)
            self._plotter.submit(self.client.get_run(run_id).info.artifact_uri, record, diagnosis.overfit_epoch)

    def log_files(self, run_id: str, files: Mapping[str, bytes], artifact_path: str | None = None) -> None:
        """Artifacts given as bytes (text or binary), in one call."""
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="fitgap-artifacts-") as folder:
            for name, content in files.items():
                target = Path(folder, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            self.client.log_artifacts(run_id, folder, artifact_path)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the plots of every finished trial are rendered and logged (ends the plotting process)."""
        if self._plotter is not None:
            self._plotter.close(timeout)
            self._plotter = None

    def find_study_run(self, study: str) -> StudyRun | None:
        """The study's parent run, or None; creates nothing."""
        experiment_id = self.experiment(study, create=False)
        if experiment_id is None:
            return None
        found = self.client.search_runs(
            [experiment_id], "tags.`fitgap.role` = 'study'", run_view_type=ViewType.ALL, max_results=1
        )
        return StudyRun(experiment_id, found[0].info.run_id) if found else None

    def fail_run(self, run_id: str, reason: str) -> None:
        """Close a run whose trial ended without a record (its process died): never leave it RUNNING."""
        self.client.set_tag(run_id, "fitgap.state", "FAIL")
        self.client.set_tag(run_id, "fitgap.reason", reason)
        self.client.set_terminated(run_id, "FAILED")

    def finish_study(self, study: StudyRun, status: str = "FINISHED") -> None:
        self.client.set_terminated(study.run_id, status)

    def running_trial_runs(self, study: StudyRun) -> list[str]:
        runs = self.client.search_runs(
            [study.experiment_id],
            f"tags.`mlflow.parentRunId` = '{study.run_id}' and attributes.status = 'RUNNING'",
        )
        return [run.info.run_id for run in runs]

    def delete_study(self, study: str) -> bool:
        experiment_id = self.experiment(study, create=False)
        if experiment_id is None:
            return False
        # A deleted experiment keeps its name in MLflow: rename it first so that the study's name can be reused.
        self.client.rename_experiment(experiment_id, f"{study}-deleted-{int(time.time())}")
        self.client.delete_experiment(experiment_id)
        return True


def _text(value: Any) -> str:
    return str(value)[:6000]


def feed_pipe(pending: queue.Queue, process: subprocess.Popen) -> bool:
    """A feeder thread's work: write `pending`'s byte strings to the process's stdin until None comes, then close it.
    False when the process went away first."""
    alive = True
    while alive and (data := pending.get()) is not None:
        try:
            process.stdin.write(data)
            process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            alive = False
    try:
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    return alive


class _Plotter:
    """The plotting process (`python -m tracking.plots`): it gets the tracking URI, then (artifact URI, record,
    overfit epoch) triples, pickled on its stdin, and logs each trial's PNGs to the run's artifacts — never the
    tracking database, so it takes no lock the coordinator waits for. A process rather than a thread, niced: ~100 ms
    of rendering per plot must not compete with the coordinator for the GIL. A feeder thread writes the pipe (a
    400-epoch record is larger than a pipe's buffer, and the coordinator must not wait for a busy plotter). A plot that
    fails is a warning on stderr, never a failed study. When trials end faster than their plots render (tiny models,
    fused batches), plotting skips trials while MAX_IN_FLIGHT are not rendered yet (the process writes a byte on its
    stdout per trial done), so that closing the study waits seconds, not minutes. It runs at nice 19, yet on two busy
    cores it still took 12-17% of the CPU: hence `--plots best` by default."""

    MAX_IN_FLIGHT = 16

    def __init__(self, tracking_uri: str):
        self.process = subprocess.Popen([sys.executable, "-m", "tracking.plots"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
        self.pending: queue.Queue = queue.Queue()
        self.submitted = self.rendered = 0
        self.feeder = threading.Thread(target=self._feed, daemon=True, name="fitgap-plots")
        self.feeder.start()
        threading.Thread(target=self._count, daemon=True, name="fitgap-plots-done").start()
        self.pending.put(pickle.dumps(tracking_uri))  # on the pipe, not the command line: it may hold a password

    def has_room(self) -> bool:
        return self.submitted - self.rendered < self.MAX_IN_FLIGHT

    def _count(self) -> None:
        while self.process.stdout.read(1):
            self.rendered += 1

    def submit(self, artifact_uri: str, record: TrialRecord, overfit_epoch: int | None) -> None:
        self.submitted += 1
        self.pending.put(pickle.dumps((artifact_uri, record, overfit_epoch), protocol=pickle.HIGHEST_PROTOCOL))

    def _feed(self) -> None:
        if not feed_pipe(self.pending, self.process):
            _log.warning("the plotting process has exited (code %s): no more trial plots", self.process.poll())

    def close(self, timeout: float | None = None) -> None:
        """Wait for every submitted trial's plots (at most `timeout` seconds), then end the process."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.pending.put(None)
        self.feeder.join(timeout)
        try:
            self.process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log.warning("the plotting process took over %s s: stopped, some trial plots are missing", timeout)
            self.process.kill()
            self.process.wait()
