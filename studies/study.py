"""Coordinator side: one study across its three stores — Optuna (the engine), MLflow and the results database.

`StudyHandle.open` checks everything that can be wrong (a changed spec, changed data, a deleted experiment) before it
writes anything; afterwards it is the only writer of the study's trials on this machine.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import time
import warnings
import zlib
from pathlib import Path

import optuna
import yaml
from mlflow.entities import RunInfo
from sqlalchemy.exc import SQLAlchemyError

from fitgap import sqlite
from fitgap.errors import scrub
from fitgap.studies.keeping import ModelKeeper, PlotPolicy
from fitgap.studies.journal import open_journal
from fitgap.studies.stores import StoreError, Stores, journal_path
from fitgap.sweeps.pruning import make_pruner
from fitgap.sweeps.space import derive_seed, make_sampler, trial_params
from fitgap.sweeps.spec import SpecError, SweepSpec, changed_field, parse_spec
from fitgap.sweeps.vocabulary import excerpt
from fitgap.tracking.mlflow_sink import MlflowSink, StudyRun
from fitgap.tracking.records import EpochRecord, TrialRecord
from fitgap.tracking.results import ResultsDB, error_line, redact, sqlite_path

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The heartbeat (the only way to fail the trials of a killed coordinator) is marked experimental; users needn't care.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

# A coordinator beats for its running trials every HEARTBEAT_S (whole seconds: Optuna's storage takes an int); trials
# silent for longer than the grace period are failed and retried. The grace is well above the longest stall of a
# coordinator's loop (a slow MLflow write, say).
HEARTBEAT_S = max(1, round(float(os.environ.get("FITGAP_HEARTBEAT_S", "10"))))
GRACE_PERIOD_S = int(os.environ.get("FITGAP_GRACE_S", "120"))
TrialState = optuna.trial.TrialState
_STATES = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}
_FINISHED = tuple(_STATES.values())


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage `url` names: a journal file (`studies.journal`, the workspace's default), else an RDB URL."""
    path = journal_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open_journal(path)
        except (OSError, ValueError) as exc:  # unwritable, or not a journal
            raise StoreError(f"`--storage`: cannot open {path}: {scrub(error_line(exc))}") from None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_PERIOD_S)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # a bad URL, no such driver, unreachable
        raise StoreError(f"`--storage`: cannot open {redact(url)}: {scrub(error_line(exc))}") from None


