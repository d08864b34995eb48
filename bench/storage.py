"""What Optuna's storages cost for the writes fitgap makes per trial, on their own (no MLflow, no training).

    .venv/bin/python bench/storage.py [--trials 300]

Per trial, as the coordinator does it: `ask`, six suggestions (the dot spec's dimensions), three user attributes
(the MLflow run id, the seed, the diagnosis) and `tell`, with `RandomSampler`, so that the storage's cost is measured
apart from the sampler's. Storages: the in-memory one (the baseline), `JournalStorage` on a file through Optuna's
backend (an fsync per write) and through fitgap's (`studies/journal.py`, fitgap's default), and the RDB storage on
SQLite with its rollback journal and in WAL mode with `synchronous=NORMAL` (`fitgap/sqlite.py`: the default of
workspaces created before the journal).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

from fitgap import sqlite
from fitgap.studies.journal import open_journal


def per_trial(storage, trials: int) -> float:
    """Seconds per trial of fitgap's writes on `storage`."""
    study = optuna.create_study(storage=storage, study_name="bench", sampler=optuna.samplers.RandomSampler(seed=0))
    started = time.perf_counter()
    for number in range(trials):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-3, 0.5, log=True)
        trial.suggest_float("decay_rate", 0.5, 1.0)
        trial.suggest_int("decay_steps", 1, 100, log=True)
        trial.suggest_categorical("activation", ["sigmoid", "tanh", "relu", "leaky_relu"])
        trial.suggest_categorical("loss", ["mse", "binary_crossentropy"])
        trial.suggest_categorical("regularizer", ["none", "l1", "l2"])
        trial.set_user_attr("fitgap.mlflow_run_id", "0" * 32)
        trial.set_user_attr("fitgap.seed", number)
        trial.set_user_attr("fitgap.diagnosis", {"verdict": "good fit", "best_epoch": 42, "best_fit_gap": 0.01})
        study.tell(trial, 0.5)
    return (time.perf_counter() - started) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sqlite.tune()
    folder = Path(tempfile.mkdtemp(prefix="fitgap-storage-"))
    wal = optuna.storages.RDBStorage(f"sqlite:///{folder / 'wal.db'}")
    sqlite.use_wal(folder / "wal.db")
    storages = {
        "in memory (baseline)": optuna.storages.InMemoryStorage(),
        "JournalStorage, Optuna's file": optuna.storages.JournalStorage(JournalFileBackend(str(folder / "a.log"))),
        "JournalStorage, fitgap's file": open_journal(folder / "b.journal"),
        "RDB, SQLite rollback journal": optuna.storages.RDBStorage(f"sqlite:///{folder / 'delete.db'}"),
        "RDB, SQLite WAL": wal,
    }
    print(f"Optuna's storages, fitgap's writes of one trial ({args.trials} trials, RandomSampler):")
    baseline = None
    for name, storage in storages.items():
        cost = per_trial(storage, args.trials)
        baseline = baseline or cost
        print(f"  {name:<31} {cost * 1000:7.2f} ms a trial  {cost / baseline:7.1f}x")


if __name__ == "__main__":
    main()
