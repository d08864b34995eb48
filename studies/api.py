"""Coordinator side: fitgap's Python API (`from fitgap import launch`); the CLI is a thin shell around it. Nothing
here imports TensorFlow: data are read and checked with numpy (`fitgap.data`), trials train in executor processes."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from fitgap import sqlite
from fitgap.data.datasets import Dataset, load_dataset
from fitgap.studies.choice import choose_k, xla_mode
from fitgap.studies.coordinator import INTERRUPTIONS, Coordinator
from fitgap.studies.options import RunOptions
from fitgap.studies.rerun import Rerun, rerun  # noqa: F401  (part of the API)
from fitgap.studies.slots import plan_slots
from fitgap.studies.stores import Stores
from fitgap.studies.study import StudyHandle, load_study, open_storage, stored_spec
from fitgap.sweeps.space import check_sampler, trial_params
from fitgap.sweeps.reading import load_spec
from fitgap.sweeps.spec import SpecError, SweepSpec, check_builder, check_input_shape, parse_spec
from fitgap.tracking.diagnosis import data_facts
from fitgap.tracking.mlflow_sink import MlflowSink
from fitgap.tracking.records import TrialRecord
from fitgap.tracking.results import ResultsDB, ResultsError


@dataclass(frozen=True)
class Running:
    """A trial RUNNING in Optuna, as its live writes tell (`fitgap status`); None where nothing is written yet."""

    number: int
    epoch: int | None  # epochs written, of...
    epochs: int  # ...the trial's `epochs`
    value: float | None  # the objective's metric at the latest epoch
    gap: float | None  # `gap` at the latest epoch
    running_s: float  # since its training started (since Optuna's ask, before its first live write)


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
    running: list[Running] = field(default_factory=list)  # `status` only
    parent: dict | None = None  # the trial a `fitgap path` study started from ({study, trial})

    def __repr__(self) -> str:
        """One line for a notebook; `finished` holds the records, `fitgap.trials(study)` the table of all trials."""
        from fitgap.studies.display import best_text, counts_text

        return (f"Summary(study={self.study!r}: {counts_text(self)} of a budget of {self.budget}; best "
                f"{best_text(self)}; {len(self.finished)} finished by this call in {self.elapsed_s:.1f} s)")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a launch: running trials were recorded as failed ("interrupted", "terminated
    (SIGTERM)"), never retried; the study's MLflow run is KILLED."""

    def __init__(self, summary: Summary, signum: int = signal.SIGINT):
        super().__init__(INTERRUPTIONS.get(signum, "interrupted"))
        self.summary, self.signum = summary, signum


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


def launch(spec_or_path: SweepSpec | str | Path | dict, *, trials: int | None = None,
           on_trial: Callable[[TrialRecord, int, int], None] | None = None,
           on_start: Callable[[SweepSpec, int, int, int], None] | None = None,
           on_epoch: Callable[[int, int, int], None] | None = None, **options) -> Summary:
    """Create or resume the spec's study and run it to its budget; `trials` replaces the stored budget.

    options: the fields of `RunOptions` (timeout, gpus, slots_per_gpu, cpu_slots, retries, max_trials_per_executor,
    fuse, allow_builder, save_models, plots, deterministic) and the store options of `Stores.resolve` (workspace, storage,
    tracking_uri, results_url). on_start(spec, executors, used, budget) is called once the study is open, as the
    executors start (they take seconds to import TensorFlow); on_trial(record, used, budget) as each trial finishes;
    on_epoch(number, epoch, epochs) as each epoch record of a running trial comes (keep it cheap: thousands a second
    come from a fused batch).
    """
    if trials is not None and trials <= 0:
        raise SpecError(f"`trials` must be > 0, but got {trials}")
    run, store_options = RunOptions.split(options)
    spec, data = validate(spec_or_path, run.allow_builder)
    return _coordinate(spec, data, Stores.resolve(**store_options), run, trials, on_trial, on_start, on_epoch)


def worker(name: str, *, data_dir: str | Path = ".", on_trial: Callable[[TrialRecord, int, int], None] | None = None,
           on_start: Callable[[SweepSpec, int, int, int], None] | None = None,
           on_epoch: Callable[[int, int, int], None] | None = None, **options) -> Summary:
    """Join an existing study (from another machine): its spec comes from the storage, its data from `data_dir`;
    options as `launch`'s."""
    run, store_options = RunOptions.split(options)
    stores = Stores.resolve(**store_options)
    spec = stored_spec(load_study(name, stores), Path(data_dir))
    _, data = validate(spec, run.allow_builder)
    return _coordinate(spec, data, stores, run, None, on_trial, on_start, on_epoch)