def load_study(name: str, stores: Stores) -> optuna.Study:
    """An existing study, or StoreError naming the known ones. Never creates a store."""
    if stores.missing():
        raise StoreError(f"unknown study {name!r}: no studies yet ({stores.storage_file} does not exist)")
    storage = open_storage(stores.storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StoreError(f"unknown study {name!r}; known: {', '.join(known) or 'none'}") from None


def stored_spec(study: optuna.Study, data_dir: Path) -> SweepSpec:
    """The spec a study was created with (it travels in the storage); relative data paths resolve in `data_dir`."""
    spec = parse_spec({**study.user_attrs["fitgap.spec"], "trials": study.user_attrs["fitgap.trials"]},
                      source=f"the spec stored with study {study.study_name!r}")
    spec._base_dir = data_dir.resolve()
    return spec


class StudyHandle:
    def __init__(self, spec, stores, storage, study, study_run, sink, results, save_models="best", plots="best"):
        self.spec: SweepSpec = spec
        self.stores: Stores = stores
        self.storage: optuna.storages.BaseStorage = storage
        self.study: optuna.Study = study
        self.study_run: StudyRun = study_run
        self.sink: MlflowSink = sink
        self.results: ResultsDB = results
        self.models = ModelKeeper(save_models, stores.workspace / "models" / spec.name, study, sink)
        self.plots = PlotPolicy(plots, study)

    @staticmethod
    def check(spec: SweepSpec, stores: Stores, dataset_hash: str) -> None:
        """Everything that can forbid a launch, found before anything is written."""
        stores.check()
        existing = _find(spec.name, stores)
        if existing is not None:
            changed = changed_field(existing.user_attrs["fitgap.spec"], spec.model_dump(mode="json", exclude={"trials"}))
            if changed:
                name, was, now = changed
                raise SpecError(f"spec field `{name}` changed since study {spec.name!r} was created (stored "
                                f"{excerpt(was)}, now {excerpt(now)}); only `trials` may change: give the sweep a new "
                                "`name` to start afresh")
            if existing.user_attrs.get("fitgap.dataset_hash") != dataset_hash:
                raise SpecError(f"`dataset`: the data of study {spec.name!r} differ from the data it was created "
                                f"with (hash {existing.user_attrs.get('fitgap.dataset_hash')}, now {dataset_hash})")
        tracking_file = sqlite_path(stores.tracking_uri)
        if tracking_file is None or tracking_file.exists():  # opening a missing SQLite store would create it
            with stores.creation_lock():  # another launch may be creating it: MLflow would migrate it at once
                MlflowSink(stores.tracking_uri, stores.artifact_root).experiment(spec.name, create=False)

    @classmethod
    def open(cls, spec: SweepSpec, stores: Stores, dataset_hash: str, trials: int | None = None,
             save_models: str = "best", plots: str = "best") -> "StudyHandle":
        """Create or resume the study (after `check`); `trials` replaces the stored budget."""
        dumped = spec.model_dump(mode="json", exclude={"trials"})
        cls.check(spec, stores, dataset_hash)
        existing = _find(spec.name, stores)
        stores.workspace.mkdir(parents=True, exist_ok=True)
        with stores.creation_lock():  # MLflow migrates a new store: with `fitgap ui` starting, one at a time
            sink = MlflowSink(stores.tracking_uri, stores.artifact_root)
            sink.experiment(spec.name)
            storage = open_storage(stores.storage)
            sqlite.use_wal(sqlite_path(stores.storage), sqlite_path(stores.tracking_uri))  # created and migrated
        if existing is None:
            study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions)
            study.set_user_attr("fitgap.spec", dumped)
            study.set_user_attr("fitgap.dataset_hash", dataset_hash)
            for params in spec.enqueue:
                study.enqueue_trial(params)
        else:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        if study.metric_names != list(spec.metrics):  # optuna-dashboard and `study.trials_dataframe()` name them
            study.set_metric_names(list(spec.metrics))
        budget = trials or (spec.trials if existing is None else study.user_attrs["fitgap.trials"])
        study.set_user_attr("fitgap.trials", budget)
        study.set_user_attr("fitgap.stop", False)  # launching again overrides an earlier `fitgap stop`
        study.sampler = make_sampler(spec, derive_seed(spec.seed, "sampler"))
        study.pruner = make_pruner(spec.pruner, spec.epochs)
        study_run = sink.study_run(spec.name, _study_tags(spec, dataset_hash),
                                   yaml.safe_dump(dumped, sort_keys=False), spec.params)
        return cls(spec, stores, storage, study, study_run, sink, ResultsDB(stores.results_url), save_models,
                   plots)

    @property
    def budget(self) -> int:
        return self.study.user_attrs["fitgap.trials"]

    def used_budget(self) -> int:
        """Finished trials count against the budget; a failure that was retried counts once (as its retry)."""
        return self._count()[0]

    def remaining(self) -> int:
        """Trials still to ask for, whoever runs them: the budget less finished and running trials."""
        used, running = self._count()
        return self.budget - used - running

    def _count(self) -> tuple[int, int]:
        """(used budget, running trials) from one read of the storage."""
        trials = self.study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.WAITING, TrialState.RUNNING))
        retried = {t.user_attrs["fitgap.retry_of"] for t in trials if "fitgap.retry_of" in t.user_attrs}
        used = sum(1 for t in trials if t.state in _FINISHED and t.number not in retried)
        return used, sum(1 for t in trials if t.state == TrialState.RUNNING)

    @contextlib.contextmanager
    def asking(self):
        """Make the budget check and the ask (or the stale trials' retries) one step across coordinators that share
        a PostgreSQL storage."""
        engine = getattr(self.storage, "engine", None)  # an RDB storage's
        if engine is None or engine.dialect.name != "postgresql":
            yield  # a local file: one coordinator per workspace (`Stores.coordinator_lock`)
            return
        key = zlib.crc32(f"fitgap:{self.spec.name}".encode())
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
                connection.commit()

    def ask(self) -> optuna.Trial:
        """`study.ask()`, without its scan for enqueued trials when the storage holds none: through Optuna's cache
        that scan re-reads every running trial (~1 ms each on SQLite), so asking a fused batch of K cost O(K²)
        reads. The raw storage answers "none waiting" in one query."""
        if self.storage.get_all_trials(self.study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            return self.study.ask()  # a retry or an enqueued point: Optuna pops it
        self.study._thread_local.cached_all_trials = None  # as `ask` does: the sampler sees the latest trials
        return optuna.Trial(self.study, self.study._storage.create_new_trial(self.study._study_id))

    def stop_requested(self) -> bool:
        return bool(self.storage.get_study_user_attrs(self.study._study_id).get("fitgap.stop"))

    def fail_stale_trials(self, retries: int, all_running: bool = False) -> None:
        """Fail (and retry) the trials of coordinators that stopped beating — every RUNNING trial with `all_running`,
        when the caller knows no other coordinator is alive — keeping the epochs their live writes stored, and close
        orphaned MLflow runs and results rows; under the study's lock, so that two coordinators cannot both retry one
        trial."""
        with self.asking():
            self._fail_stale_trials(retries, all_running)

    def _fail_stale_trials(self, retries: int, all_running: bool) -> None:
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            if all_running:
                for trial in running:
                    if trial.user_attrs.get("fitgap.attempt", 0) < retries:
                        self._retry(trial)  # first: a failed trial is never left without its retry
                    self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            else:
                optuna.storages.fail_stale_trials(self.study)
            before = {t._trial_id for t in running}
            for trial in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                if trial._trial_id in before:
                    self._record_stale(trial, retries)
        running = {t.user_attrs.get("fitgap.mlflow_run_id")
                   for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for run_id in set(self.sink.running_trial_runs(self.study_run)) - running:
            self.sink.fail_run(run_id, "coordinator died")
        rows = self.results.running(self.spec.name)
        if rows:  # RUNNING rows of failed trials: their final write was refused (`abandon` on a full disk)
            trials = {t.number: t for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
            for row in rows:
                trial = trials.get(row["number"])
                if trial is not None:
                    reason = trial.user_attrs.get("fitgap.reason", "coordinator died")
                    self.results.write_trial(self._stale_record(trial, reason))

    def abandon(self, trials: list[optuna.Trial], reason: str, retries: int) -> None:
        """Fail these RUNNING trials of this coordinator's with `reason` and retry them, store by store as far as
        each takes writes: Optuna first, since the next launch reads it; what a store refused (on a full disk, every
        write to a WAL database: its log cannot grow), the next launch closes."""
        records = []
        with contextlib.suppress(Exception):  # noqa: BLE001 - the run error that brought us here says why
            for trial in trials:
                self.storage.set_trial_user_attr(trial._trial_id, "fitgap.reason", reason)  # while it may change
                frozen = self.storage.get_trial(trial._trial_id)
                if frozen.user_attrs.get("fitgap.attempt", 0) < retries:
                    self._retry(frozen)  # before the FAIL: refused (a full disk), the trial stays RUNNING for the next
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                records.append(self._stale_record(frozen, reason))
        for write in (lambda r: r.mlflow_run_id and self.sink.fail_run(r.mlflow_run_id, reason),
                      self.results.write_trial):
            with contextlib.suppress(Exception):  # noqa: BLE001
                for record in records:
                    write(record)

    def _record_stale(self, trial: optuna.trial.FrozenTrial, retries: int) -> None:
        record = self._stale_record(trial, "coordinator died")
        if record.mlflow_run_id:
            self.sink.fail_run(record.mlflow_run_id, record.reason)
        self.results.write_trial(record)
        if trial.user_attrs.get("fitgap.attempt", 0) < retries:
            self._retry(trial)

    def _stale_record(self, trial: optuna.trial.FrozenTrial, reason: str) -> TrialRecord:
        """A FAIL record of a trial that ended without one, keeping what its live writes stored (its epochs, where
        and since when it trained): its RUNNING row, if any, becomes this."""
        now = time.time()
        row, epochs = self._stored(trial.number)
        asked = trial.datetime_start.timestamp() if trial.datetime_start else now
        return TrialRecord(
            study=self.spec.name, number=trial.number, state="FAIL", params=trial_params(self.spec, trial.params),
            values=None, best_epoch=None, epochs=epochs, complexity={}, seed=trial.user_attrs.get("fitgap.seed", 0),
            device=row.get("device") or "unknown", slot=-1 if row.get("slot") is None else row["slot"],
            started_at=row.get("started_at") or asked, finished_at=now, reason=reason,
            mlflow_run_id=trial.user_attrs.get("fitgap.mlflow_run_id"), repeats=self.spec.repeats,
            executor=row.get("executor") or "keras", wait_s=row.get("wait_s"),
        )

    def _stored(self, number: int) -> tuple[dict, tuple[EpochRecord, ...]]:
        """The results row of trial `number` ({} if none, or if the database cannot be read) and its epochs."""
        try:
            row = next((r for r in self.results.running(self.spec.name) if r["number"] == number), None)
            rows = self.results.epochs(self.spec.name, number) if row else []
        except SQLAlchemyError:  # a store failing mid-launch (`abandon`): the record says less
            return {}, ()
        epochs = tuple(EpochRecord(number, e["epoch"], {k: v for k, v in e.items() if k not in ("epoch", "ended_at")
                                                        and v is not None}, e["ended_at"]) for e in rows)
        return row or {}, epochs

    def _retry(self, trial) -> None:
        """Enqueue the trial's params again, once: a retry is written before its trial's FAIL, which a failing store
        may refuse, and the next launch then retries the RUNNING trial (`_fail_stale_trials`)."""
        if any(t.user_attrs.get("fitgap.retry_of") == trial.number for t in self.study.get_trials(deepcopy=False)):
            return
        self.study.enqueue_trial(trial.params, user_attrs={"fitgap.retry_of": trial.number,
                                                           "fitgap.attempt": trial.user_attrs.get("fitgap.attempt", 0) + 1})

    def heartbeat(self, trials: list[optuna.Trial]) -> None:
        """Beat for these RUNNING trials, where other coordinators may fail them if this one stops beating: not on a
        workspace held alone, whose next launch fails every RUNNING trial it finds (`fail_stale_trials`)."""
        if self.stores.exclusive:
            return
        for trial in trials:
            self.storage.record_heartbeat(trial._trial_id)

    def start_trial_run(self, trial: optuna.Trial, seed: int, repeats: int, params: dict | None = None) -> RunInfo:
        """The trial's MLflow run, named after its searched `params`."""
        self.heartbeat([trial])
        tags = {"fitgap.study": self.spec.name, "fitgap.seed": seed, "fitgap.repeats": repeats}
        if "fitgap.retry_of" in trial.user_attrs:
            tags["fitgap.retry_of"] = trial.user_attrs["fitgap.retry_of"]
        searched = {k: v for k, v in (params or {}).items() if k in self.spec.search}
        run = self.sink.start_trial(self.study_run, trial.number, searched, tags)
        trial.set_user_attr("fitgap.mlflow_run_id", run.run_id)  # so a resumed launch can close it if orphaned
        trial.set_user_attr("fitgap.seed", seed)
        return run

    def conclude(self, trial: optuna.Trial, record: TrialRecord, retry: bool = False,
                 attributes: dict | None = None) -> None:
        """Tell Optuna, once the record is in MLflow and the results database (see the coordinator's docstring),
        with the diagnosis's `attributes` and the reason as user attributes; a retry re-enqueues the same params."""
        for name, value in (attributes or {}).items():
            trial.set_user_attr(name, value)
        if record.reason:
            trial.set_user_attr("fitgap.reason", record.reason)
        if retry:  # before the tell (see `_retry`)
            self._retry(self.study._storage.get_trial(trial._trial_id))
        if record.state == "COMPLETE":
            self.study.tell(trial, list(record.values))
        else:
            self.study.tell(trial, state=_STATES[record.state])

    def close(self, status: str = "FINISHED") -> None:
        """End the launch: the kept models cut down and logged (`keeping.ModelKeeper`), the parent run closed."""
        self.models.close()
        self.sink.finish_study(self.study_run, status, self._summary_metrics())
        self.results.close()

    def _summary_metrics(self) -> dict[str, float]:
        """The study's run's metrics: trials by state, and the best value of each objective (single-objective)."""
        trials = self.study.get_trials(deepcopy=False)
        summary = {f"trials_{state.lower()}": sum(t.state.name == state for t in trials)
                   for state in ("COMPLETE", "PRUNED", "FAIL")}
        if len(self.spec.metrics) == 1 and summary["trials_complete"]:
            summary[f"best_{self.spec.metrics[0]}"] = self.study.best_value
        return summary


def _find(name: str, stores: Stores) -> optuna.Study | None:
    try:
        return load_study(name, stores)
    except StoreError:
        return None


def _study_tags(spec: SweepSpec, dataset_hash: str) -> dict[str, str]:
    tags = {"fitgap.study": spec.name, "fitgap.dataset_hash": dataset_hash, "fitgap.sampler": spec.sampler}
    for package in ("fitgap", "tensorflow", "keras", "optuna", "mlflow", "sqlalchemy"):
        try:
            tags[f"fitgap.version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    # Provenance: the commit of the repository holding the spec (MLflow's own tag) and of fitgap's, each flagged
    # when its tracked files have uncommitted changes (then the commit alone does not say what ran).
    for commit, dirty, where in (("mlflow.source.git.commit", "fitgap.spec.git.dirty", spec.base_dir),
                                 ("fitgap.source.git.commit", "fitgap.source.git.dirty", Path(__file__).parent)):
        found = _git_state(where)
        if found:
            tags[commit], tags[dirty] = found
    return tags


def _git_state(where: Path) -> tuple[str, str] | None:
    """(commit, "true" | "false": uncommitted changes to tracked files) of the git repository holding `where`."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return (commit, str(bool(changes)).lower()) if commit and changes is not None else None
