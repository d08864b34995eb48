"""fitgap's Python API; the CLI is a thin shell around it. Nothing here imports TensorFlow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from studies.coordinator import MAX_TRIALS_PER_EXECUTOR, Coordinator
from studies.keras.datasets import Dataset, load_dataset
from studies.slots import plan_slots
from studies.stores import Stores
from studies.study import StudyHandle, load_study, open_storage, stored_spec
from sweeps.space import check_sampler
from sweeps.spec import SpecError, SweepSpec, check_builder, check_input_shape, load_spec, parse_spec
from tracking.mlflow_sink import MlflowSink
from tracking.records import TrialRecord
from tracking.results import ResultsDB


@dataclass(frozen=True)
class Summary:
    study: str
    budget: int
    counts: dict[str, int]  # trials of the whole study by state
    best: list[dict[str, Any]]  # the best trial, or the Pareto set of a multi-objective study
    metrics: list[str]
    finished: list[TrialRecord] = field(default_factory=list)  # trials this launch finished
    elapsed_s: float = 0.0
    experiment_id: str | None = None


class Interrupted(Exception):
    """Ctrl-C during a launch: running trials were recorded as failed ("interrupted")."""

    def __init__(self, summary: Summary):
        super().__init__("interrupted")
        self.summary = summary


def validate(spec_or_path: SweepSpec | str | Path | dict, allow_builder: bool = False) -> tuple[SweepSpec, Dataset]:
    """Check a spec and its data; create nothing. A spec naming a `model.builder` needs allow_builder=True."""
    spec = _as_spec(spec_or_path)
    check_sampler(spec)
    check_builder(spec, allow_builder)
    try:
        data = load_dataset(spec.dataset.model_dump(), spec.base_dir)
    except (OSError, ValueError) as e:
        raise SpecError(f"`dataset`: {e}") from None
    check_input_shape(spec, data.input_shape)
    return spec, data


def launch(spec_or_path: SweepSpec | str | Path | dict, *, trials: int | None = None, timeout: float | None = None,
           gpus: str | None = None, slots_per_gpu: int = 1, cpu_slots: int | None = None, retries: int = 1,
           max_trials_per_executor: int = MAX_TRIALS_PER_EXECUTOR, allow_builder: bool = False,
           on_trial: Callable[[TrialRecord, int, int], None] | None = None, **store_options) -> Summary:
    """Create or resume the spec's study and run it to its budget; `trials` replaces the stored budget.

    gpus, slots_per_gpu, cpu_slots: see `studies.slots.plan_slots`. retries: how often a trial whose executor or
    coordinator died is retried with the same params. on_trial(record, used, budget) is called as each trial
    finishes. store_options: workspace, storage, tracking_uri, results_url (see `Stores.resolve`).
    """
    if trials is not None and trials <= 0:
        raise SpecError(f"`trials` must be > 0, but got {trials}")
    spec, data = validate(spec_or_path, allow_builder)
    slots = plan_slots(gpus, slots_per_gpu, cpu_slots)
    stores = Stores.resolve(**store_options)
    StudyHandle.check(spec, stores, data.content_hash)
    with stores.coordinator_lock():
        handle = StudyHandle.open(spec, stores, data.content_hash, trials)
        return _run(handle, Coordinator(handle, slots, timeout, retries, max_trials_per_executor, on_trial))


def worker(name: str, *, data_dir: str | Path = ".", timeout: float | None = None, gpus: str | None = None,
           slots_per_gpu: int = 1, cpu_slots: int | None = None, retries: int = 1,
           max_trials_per_executor: int = MAX_TRIALS_PER_EXECUTOR, allow_builder: bool = False,
           on_trial: Callable[[TrialRecord, int, int], None] | None = None, **store_options) -> Summary:
    """Join an existing study (from another machine): its spec comes from the storage, its data from `data_dir`."""
    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    spec = stored_spec(study, Path(data_dir))
    _, data = validate(spec, allow_builder)
    slots = plan_slots(gpus, slots_per_gpu, cpu_slots)
    StudyHandle.check(spec, stores, data.content_hash)
    with stores.coordinator_lock():
        handle = StudyHandle.open(spec, stores, data.content_hash)
        return _run(handle, Coordinator(handle, slots, timeout, retries, max_trials_per_executor, on_trial))


def create(spec_or_path: SweepSpec | str | Path | dict, *, trials: int | None = None, allow_builder: bool = False,
           **store_options) -> Summary:
    """Create (or check) the spec's study without running trials: workers on other machines join it."""
    spec, data = validate(spec_or_path, allow_builder)
    stores = Stores.resolve(**store_options)
    StudyHandle.check(spec, stores, data.content_hash)
    handle = StudyHandle.open(spec, stores, data.content_hash, trials)
    handle.close()
    return _summary(handle.study, handle=handle)


