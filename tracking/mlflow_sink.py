"""Tracking side: MLflow as a sink of finished trials — one experiment per study, a parent run per study, a nested
run per trial. Never imports studies, training or TensorFlow.

Everything goes through an explicit `MlflowClient(tracking_uri=...)` (no global fluent state), except where the
tracking database's schema is verified (`mlflow_tables`): there a trial's run is created, and its curves, and at its
end its params, tags and status, are written straight into MLflow's tables, each in one transaction; else through
the client, the points in a few `log_batch` calls, not one call per point: each call is a round trip to the store. A running trial's new points come as they are flushed
(`log_live`), the rest when it ends (`finish_trial`); each point once, stamped with the time its epoch ended.

A trial's diagnosis (`tracking.diagnosis`) becomes `fitgap.*` tags. Its plots (learning curves, and the decision
boundary when the executor sent `boundary.npz`) are rendered by a plotting process, which logs them itself
(`tracking.plots.main`), so that rendering never delays the next trial's writes; `flush()` waits for it (the
study's close does).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunInfo, RunTag, ViewType
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from fitgap.channel import Child
from fitgap.errors import UsageError
from fitgap.tracking.diagnosis import Diagnosis, diagnose_trial
from fitgap.tracking.mlflow_tables import RunTables
from fitgap.tracking.records import EpochRecord, LiveRecord, TrialRecord

for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # store creation logs its migrations at INFO
# MLflow's store logs every database error with its traceback, then raises it: fitgap turns the raised error into
# one line (a full disk, a lost server), so the log would only put a traceback on the user's terminal.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # else MLflow 3's UI opens on GenAI pages
_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100  # log_batch limits
_log = logging.getLogger(__name__)


class TrackingError(UsageError):
    """MLflow cannot take this study (for example, its experiment was deleted)."""


@dataclass(frozen=True)
class StudyRun:
    experiment_id: str
    run_id: str


class MlflowSink:
    def __init__(self, tracking_uri: str, artifact_root: Path | None = None):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.artifact_root = artifact_root  # local stores only: else MLflow writes artifacts under the cwd
        self._plotter: _Plotter | None = None  # started by the first trial that has something to plot
        self._logged_live: dict[str, int] = {}  # run id -> epochs of its curve logged by `log_live`
        self._tables: RunTables | None | bool = False  # False: not opened yet (the store may not exist yet)

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

    def study_run(self, study: str, tags: Mapping[str, str], spec_yaml: str,
                  params: Mapping[str, Any] | None = None) -> StudyRun:
        """The study's parent run, found by tag or created (with the spec and the study's fixed `params`, which
        never change); marked RUNNING while a launch works on it."""
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
            fixed = [Param(k, _text(v)) for k, v in (params or {}).items()]
            for i in range(0, len(fixed), _MAX_PARAMS):
                self.client.log_batch(run_id, params=fixed[i : i + _MAX_PARAMS])
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return StudyRun(experiment_id, run_id)

    def start_trial(self, study: StudyRun, number: int, searched: Mapping[str, Any],
                    tags: Mapping[str, Any]) -> RunInfo:
        """The trial's run, nested under the study's, named for what it is (`run_name`)."""
        tags = {"mlflow.parentRunId": study.run_id, "fitgap.trial": str(number), "fitgap.state": "RUNNING"} | {
            k: str(v) for k, v in tags.items()
        }
        name = run_name(number, searched)
        created = self._open_tables() and self._tables.create_run(study.experiment_id, name, tags,
                                                                  int(time.time() * 1000))
        return created or self.client.create_run(study.experiment_id, run_name=name, tags=tags).info

    def log_live(self, live: LiveRecord) -> None:
        """A running trial's new epoch points (`finish_trial` logs only those after them)."""
        self._log_metrics(live.mlflow_run_id, _points(live.epochs, int(time.time() * 1000)))
        self._logged_live[live.mlflow_run_id] = live.epochs[-1].epoch + 1

    def finish_trial(self, record: TrialRecord, plot: bool = True, diagnosis: Diagnosis | None = None) -> None:
        """Params, complexity, every epoch's metrics not logged live, tags and artifacts, then the final status; the
        plots, rendered in the background, if `plot` (see `studies.study.StudyHandle.wants_plots`). `diagnosis`: the
        record's, when the caller has it (the tracking process gives the results database the same one); else
        computed here."""
        run_id = record.mlflow_run_id
        now = int(time.time() * 1000)
        params = [Param(k, _text(v)) for k, v in record.params.items()]
        params += [Param(k, str(v)) for k, v in record.complexity.items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in record.complexity.items()]  # also metrics, to sort by
        logged = self._logged_live.pop(run_id, 0)
        metrics += _points([e for e in record.epochs if e.epoch >= logged], now)
        metrics += [Metric(k, v, now, 0) for k, v in (("duration_s", record.duration_s), ("wait_s", record.wait_s))
                    if v is not None]
        # What the results database calls them: each metric at the best epoch (the objective's) and at the last
        if record.best_epoch is not None:
            metrics += [Metric(f"best_{k}", v, now, record.best_epoch) for k, v in record.best.items()]
        if record.epochs:
            metrics += [Metric(f"final_{k}", v, now, record.epochs[-1].epoch) for k, v in record.final.items()]
        tags = {"fitgap.state": record.state, "fitgap.device": record.device, "fitgap.slot": record.slot,
                "fitgap.executor": record.executor}
        if record.executor_reason:
            tags["fitgap.executor_reason"] = record.executor_reason[:5000]
        if record.best_epoch is not None:
            tags["fitgap.best_epoch"] = record.best_epoch
        if record.reason:
            tags["fitgap.reason"] = record.reason[:5000]
        if diagnosis is None:
            diagnosis = diagnose_trial(record)
        tags |= diagnosis.tags()
        metrics += [Metric(k, float(v), now, 0) for k, v in diagnosis.numbers().items()]  # to sort and chart by
        render = plot and bool(record.epochs) and (self._plotter is None or self._plotter.has_room())
        if record.epochs:  # why a run has no learning_curves.png (`fitgap report` still plots the trials it shows)
            tags["fitgap.plots"] = "rendered in the background" if render else \
                "skipped: trials ended faster than plots" if plot else "not rendered (--plots)"
        tags = [RunTag(k, str(v)) for k, v in list(tags.items())[:_MAX_TAGS]]
        # The run was started by the coordinator, in another process: its record says where its artifacts go
        artifact_uri = record.artifact_uri or self.client.get_run(run_id).info.artifact_uri
        self.log_files(run_id, record.artifacts, artifact_uri=artifact_uri)
        status, end_time = _STATUS[record.state], int(record.finished_at * 1000)
        if not self._open_tables() or not self._tables.finish(run_id, metrics, params, tags, status, end_time):
            self._log_metrics(run_id, metrics)
            for i in range(0, max(len(params), 1), _MAX_PARAMS):  # params and tags in one call (mostly)
                self.client.log_batch(run_id, params=params[i : i + _MAX_PARAMS], tags=tags if i == 0 else [])
            self.client.set_terminated(run_id, status, end_time=end_time)
        if render:
            if self._plotter is None:
                self._plotter = _Plotter(self.client.tracking_uri)
            self._plotter.submit(artifact_uri, record, diagnosis.overfit_epoch)

    def _open_tables(self) -> RunTables | None:
        if self._tables is False:
            self._tables = RunTables.open(self.client.tracking_uri)
        return self._tables

    def _log_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        if self._open_tables() and self._tables.write(run_id, metrics):
            return
        for i in range(0, len(metrics), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS])

    def log_files(self, run_id: str, files: Mapping[str, bytes], artifact_path: str | None = None,
                  artifact_uri: str | None = None) -> None:
        """Artifacts given as bytes (text or binary), in one call; to the run's `artifact_uri` when known (else
        MLflow reads the whole run to find it)."""
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="fitgap-artifacts-") as folder:
            for name, content in files.items():
                target = Path(folder, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            if artifact_uri is None:
                self.client.log_artifacts(run_id, folder, artifact_path)
            else:
                repository = get_artifact_repository(artifact_uri, tracking_uri=self.client.tracking_uri)
                repository.log_artifacts(folder, artifact_path)

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

    def finish_study(self, study: StudyRun, status: str = "FINISHED",
                     summary: Mapping[str, float] | None = None) -> None:
        """Close the study's run, with its summary metrics (the best value, trials by state), so that its own chart
        view shows something."""
        if summary:
            now = int(time.time() * 1000)
            self.client.log_batch(study.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
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


_SHORT = {"learning_rate": "lr", "regularization_weight": "w", "decay_rate": "decay", "decay_steps": "every",
          "batch_size": "batch", "momentum": "m"}


def run_name(number: int, searched: Mapping[str, Any]) -> str:
    """A trial's run name says what it is: `t023 lr=0.05 relu l2 w=0.003` (choices bare, numbers named)."""
    parts = [f"t{number:03d}"]
    for name, value in searched.items():
        if isinstance(value, str):
            parts.append(value)
        elif not isinstance(value, (list, tuple, dict)):
            parts.append(f"{_SHORT.get(name, name)}={f'{value:.2g}' if isinstance(value, float) else value}")
    return " ".join(parts)[:250]


def _text(value: Any) -> str:
    return str(value)[:6000]


def _points(epochs: list[EpochRecord] | tuple[EpochRecord, ...], now: int) -> list[Metric]:
    """Every metric of every epoch, at step = the epoch, stamped (ms) when the epoch ended (else `now`)."""
    points = []
    for e in epochs:
        stamp = now if e.ended_at is None else int(e.ended_at * 1000)
        points += [Metric(k, v, stamp, e.epoch) for k, v in e.metrics.items()]
    return points


class _Plotter:
    """The plotting process (`fitgap.tracking.plots`): it gets the tracking URI, then (artifact URI, record,
    overfit epoch) triples (`fitgap.channel`), and logs each trial's PNGs to the run's artifacts — never the
    tracking database, so it takes no lock the coordinator waits for. A process rather than a thread, niced: rendering
    must not compete with the coordinator for the GIL. A plot that fails is a warning on
    stderr, never a failed study. When trials end faster than their plots render (tiny models, fused batches),
    plotting skips trials while MAX_IN_FLIGHT are not rendered yet (the process answers each trial's number once it
    is done), so that closing the study waits seconds, not minutes. Even at nice 19 it takes a share of two busy
    cores: hence `--plots best` by default."""

    MAX_IN_FLIGHT = 16

    def __init__(self, tracking_uri: str):
        self.submitted = self.rendered = 0
        self.child = Child("fitgap.tracking.plots", self._one_done, self._exited, name="fitgap-plots")
        self.child.send(tracking_uri)  # on the pipe, not the command line: it may hold a password

    def has_room(self) -> bool:
        return self.submitted - self.rendered < self.MAX_IN_FLIGHT

    def _one_done(self, number: int) -> None:
        self.rendered += 1

    def _exited(self, code: int) -> None:
        if code != 0:
            _log.warning("the plotting process ended (exit code %s): some trial plots are missing", code)

    def submit(self, artifact_uri: str, record: TrialRecord, overfit_epoch: int | None) -> None:
        self.submitted += 1
        self.child.send((artifact_uri, record, overfit_epoch))

    def close(self, timeout: float | None = None) -> None:
        """Wait for every submitted trial's plots (at most `timeout` seconds), then end the process."""
        self.child.close_input()
        self.child.wait(timeout)
