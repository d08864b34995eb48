"""Query speed: fitgap's results database against `mlflow.search_runs` on the same runs, in one run.

    .venv/bin/python bench/query.py [--trials 10000] [--epochs 100] [--mlflow-runs N] [--repeat 5] [--keep DIR]

Builds, in a temporary folder, a results database of --trials synthetic trials x --epochs epochs (through
`ResultsDB.write_trial`, as the coordinator does) and the same runs in an MLflow SQLite store (params, every epoch's
metrics and tags through `MlflowClient.log_batch`, as `tracking.mlflow_sink` does; --mlflow-runs logs only the first
N, as MLflow takes ~0.1 s a run). Then times, best of --repeat:

- the filtered top-10, `regularizer = 'l2' and best_loss_gap < 0.05` by best_val_loss, through `trials_frame`;
- the whole `fitgap query` command on it, process start included;
- `mlflow.search_runs` on `params.regularizer = 'l2' and metrics.loss_gap < 0.05` ordered by val_loss;
- an unfiltered top-10 by a metric, and every run into pandas, both ways;

and prints each time with MLflow's ratio to ours. MLflow filters on a run's latest metric (the final epoch): our
`final_loss_gap`/`final_val_loss` query must return the same 10 trials, which the bench checks.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

STUDY = "bench"
FILTER = "regularizer = 'l2' and best_loss_gap < 0.05"
METRICS = ("loss", "val_loss", "bce", "val_bce", "accuracy", "val_accuracy", "loss_gap", "accuracy_gap", "reg_loss",
           "lr")


def synthetic_trial(number: int, epochs: int, rng: random.Random):
    """A plausible trial: the loss falls, the validation loss turns up when overfitting sets in (later with more
    regularization), so gaps and best epochs spread the way a real sweep's do."""
    from fitgap.tracking.records import EpochRecord, TrialRecord

    regularizer = rng.choice(["none", "l1", "l2"])
    weight = 0.0 if regularizer == "none" else 10 ** rng.uniform(-5, -1)
    lr0, decay = 10 ** rng.uniform(-3, -0.5), rng.choice([1.0, 0.96, 0.9])
    params = {
        "learning_rate": lr0, "decay_rate": decay, "decay_steps": 1, "staircase": rng.random() < 0.5,
        "activation": rng.choice(["sigmoid", "tanh", "relu", "leaky_relu"]), "loss": "binary_crossentropy",
        "regularizer": regularizer, "regularization_weight": weight, "optimizer": "sgd", "epochs": epochs,
        "batch_size": 32, "hidden": [rng.choice([4, 11, 32]), rng.choice([2, 4])],
    }
    floor, speed = rng.uniform(0.05, 0.3), rng.uniform(5, 30)
    onset = epochs * min(1.0, 0.2 + 30 * weight + rng.uniform(0, 0.5))  # where overfitting sets in
    slope = rng.uniform(0.0002, 0.004)
    records = []
    for e in range(epochs):
        loss = floor + (0.7 - floor) * math.exp(-e / speed)
        gap = 0.01 * rng.random() + slope * max(0.0, e - onset)
        accuracy = 1 - loss / 1.5
        metrics = {"loss": loss, "val_loss": loss + gap, "bce": loss, "val_bce": loss + gap, "accuracy": accuracy,
                   "val_accuracy": accuracy - gap / 2, "loss_gap": gap, "accuracy_gap": gap / 2,
                   "reg_loss": weight * 10, "lr": lr0 * decay ** e}
        records.append(EpochRecord(number, e, metrics))
    best = min(records, key=lambda r: r.metrics["val_bce"])
    started = 1.7e9 + number * 10.0
    return TrialRecord(
        study=STUDY, number=number, state="COMPLETE", params=params, values=(best.metrics["val_bce"],),
        best_epoch=best.epoch, epochs=tuple(records),
        complexity={"params_total": 2 * params["hidden"][0] + 10, "params_trainable": 2 * params["hidden"][0] + 10,
                    "macs": 2 * params["hidden"][0]},
        seed=number, device="cpu", slot=0, started_at=started, finished_at=started + rng.uniform(2, 20),
    )


