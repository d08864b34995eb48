"""The coordinator's own cost per trial (ask, the pruner's reports, tell, MLflow, results rows) as a study grows.

    .venv/bin/python bench/overhead.py [--at 100 1000 10000] [--window 50] [--tpe-at 100 1000 10000]
                                       [--storage sqlite journal]

The real `StudyHandle` and `Coordinator` run a study on the stores `fitgap launch` creates (MLflow and the results
database on SQLite), once on each Optuna storage: the RDB storage on SQLite (the default before 2026-12-05) as the
baseline, then the journal file (the default), with `RandomSampler`, so that fitgap's cost is measured apart from the sampler's.
Trials are "trained" by a fake in-process executor (no TensorFlow, no process): each trial streams 100 epochs of 6
metrics and waits for the pruner's decision at its report epochs (a median pruner reporting every 10 epochs), as a
real executor does; so the time between two finished trials is the coordinator's alone. The median per trial is
taken over the `window` trials that end at each count of `--at`; the mean over whole ask cycles spanning at least
`window` trials (with `--executor fused` the coordinator asks K trials at once and writes them one by one, so the
median misses the asks and the mean is the fair figure), with where the coordinator's time went (budget = the
budget, stop and stale-trial checks around each ask and tell). MLflow's and the results database's writes of each
finished trial are the tracking process's (`tracking/writer.py`), beside the coordinator: they show in the intervals
when they are the slower of the two.

The fake executor is the tests' (`tests/fakes.py`), given to the coordinator as its `start_executor`.

The TPE sampler's own cost is printed apart: `ask` plus the dot spec's suggestions, in memory, on a study holding
that many finished trials.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import optuna
import yaml

from fitgap.studies.coordinator import Coordinator
from fitgap.studies.options import RunOptions
from fitgap.studies.slots import plan_slots
from fitgap.studies.stores import Stores
from fitgap.studies.study import StudyHandle
from fitgap.sweeps.space import make_sampler, suggest
from fitgap.sweeps.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "sweeps" / "specs" / "dot.yaml"
sys.path.insert(0, str(ROOT / "tests"))
from fakes import METRICS, Script  # noqa: E402  (the tests' fake executor)


# Optuna's storage: the journal file, a workspace's default, against the RDB storage on SQLite that was
STORAGES = {"journal": lambda workspace: None, "sqlite": lambda workspace: f"sqlite:///{workspace / 'optuna.db'}"}


class Timings:
    """Seconds spent per kind of coordinator work, by wrapping the methods that do it."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] += time.perf_counter() - started

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        spent, self.spent = dict(self.spent), defaultdict(float)
        return spent


def spec_for(trials: int, executor: str):
    raw = yaml.safe_load(SPEC.read_text())
    return parse_spec({**raw, "name": "bench-overhead", "trials": trials, "sampler": "random", "executor": executor,
                       "pruner": {"type": "median", "n_startup_trials": 5, "report_every": 10}})