def stop(name: str, **store_options) -> None:
    """Ask every coordinator of the study, on any machine, to finish its running trials and exit."""
    study = load_study(name, Stores.resolve(**store_options))
    study.set_user_attr("fitgap.stop", True)


def delete(name: str, **store_options) -> None:
    """Remove a study from the Optuna storage, MLflow and the results database."""
    stores = Stores.resolve(**store_options)
    load_study(name, stores)  # an unknown study is an error, before anything is deleted
    optuna.delete_study(study_name=name, storage=open_storage(stores.storage))
    MlflowSink(stores.tracking_uri, stores.artifact_root).delete_study(name)
    with ResultsDB(stores.results_url) as results:
        results.delete_study(name)


def _run(handle: StudyHandle, coordinator: Coordinator) -> Summary:
    started = time.time()
    try:
        coordinator.run()
    except KeyboardInterrupt:
        handle.close("KILLED")
        raise Interrupted(_summary(handle.study, coordinator.finished, started, handle)) from None
    except BaseException:
        handle.close("FAILED")
        raise
    handle.close()
    return _summary(handle.study, coordinator.finished, started, handle)


def studies(**store_options) -> list[Summary]:
    """Every study in the stores, with its counts and best trial."""
    stores = Stores.resolve(**store_options)
    if stores.missing():
        return []
    storage = open_storage(stores.storage)
    return [_summary(optuna.load_study(study_name=s.study_name, storage=storage))
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def status(name: str, **store_options) -> Summary:
    return _summary(load_study(name, Stores.resolve(**store_options)))


def best(name: str, top: int = 1, **store_options) -> list[dict[str, Any]]:
    """The `top` best COMPLETE trials (ties by number), or the Pareto set of a multi-objective study."""
    study = load_study(name, Stores.resolve(**store_options))
    if len(study.directions) > 1:
        return [_trial_dict(t) for t in study.best_trials]
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [_trial_dict(t) for t in sorted(complete, key=lambda t: (sign * t.value, t.number))[:top]]


def _summary(study: optuna.Study, finished=(), started: float | None = None, handle=None) -> Summary:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    spec = study.user_attrs.get("fitgap.spec", {})
    metrics = [o["metric"] for o in spec.get("objective", [])]
    try:
        top = [_trial_dict(t) for t in study.best_trials]
    except (ValueError, RuntimeError):
        top = []
    return Summary(
        study=study.study_name,
        budget=study.user_attrs.get("fitgap.trials", 0),
        counts=counts,
        best=top if len(study.directions) > 1 else top[:1],
        metrics=metrics,
        finished=list(finished),
        elapsed_s=time.time() - started if started else 0.0,
        experiment_id=handle.study_run.experiment_id if handle else None,
    )


def _trial_dict(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"number": trial.number, "values": trial.values, "params": trial.params,
            "mlflow_run_id": trial.user_attrs.get("fitgap.mlflow_run_id")}


def _as_spec(spec_or_path) -> SweepSpec:
    if isinstance(spec_or_path, SweepSpec):
        return spec_or_path
    if isinstance(spec_or_path, dict):
        return parse_spec(spec_or_path)
    return load_spec(spec_or_path)