def _coordinate(spec: SweepSpec, data: Dataset, stores: Stores, run: RunOptions, trials: int | None,
                on_trial: Callable[[TrialRecord, int, int], None] | None,
                on_start: Callable[[SweepSpec, int, int, int], None] | None = None,
                on_epoch: Callable[[int, int, int], None] | None = None) -> Summary:
    """Everything checked first, then one coordinator per SQLite workspace runs the study."""
    slots = plan_slots(run.gpus, run.slots_per_gpu, run.cpu_slots, deterministic=run.deterministic)
    xla_mode()  # the executors read it: a wrong value is the user's, said once, before anything is written
    sqlite.journal_mode()  # so does `StudyHandle.open`
    StudyHandle.check(spec, stores, data.content_hash)
    with stores.coordinator_lock():
        handle = StudyHandle.open(spec, stores, data.content_hash, trials, run.save_models, run.plots)
        coordinator = Coordinator(handle, slots, run, batch_size_of(spec, data, run.fuse), on_trial,
                                  on_epoch=on_epoch, data_facts=data_facts(data.task, data.y_train, data.y_val))
        if on_start is not None:
            on_start(spec, len(slots), handle.used_budget(), handle.budget)
        started = time.time()
        try:
            coordinator.run()
        except KeyboardInterrupt:
            handle.close("KILLED")
            summary = _summary(handle.study, coordinator.finished, started, handle)
            raise Interrupted(summary, coordinator.signal or signal.SIGINT) from None
        except BaseException:
            with contextlib.suppress(Exception):  # the stores may refuse writes (a full disk): the error says why
                handle.close("FAILED")
            raise
        handle.close()
        return _summary(handle.study, coordinator.finished, started, handle)


def create(spec_or_path: SweepSpec | str | Path | dict, *, trials: int | None = None, allow_builder: bool = False,
           **store_options) -> Summary:
    """Create (or check) the spec's study without running trials: workers on other machines join it."""
    spec, data = validate(spec_or_path, allow_builder)
    stores = Stores.resolve(**store_options)
    StudyHandle.check(spec, stores, data.content_hash)
    with stores.coordinator_lock():  # stores are created by one process at a time
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