def run_study(counts: list[int], window: int, executor: str, fuse: int | None,
              storage: str) -> dict[int, tuple[float, float, dict]]:
    """Run one study to max(counts) on Optuna's `storage` (STORAGES); per count, over the window of trials ending there: the median and the mean
    seconds between two finished trials, and the mean seconds per trial of each kind of work."""
    # One batch more than the last count, so that every window holds the asks of the batch after it
    spec = spec_for(max(counts) + (fuse or 1), executor)
    timings = Timings()
    finished: list[float] = []
    work: list[dict[str, float]] = []
    progress = {count: None for count in counts}

    def on_trial(record, used, budget):
        finished.append(time.perf_counter())
        work.append(timings.take())
        if len(finished) in progress:
            print(f"  {len(finished):>6} trials after {finished[-1] - finished[0]:.0f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="fitgap-overhead-") as folder:
        workspace = Path(folder) / "ws"
        stores = Stores.resolve(workspace=workspace, storage=STORAGES[storage](workspace))
        from fitgap.data.datasets import load_dataset

        data = load_dataset(spec.dataset.model_dump())
        try:
            with stores.coordinator_lock():
                handle = StudyHandle.open(spec, stores, data.content_hash, save_models="none", plots="none")
                timings.wrap(handle, "ask", "ask")
                for name in ("remaining", "used_budget", "fail_stale_trials", "stop_requested", "heartbeat"):
                    timings.wrap(handle, name, "budget")  # the checks around each ask and tell
                timings.wrap(handle.study, "tell", "tell")
                timings.wrap(handle, "start_trial_run", "run start")  # the trial's MLflow run and heartbeat
                timings.wrap(optuna.Trial, "report", "reports")
                timings.wrap(optuna.Trial, "should_prune", "reports")
                try:
                    Coordinator(handle, plan_slots("none", cpu_slots=1), RunOptions(), fuse or 1, on_trial,
                                start_executor=Script()).run()
                finally:
                    handle.close()
        finally:
            for name in ("report", "should_prune"):
                with contextlib.suppress(AttributeError):
                    setattr(optuna.Trial, name, getattr(optuna.Trial, name).__wrapped__)
    intervals = np.diff(finished)
    asked = [i for i, spent in enumerate(work) if "ask" in spent]  # finished trials that followed an ask (burst)
    results = {}
    for count in counts:
        median = float(np.median(intervals[max(0, count - 1 - window):count - 1]))
        # The mean over whole ask cycles (one trial each, or a fused batch of K): from the last ask at or before
        # `count` back to the first ask at least `window` trials earlier.
        end = max(i for i in asked if i <= count - 1)
        start = max([i for i in asked if i <= end - window] or [0])
        kinds = defaultdict(float)
        for spent in work[start + 1:end + 1]:
            for kind, seconds in spent.items():
                kinds[kind] += seconds / (end - start)
        results[count] = (median, (finished[end] - finished[start]) / (end - start), dict(kinds))
    return results


def tpe_cost(count: int, asks: int = 20) -> float:
    """Median seconds of TPE's ask + the dot spec's suggestions, in memory, with `count` finished trials."""
    spec = spec_for(count, "keras")
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec.model_copy(update={"sampler": "tpe"}),
                                                                            0))
    filler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(0)
    for _ in range(count):
        trial = filler.ask()
        suggest(trial, spec)
        study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                                  value=float(rng.uniform())))
    costs = []
    for _ in range(asks):
        started = time.perf_counter()
        trial = study.ask()
        suggest(trial, spec)
        costs.append(time.perf_counter() - started)
        study.tell(trial, float(rng.uniform()))
    return statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=int, nargs="+", default=[100, 1000, 10000], help="study sizes to report at")
    parser.add_argument("--window", type=int, default=50, help="trials the median is taken over, ending at each size")
    parser.add_argument("--tpe-at", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--executor", default="keras", choices=["keras", "fused"],
                        help="fused: the coordinator asks --fuse trials (default 64) at once")
    parser.add_argument("--fuse", type=int, default=None)
    parser.add_argument("--storage", nargs="+", default=["sqlite", "journal"], choices=list(STORAGES),
                        help="Optuna storages to run the study on, one after the other")
    args = parser.parse_args()
    if args.executor == "fused":
        args.fuse = args.fuse or 64
        args.window = math.ceil(args.window / args.fuse) * args.fuse  # whole batches: each window asks once
    counts = sorted(args.at)
    means = {}
    for storage in args.storage:
        print(f"coordinator cost per trial, RandomSampler, Optuna's storage {storage}, MLflow and results on SQLite, "
              f"100 epochs x {len(METRICS)} metrics, median pruner reporting every 10 epochs, executor "
              f"{args.executor}:")
        started = time.perf_counter()
        results = run_study(counts, args.window, args.executor, args.fuse, storage)
        elapsed = time.perf_counter() - started
        kinds = sorted({kind for _, _, spent in results.values() for kind in spent})
        print(f"{'trials':>7} {'median ms/trial':>16} {'mean ms/trial':>14}  "
              + "".join(f"{k + ' ms':>14}" for k in kinds))
        for count, (median, mean, spent) in results.items():
            print(f"{count:>7} {median * 1000:>16.1f} {mean * 1000:>14.1f}  "
                  + "".join(f"{spent.get(k, 0) * 1000:>14.1f}" for k in kinds))
        if len(counts) > 1:
            first, last = counts[-2], counts[-1]
            print(f"growth from {first} to {last} trials: median {results[last][0] / results[first][0]:.2f}x, "
                  f"mean {results[last][1] / results[first][1]:.2f}x")
        print(f"study of {counts[-1]} trials run in {elapsed:.0f} s")
        means[storage] = {count: mean for count, (_, mean, _) in results.items()}
    if len(means) == 2:
        (a, at), (b, bt) = means.items()
        print("mean ms/trial, " + ", ".join(f"at {c}: {a} {at[c] * 1000:.1f}, {b} {bt[c] * 1000:.1f}, "
                                             f"{at[c] / bt[c]:.2f}x" for c in counts))
    for count in args.tpe_at:
        print(f"TPE sampler alone (in memory), ask + suggest at {count} trials: {tpe_cost(count) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