def build(folder: Path, trials: int, epochs: int, mlflow_runs: int) -> tuple[str, str, str]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from fitgap.tracking.results import ResultsDB

    results_url, tracking_uri = f"sqlite:///{folder / 'results.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(STUDY, artifact_location=(folder / "artifacts").as_uri())
    rng = random.Random(2)
    started = time.perf_counter()
    mlflow_seconds = 0.0
    with ResultsDB(results_url) as db:
        for number in range(trials):
            record = synthetic_trial(number, epochs, rng)
            db.write_trial(record)
            if number < mlflow_runs:
                t = time.perf_counter()
                run_id = client.create_run(experiment_id, run_name=f"{STUDY}-{number}",
                                           tags={"fitgap.trial": str(number)}).info.run_id
                now = int(record.started_at * 1000)
                params = [Param(k, str(v)) for k, v in record.params.items()]
                metrics = [Metric(k, float(v), now, 0) for k, v in record.complexity.items()]
                metrics += [Metric(k, v, now, e.epoch) for e in record.epochs for k, v in e.metrics.items()]
                client.log_batch(run_id, params=params, tags=[RunTag("fitgap.state", record.state)])
                for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
                    client.log_batch(run_id, metrics=metrics[i: i + 1000])
                client.set_terminated(run_id, "FINISHED", end_time=int(record.finished_at * 1000))
                mlflow_seconds += time.perf_counter() - t
            if (number + 1) % 1000 == 0:
                print(f"  {number + 1} trials written ({time.perf_counter() - started:.0f} s, "
                      f"{mlflow_seconds:.0f} s of it MLflow)", file=sys.stderr, flush=True)
    return results_url, tracking_uri, experiment_id


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--mlflow-runs", type=int, help="Runs logged to MLflow [default: --trials].")
    parser.add_argument("--repeat", type=int, default=5, help="Timings are the best of this many.")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="Build in DIR and keep it; a DIR built before is measured again as it is.")
    args = parser.parse_args()
    mlflow_runs = args.trials if args.mlflow_runs is None else min(args.mlflow_runs, args.trials)
    import mlflow  # noqa: F401  (first, so that the level set next sticks)

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # store creation logs its migrations at INFO

    with tempfile.TemporaryDirectory() as temp:
        folder = args.keep or Path(temp)
        if (folder / "mlflow.db").exists():
            results_url, tracking_uri, experiment_id, args.trials, mlflow_runs = reopen(folder)
            print(f"reusing {args.trials} trials ({mlflow_runs} of them in MLflow)")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            results_url, tracking_uri, experiment_id = build(folder, args.trials, args.epochs, mlflow_runs)
            print(f"built {args.trials} trials x {args.epochs} epochs ({mlflow_runs} of them in MLflow) "
                  f"in {time.perf_counter() - started:.0f} s")
        measure(results_url, tracking_uri, experiment_id, args.repeat, args.trials, mlflow_runs)


def reopen(folder: Path) -> tuple[str, str, str, int, int]:
    from mlflow import MlflowClient

    from fitgap.tracking.query import run_sql

    results_url, tracking_uri = f"sqlite:///{folder / 'results.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    experiment_id = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(STUDY).experiment_id
    trials = int(run_sql(results_url, "SELECT count(*) FROM trials").iloc[0, 0])
    runs = int(run_sql(tracking_uri, "SELECT count(*) FROM runs").iloc[0, 0])
    return results_url, tracking_uri, experiment_id, trials, runs


def measure(results_url: str, tracking_uri: str, experiment_id: str, repeat: int, trials: int,
            mlflow_runs: int) -> None:
    import mlflow

    from fitgap.tracking.query import run_sql, trials_frame

    mlflow.set_tracking_uri(tracking_uri)  # search_runs has no client form that returns a DataFrame

    def ours(**kwargs):
        return lambda: trials_frame(results_url, STUDY, **kwargs)

    def theirs(**kwargs):
        return lambda: mlflow.search_runs(experiment_ids=[experiment_id], **kwargs)

    command = [sys.executable, "-m", "fitgap.studies.cli", "query", STUDY, "--results-url", results_url,
               "--where", FILTER, "--order-by", "best_val_loss", "--limit", "10"]
    cases = [
        ("filtered top-10", ours(where=FILTER, order_by="best_val_loss", limit=10),
         theirs(filter_string="params.regularizer = 'l2' and metrics.loss_gap < 0.05",
                order_by=["metrics.val_loss ASC"], max_results=10)),
        ("unfiltered top-10 by a metric", ours(order_by="-best_val_accuracy", limit=10),
         theirs(order_by=["metrics.val_accuracy DESC"], max_results=10)),
        ("all runs into pandas", ours(), theirs()),
    ]
    print(f"\n{'query':<32}{'fitgap':>10}{'mlflow':>11}{'ratio':>9}")
    for name, our_run, their_run in cases:
        our_s, frame = best_of(repeat, our_run)
        their_s, runs = best_of(max(1, min(repeat, 2)) if name == "all runs into pandas" else repeat, their_run)
        print(f"{name:<32}{our_s * 1000:>8.1f}ms{their_s * 1000:>9.1f}ms{their_s / our_s:>8.0f}x"
              f"   ({len(frame)} vs {len(runs)} rows)")
    cli_s, result = best_of(3, lambda: subprocess.run(command, capture_output=True, text=True))
    if result.returncode:
        raise SystemExit(f"fitgap query failed: {result.stderr}")
    print(f"{'`fitgap query` whole process':<32}{cli_s * 1000:>8.1f}ms   (filtered top-10, process start included)")

    # The same question asked of the same curves: MLflow filters on the latest (final-epoch) metric.
    same = trials_frame(results_url, STUDY, "regularizer = 'l2' and final_loss_gap < 0.05", "final_val_loss", 10)
    found = mlflow.search_runs(experiment_ids=[experiment_id], max_results=10,
                               filter_string="params.regularizer = 'l2' and metrics.loss_gap < 0.05",
                               order_by=["metrics.val_loss ASC"])
    if mlflow_runs == trials:
        agree = list(same["number"]) == [int(n) for n in found["tags.fitgap.trial"]]
        print(f"\nMLflow's top-10 is our final_loss_gap/final_val_loss top-10: {'yes' if agree else 'NO'}")
    print("\nSQLite plan of the filtered top-10:")
    plan = run_sql(results_url, "EXPLAIN QUERY PLAN SELECT * FROM trials WHERE study = 'bench' AND "
                                "regularizer = 'l2' AND best_loss_gap < 0.05 ORDER BY best_val_loss LIMIT 10")
    for detail in plan["detail"]:
        print(f"  {detail}")


if __name__ == "__main__":
    main()