def studies(**store_options) -> list[Summary]:
    """Every study in the stores, with its counts and best trial."""
    stores = Stores.resolve(**store_options)
    if stores.missing():
        return []
    storage = open_storage(stores.storage)
    return [_summary(optuna.load_study(study_name=s.study_name, storage=storage))
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def trials(name: str, where: str | None = None, order_by: str | None = None, limit: int | None = None,
           **store_options) -> "pandas.DataFrame":
    """The study's trials from the results database as a pandas DataFrame, a row per trial and a column per
    results-database column (README: The results database); `where` and `order_by` as `fitgap query`'s."""
    from fitgap.tracking.query import trials_frame

    return trials_frame(Stores.resolve(**store_options).results_url, name, where, order_by, limit)


def status(name: str, **store_options) -> Summary:
    """The study's summary, with its running trials as their live writes to the results database tell (so from any
    machine that reaches the stores)."""
    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    summary = _summary(study)
    _add_notes(summary.best[:1] if len(study.directions) == 1 else [], study, stores)
    return dataclasses.replace(summary, running=_running(study, stores))


def _running(study: optuna.Study, stores: Stores) -> list[Running]:
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not trials:
        return []
    try:
        with ResultsDB(stores.results_url, create=False) as results:  # a reading command migrates nothing
            rows = {row["number"]: row for row in results.running(study.study_name)}
    except ResultsError:  # no results database here, or an older schema: what Optuna knows
        rows = {}
    spec = study.user_attrs.get("fitgap.spec", {})
    metric = spec.get("objective", [{}])[0].get("metric")
    now = time.time()
    running = []
    for trial in trials:
        row = rows.get(trial.number)
        if row is None:
            asked = trial.datetime_start.timestamp() if trial.datetime_start else now
            running.append(Running(trial.number, None, trial.params.get("epochs", spec.get("epochs", 0)), None, None,
                                   now - asked))
        else:
            done = None if row["last_epoch"] is None else row["last_epoch"] + 1
            running.append(Running(trial.number, done, row["epochs"], row.get(f"final_{metric}"),
                                   row["final_fit_gap"], now - row["started_at"]))
    return running


def best(name: str, top: int = 1, **store_options) -> list[dict[str, Any]]:
    """The `top` best COMPLETE trials (ties by number), or the Pareto set of a multi-objective study."""
    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    if len(study.directions) > 1:
        return [_trial_dict(t) for t in study.best_trials]
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    top_trials = [_trial_dict(t) for t in sorted(complete, key=lambda t: (sign * t.value, t.number))[:top]]
    return _add_notes(top_trials, study, stores)


def _add_notes(trials: list[dict[str, Any]], study: optuna.Study, stores: Stores) -> list[dict[str, Any]]:
    """Each trial's `notes` (`analysis.score_notes`: its interval, the trials it is not told apart from, a small
    validation set, its test score) and `verdict`, from the results database (none when it cannot be read)."""
    from fitgap.tracking.analysis import score_notes

    if not trials:
        return trials
    try:
        with ResultsDB(stores.results_url, create=False) as results:  # a reading command migrates nothing
            rows = {row["number"]: row for row in results.trials(study.study_name) if row["state"] == "COMPLETE"}
    except ResultsError:
        return trials
    metric = (study.user_attrs.get("fitgap.spec", {}).get("objective") or [{"metric": "value"}])[0]["metric"]
    for trial in trials:
        row = rows.get(trial["number"])
        if row is None:
            continue
        others = [r["value"] for n, r in rows.items() if n != trial["number"]]
        test = next((m for m in ("test_accuracy", "test_mse", "test_loss") if row.get(m) is not None), None)
        trial["verdict"] = row["verdict"]
        trial["notes"] = score_notes(metric, row["value"], others, row["val_size"], row.get(test), test)
    return trials


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
        parent=study.user_attrs.get("fitgap.parent"),
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


def answer(name: str, **store_options) -> list[str]:
    """The study's answer (`tracking.answer.answer_lines`) as plain text lines: what `fitgap launch` and `fitgap
    report` print; empty when the results database cannot be read."""
    import pandas as pd

    from fitgap.tracking.analysis import prepare
    from fitgap.tracking.answer import answer_lines
    from fitgap.tracking.report import context

    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    try:
        with ResultsDB(stores.results_url, create=False) as results:
            rows = [r for r in results.trials(name) if r["state"] == "COMPLETE"]
    except ResultsError:
        return []
    complete, label, task = prepare(pd.DataFrame(rows))
    lines = answer_lines(complete, context(name, study.user_attrs.get("fitgap.spec", {}), label, task))
    return [line.replace("**", "").replace("`", "") for line in lines]


def report(name: str, out: str | Path | None = None, format: str = "md", **store_options) -> Path:
    """Write the study's overfitting-vs-regularization report (`tracking.report`) into `out` [default:
    <workspace>/reports/<study>] as md or html, log it to the study's parent MLflow run (`report/`), and return the
    report file. An empty or small study gets a report that says what is missing."""
    import tempfile

    from fitgap.tracking.report import FORMATS, build_report, write_report

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



def path(name: str, *, trial: int | None = None, regularizers: str | list[str] = "l1,l2",
         weights: str = "1e-5:1e-1:9", repeats: int = 5, new_name: str | None = None, data_dir: str | Path = ".",
         on_trial: Callable[[TrialRecord, int, int], None] | None = None,
         on_start: Callable[[SweepSpec, int, int, int], None] | None = None,
         on_epoch: Callable[[int, int, int], None] | None = None, **options) -> tuple[Summary, Path]:
    """Trace the regularization path of trial `trial` of study `name` (default: its best; a multi-objective study
    needs `trial`): a new study, `new_name` [default: <name>-path-<trial>], with every other setting fixed at the
    trial's, trains the unregularized baseline and each of `regularizers` at each weight of the log grid `weights`
    ("LOW:HIGH:COUNT"), `repeats` seeds each (`studies.path`); linked to the trial in all three stores, run as
    `launch` runs a study (options and callbacks as its; the parent's relative data paths resolve in `data_dir`),
    then reported as `report` does. Returns the launch's summary and the report file. Run again, it resumes."""
    from fitgap.studies.path import check_name, link, log_grid, path_spec, regularizers_of, start_trial

    regularizers, weights = regularizers_of(regularizers), log_grid(weights)
    run, store_options = RunOptions.split(options)
    stores = Stores.resolve(**store_options)
    parent = load_study(name, stores)
    start = start_trial(parent, trial, best(name, 1, **store_options))
    spec = path_spec(stored_spec(parent, Path(data_dir)), start, regularizers, weights, repeats, new_name)
    check_name(spec, stores)
    create(spec, allow_builder=run.allow_builder, **store_options)
    link(stores, spec.name, parent, start)
    summary = launch(spec, on_trial=on_trial, on_start=on_start, on_epoch=on_epoch, **options)
    return summary, report(spec.name, **store_options)
