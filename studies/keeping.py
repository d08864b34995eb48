"""Coordinator side: what a study keeps of its trials beside their records — trained models, and which trials get
plots. Both judge "best" as Optuna does: the best trial, or the Pareto set of a multi-objective study.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import optuna

from fitgap.tracking.mlflow_sink import MlflowSink
from fitgap.tracking.records import TrialRecord

COMPLETE = optuna.trial.TrialState.COMPLETE


class PlotPolicy:
    """Whether a trial's plots are rendered: every trial's with `plots` all (~0.2 s of CPU each, more than the rest of
    its tracking: too much for a saturated machine), none, or with `plots` best a new best's: a trial that no trial
    finished before it matches or beats (dominates, for several objectives). The best trial (every Pareto-optimal
    one) thus has its plots, and a sweep renders a handful."""

    def __init__(self, plots: str, study: optuna.Study):
        self.plots, self.study = plots, study
        self._signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
        self._front: list[tuple[float, ...]] | None = None  # the best values so far, signed so that more is better

    def wants(self, record: TrialRecord) -> bool:
        if self.plots != "best" or record.values is None:
            return self.plots == "all" and bool(record.epochs)
        if self._front is None:
            told = self.study.get_trials(deepcopy=False, states=(COMPLETE,))
            self._front = [self._signed(t.values) for t in self.study.best_trials] if told else []
        new = self._signed(record.values)
        if any(all(o >= n for o, n in zip(old, new)) for old in self._front):
            return False
        self._front = [old for old in self._front if not all(n >= o for n, o in zip(new, old))] + [new]
        return True

    def _signed(self, values) -> tuple[float, ...]:
        return tuple(s * v for s, v in zip(self._signs, values))


class ModelKeeper:
    """Trained models (`model.keras`, sent by the executor) go to `<workspace>/models/<study>/trial-<n>.keras`, not
    to MLflow; `close` cuts the folder down to the best (`save_models` best; all keeps every one, none saves none)
    and logs what it keeps to the trials' runs (`model/`)."""

    def __init__(self, save_models: str, folder: Path, study: optuna.Study, sink: MlflowSink):
        self.save_models, self.folder, self.study, self.sink = save_models, folder, study, sink

    @property
    def wanted(self) -> bool:
        """Whether executors should send the trained models at all."""
        return self.save_models != "none"

    def keep(self, record: TrialRecord) -> TrialRecord:
        """The record without its model, saved first if the trial completed."""
        model = record.artifacts.get("model.keras")
        if model is None:
            return record
        if record.state == "COMPLETE" and self.wanted:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"trial-{record.number}.keras").write_bytes(model)
        return dataclasses.replace(record, artifacts={k: v for k, v in record.artifacts.items() if k != "model.keras"})

    def close(self) -> None:
        models = {int(p.stem.removeprefix("trial-")): p for p in self.folder.glob("trial-*.keras")}
        if not models:
            return
        complete = self.study.get_trials(deepcopy=False, states=(COMPLETE,))
        runs = {t.number: t.user_attrs.get("fitgap.mlflow_run_id") for t in complete}
        if self.save_models == "best":
            # Only told trials: a model another worker has saved but not yet told Optuna is that worker's to judge.
            # Workers sharing the folder may cut the same file, hence `missing_ok`.
            best = {t.number for t in self.study.best_trials} if complete else set()
            for number in (models.keys() & runs.keys()) - best:
                models.pop(number).unlink(missing_ok=True)
        for number, path in models.items():
            run_id = runs.get(number)
            if run_id and not self.sink.client.list_artifacts(run_id, "model"):
                with contextlib.suppress(FileNotFoundError):  # cut meanwhile by a worker that saw a newer best
                    self.sink.client.log_artifact(run_id, str(path), "model")
