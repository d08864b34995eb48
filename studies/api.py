"""fitgap's Python API; the CLI is a thin shell around it. Nothing here imports TensorFlow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from studies.coordinator import MAX_TRIALS_PER_EXECUTOR, Coordinator
from studies.keras.fusion import choose_k
from studies.keras.datasets import Dataset, load_dataset
from studies.slots import plan_slots
from studies.stores import Stores
from studies.study import StudyHandle, load_study, open_storage, stored_spec
from sweeps.space import check_sampler, trial_params
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
           max_trials_per_executor: int = MAX_TRIALS_PER_EXECUTOR, fuse: int | None = None,
           allow_builder: bool = False, on_trial: Callable[[TrialRecord, int, int], None] | None = None,
           save_models: str = "best", plots: str = "best", **store_options) -> Summary:
    """Create or resume the spec's study and run it to its budget; `trials` replaces the stored budget.

    gpus, slots_per_gpu, cpu_slots: see `studies.slots.plan_slots`. retries: how often a trial whose executor or
    coordinator died is retried with the same params. on_trial(record, used, budget) is called as each trial
    finishes. save_models: none, best (the best trial's model, or the Pareto set's, under
    <workspace>/models/<study>/, also logged to its MLflow run) or all. plots: which trials get their plots
    (learning curves, decision boundary) in their MLflow runs: none, best (each new best: see
    `StudyHandle.wants_plots`) or all. store_options: workspace, storage, tracking_uri, results_url (see
    `Stores.resolve`).
    """
    if trials is not None and trials <= 0:
        raise SpecError(f"`trials` must be > 0, but got {trials}")
    _check_choices(save_models=save_models, plots=plots)
    spec, data = validate(spec_or_path, allow_builder)
    slots = plan_slots(gpus, slots_per_gpu, cpu_slots)
    stores = Stores.resolve(**store_options)
    StudyHandle.check(spec, stores, data.content_hash)
    with stores.coordinator_lock():
        handle = StudyHandle.open(spec, stores, data.content_hash, trials, save_models, plots)
        fuse = batch_size_of(spec, data, fuse)
        return _run(handle, Coordinator(handle, slots, timeout, retries, max_trials_per_executor, fuse, on_trial))


def worker(name: str, *, data_dir: str | Path = ".", timeout: float | None = None, gpus: str | None = None,
           slots_per_gpu: int = 1, cpu_slots: int | None = None, retries: int = 1,
           max_trials_per_executor: int = MAX_TRIALS_PER_EXECUTOR, fuse: int | None = None,
           allow_builder: bool = False, on_trial: Callable[[TrialRecord, int, int], None] | None = None,
           save_models: str = "best", plots: str = "best", **store_options) -> Summary:
    """Join an existing study (from another machine): its spec comes from the storage, its data from `data_dir`."""
    _check_choices(save_models=save_models, plots=plots)
    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    spec = stored_spec(study, Path(data_dir))
    _, data = validate(spec, allow_builder)
    slots = plan_slots(gpus, slots_per_gpu, cpu_slots)
    StudyHandle.check(spec, stores, data.content_hash)
    with stores.coordinator_lock():
        handle = StudyHandle.open(spec, stores, data.content_hash, save_models=save_models, plots=plots)
        fuse = batch_size_of(spec, data, fuse)
        return _run(handle, Coordinator(handle, slots, timeout, retries, max_trials_per_executor, fuse, on_trial))


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


def batch_size_of(spec: SweepSpec, data: Dataset, fuse: int | None) -> int:
    """Trials per fused batch: `--fuse K`, else what fits in memory for the widest model the spec can sample."""
    if spec.executor not in ("auto", "fused"):
        return 1
    params = trial_params(spec, {})
    hidden = spec.search.get("hidden")
    if hidden is not None:  # categorical lists of widths: size the batch for the widest
        params["hidden"] = max(hidden.choices, key=lambda widths: sum(widths))
    return choose_k(params, data, fuse)


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


CHOICES = ("none", "best", "all")  # of save_models and plots


def _check_choices(**options: str) -> None:
    for name, value in options.items():
        if value not in CHOICES:
            raise SpecError(f"`{name}` must be one of {', '.join(CHOICES)}, but got {value!r}")


def report(name: str, out: str | Path | None = None, format: str = "md", **store_options) -> Path:
    """Write the study's overfitting-vs-regularization report (`tracking.report`) into `out` [default:
    <workspace>/reports/<study>] as md or html, log it to the study's parent MLflow run (`report/`), and return the
    report file. An empty or small study gets a report that says what is missing."""
    import tempfile

    from tracking.report import FORMATS, build_report, write_report

    if format not in FORMATS:
        raise SpecError(f"`format` must be one of {', '.join(FORMATS)}, but got {format!r}")
    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    sink = MlflowSink(stores.tracking_uri, stores.artifact_root)

    def artifact(run_id: str, file_name: str) -> bytes | None:
        from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as progress_bar

        before = progress_bar.get_raw()
        progress_bar.set(False)  # no progress bars in a report's output
        with tempfile.TemporaryDirectory(prefix="fitgap-report-") as folder:
            try:
                return Path(sink.client.download_artifacts(run_id, file_name, folder)).read_bytes()
            except Exception:  # no such artifact (not 2-D data, an older trial): the report says it is missing
                return None
            finally:
                progress_bar.unset() if before is None else progress_bar.set(before)

    with ResultsDB(stores.results_url) as results:
        document = build_report(name, results.trials(name), lambda number: results.epochs(name, number),
                                study.user_attrs.get("fitgap.spec", {}), study, artifact)
    path = write_report(document, Path(out) if out else stores.workspace / "reports" / name, format)
    parent = sink.find_study_run(name)
    if parent is not None:
        files = {path.name: path.read_bytes(), **document.images}
        sink.log_files(parent.run_id, files, "report")
    return path


@dataclass(frozen=True)
class Rerun:
    """Trial `number` trained again from its stored params and seed, with both curves."""

    study: str
    number: int
    seeds: list[int]  # one per repeat: the stored seed first
    state: str
    reason: str | None
    stored: list[dict[str, Any]]  # the results database's epochs
    again: list[dict[str, Any]]  # the rerun's (the mean over repeats, as stored)
    tolerance: float

    def differences(self) -> dict[str, float]:
        """Per metric, the largest |stored - rerun| over the epochs both have (metrics both measured)."""
        found: dict[str, float] = {}
        for old, new in zip(self.stored, self.again):
            for name, value in new.items():
                if name != "epoch" and old.get(name) is not None and value is not None:
                    found[name] = max(found.get(name, 0.0), abs(old[name] - value))
        return found

    @property
    def matches(self) -> bool:
        scale = {k: max([1.0] + [abs(e[k]) for e in self.stored if e.get(k) is not None]) for k in self.differences()}
        return (self.state == "COMPLETE" and len(self.stored) == len(self.again) and bool(self.again)
                and all(d <= self.tolerance * scale[k] for k, d in self.differences().items()))

    def comparison(self) -> str:
        lines = [f"trial {self.number} of {self.study} trained again with seed{'s' if len(self.seeds) > 1 else ''} "
                 f"{', '.join(map(str, self.seeds))}: {self.state}{f' ({self.reason})' if self.reason else ''}; "
                 f"{len(self.stored)} epochs stored, {len(self.again)} rerun",
                 f"{'metric':<14} {'stored (last)':>14} {'rerun (last)':>14} {'max |diff|':>11}"]
        for name, diff in sorted(self.differences().items()):
            last_old = self.stored[min(len(self.stored), len(self.again)) - 1].get(name)
            last_new = self.again[min(len(self.stored), len(self.again)) - 1].get(name)
            lines.append(f"{name:<14} {last_old:>14.6g} {last_new:>14.6g} {diff:>11.3g}")
        verdict = "match" if self.matches else "DIFFER"
        lines.append(f"curves {verdict} (tolerance {self.tolerance:g}, relative to each metric's scale)")
        return "\n".join(lines)


def rerun(name: str, number: int, *, data_dir: str | Path = ".", gpus: str | None = None, tolerance: float = 1e-5,
          **store_options) -> Rerun:
    """Rebuild trial `number` from the results database — its stored params, seed and executor — and train it again
    through an executor process (the dataset section comes from the spec stored with the study, its relative paths
    resolving in `data_dir`). Nothing is written. With the same seed the curves match the stored ones."""
    import queue

    from studies.coordinator import mean_curves
    from studies.executor import Died, ExecutorProcess
    from studies.protocol import Epochs, Ready, TrialOutcome, TrialTask
    from sweeps.space import derive_seed
    from tracking.records import EpochRecord

    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    spec = stored_spec(study, Path(data_dir))
    with ResultsDB(stores.results_url) as results:
        row = next((r for r in results.trials(name) if r["number"] == number), None)
        if row is None:
            known = [r["number"] for r in results.trials(name)]
            raise SpecError(f"study {name!r} has no trial {number} in the results database (it has "
                            f"{', '.join(map(str, known)) or 'none'})")
        params, stored = results.params(name, number), results.epochs(name, number)
    if row["seed"] is None or not params:
        raise SpecError(f"trial {number} of {name!r} has no stored params or seed to rebuild it from")
    data = load_dataset(spec.dataset.model_dump(), spec.base_dir)
    if data.content_hash != study.user_attrs.get("fitgap.dataset_hash"):
        raise SpecError(f"the data of study {name!r} differ from the data it was trained on: use --data-dir")
    repeats = row["repeats"] or 1
    seeds = [row["seed"]] + [derive_seed(spec.seed, "trial", number, r) for r in range(1, repeats)]
    tasks = [TrialTask(name, number, params, seed, spec.dataset.model_dump(), str(spec.base_dir),
                       tuple(zip(spec.metrics, spec.directions)), frozenset(), repeat, row["executor"] or "keras")
             for repeat, seed in enumerate(seeds)]
    events: queue.Queue = queue.Queue()
    slot = plan_slots(gpus, 1, None)[0]
    executor = ExecutorProcess(slot, events, stores.workspace / "logs" / "rerun.log")
    runs: list[list[EpochRecord]] = []
    outcome: TrialOutcome | None = None
    try:
        pending, current = list(tasks), []  # one repeat at a time: their epoch records carry the same trial number
        while len(runs) < len(tasks):
            _, message = events.get()
            if isinstance(message, Ready):
                executor.submit(pending.pop(0))
            elif isinstance(message, Epochs):
                current += message.records
            elif isinstance(message, TrialOutcome):
                runs.append(current)
                current = []
                outcome = message if outcome is None or message.state != "COMPLETE" else outcome
                if pending:
                    executor.submit(pending.pop(0))
            elif isinstance(message, Died):
                outcome = TrialOutcome(number, "FAIL", reason=f"executor died (exit code {message.returncode})")
                break
    finally:
        executor.close()
    again = [{"epoch": e.epoch, **e.metrics} for e in mean_curves(runs)] if runs and all(runs) else []
    return Rerun(name, number, seeds, outcome.state, outcome.reason, stored, again, tolerance)
