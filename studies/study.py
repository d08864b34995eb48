"""One study across its three stores: Optuna (the engine), MLflow and the results database.

`StudyHandle.open` checks everything that can be wrong (a changed spec, changed data, a deleted experiment) before it
writes anything; afterwards it is the only writer of the study's trials on this machine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import warnings
from pathlib import Path

import optuna
import yaml

from studies.slots import Slot
from studies.stores import StoreError, Stores
from sweeps.space import make_sampler
from sweeps.spec import SpecError, SweepSpec, changed_field, parse_spec
from tracking.mlflow_sink import MlflowSink, StudyRun
from tracking.records import TrialRecord
from tracking.results import ResultsDB

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The heartbeat (the only way to fail the trials of a killed coordinator) is marked experimental; users needn't care.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 120  # well above the longest stall of a coordinator's loop (a slow MLflow write, say)
_STATES = {"COMPLETE": optuna.trial.TrialState.COMPLETE, "PRUNED": optuna.trial.TrialState.PRUNED,
           "FAIL": optuna.trial.TrialState.FAIL}
_FINISHED = tuple(_STATES.values())


def derive_seed(*parts) -> int:
    """A 31-bit seed from the study seed and what must make it distinct (a trial number, a launch...)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def open_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"pool_pre_ping": True},
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=GRACE_PERIOD_S,
    )


def load_study(name: str, stores: Stores) -> optuna.Study:
    """An existing study, or StoreError naming the known ones. Never creates a store."""
    if stores.missing():
        raise StoreError(f"unknown study {name!r}: no studies in {stores.workspace}")
    storage = open_storage(stores.storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StoreError(f"unknown study {name!r}; known: {', '.join(known) or 'none'}") from None


def stored_spec(study: optuna.Study) -> SweepSpec:
    return parse_spec({**study.user_attrs["fitgap.spec"], "trials": study.user_attrs["fitgap.trials"]})


class StudyHandle:
    def __init__(self, spec, stores, study, study_run, sink, results):
        self.spec: SweepSpec = spec
        self.stores: Stores = stores
        self.study: optuna.Study = study
        self.study_run: StudyRun = study_run
        self.sink: MlflowSink = sink
        self.results: ResultsDB = results

    @classmethod
    def open(cls, spec: SweepSpec, stores: Stores, dataset_hash: str, trials: int | None = None) -> "StudyHandle":
        """Create or resume the study; `trials` replaces the stored budget."""
        dumped = spec.model_dump(mode="json", exclude={"trials"})
        existing = _find(spec.name, stores)
        if existing is not None:
            changed = changed_field(existing.user_attrs["fitgap.spec"], dumped)
            if changed:
                name, was, now = changed
                raise SpecError(f"spec field `{name}` changed since study {spec.name!r} was created (stored {was!r}, "
                                f"now {now!r}); only `trials` may change: give the sweep a new `name` to start afresh")
            if existing.user_attrs.get("fitgap.dataset_hash") != dataset_hash:
                raise SpecError(f"`dataset`: the data of study {spec.name!r} changed since it was created "
                                f"(hash {existing.user_attrs.get('fitgap.dataset_hash')}, now {dataset_hash})")
        sink = MlflowSink(stores.tracking_uri, stores.artifact_root)
        sink.experiment(spec.name, create=False)  # a deleted experiment is an error before anything is written
        stores.workspace.mkdir(parents=True, exist_ok=True)
        storage = open_storage(stores.storage)
        if existing is None:
            study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions)
            study.set_user_attr("fitgap.spec", dumped)
            study.set_user_attr("fitgap.dataset_hash", dataset_hash)
            for params in spec.enqueue:
                study.enqueue_trial(params)
        else:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        budget = trials or (spec.trials if existing is None else study.user_attrs["fitgap.trials"])
        study.set_user_attr("fitgap.trials", budget)
        launches = study.user_attrs.get("fitgap.launches", 0)
        study.set_user_attr("fitgap.launches", launches + 1)
        # A resumed study must not replay the suggestions of the first launch: the sampler's seed moves on.
        study.sampler = make_sampler(spec, derive_seed(spec.seed, "sampler", len(study.trials), launches))
        study_run = sink.study_run(spec.name, _study_tags(spec, dataset_hash), yaml.safe_dump(dumped, sort_keys=False))
        return cls(spec, stores, study, study_run, sink, ResultsDB(stores.results_url))

    @property
    def budget(self) -> int:
        return self.study.user_attrs["fitgap.trials"]

    def used_budget(self) -> int:
        """Finished trials count against the budget; a failure that was retried counts once."""
        trials = self.study.get_trials(deepcopy=False, states=_FINISHED)
        return sum(1 for t in trials if not t.user_attrs.get("fitgap.retried"))

    def fail_stale_trials(self) -> None:
        """Fail trials whose coordinator stopped beating (killed), and close their MLflow runs."""
        optuna.storages.fail_stale_trials(self.study)
        running = {t.user_attrs.get("fitgap.mlflow_run_id")
                   for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        for run_id in set(self.sink.running_trial_runs(self.study_run)) - running:
            self.sink.fail_run(run_id, "coordinator died")

    def heartbeat(self, trials: list[optuna.Trial]) -> None:
        for trial in trials:
            self.study._storage.record_heartbeat(trial._trial_id)

    def start_trial_run(self, trial: optuna.Trial, seed: int, slot: Slot) -> str:
        self.study._storage.record_heartbeat(trial._trial_id)
        run_id = self.sink.start_trial(self.study_run, self.spec.name, trial.number,
                                       {"fitgap.study": self.spec.name, "fitgap.seed": seed,
                                        "fitgap.device": slot.device, "fitgap.slot": slot.index})
        trial.set_user_attr("fitgap.mlflow_run_id", run_id)  # so a resumed launch can close it if orphaned
        trial.set_user_attr("fitgap.seed", seed)
        return run_id

    def record(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Tracking first, Optuna last (see the coordinator's docstring)."""
        self.sink.finish_trial(record)
        self.results.write_trial(record)
        if record.reason:
            trial.set_user_attr("fitgap.reason", record.reason)
        if record.state == "COMPLETE":
            self.study.tell(trial, list(record.values))
        else:
            self.study.tell(trial, state=_STATES[record.state])

    def close(self, status: str = "FINISHED") -> None:
        self.sink.finish_study(self.study_run, status)
        self.results.close()


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
    commit = _git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
