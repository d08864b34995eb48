"""What the batching rule (`studies/batching.py`) costs: the dot sweep (`sweeps/specs/dot.yaml`, TPE) with the rule
and without it, in one run.

    .venv/bin/python bench/batching.py [--trials 30 100] [--pairs 1] [--spec sweeps/specs/dot.yaml]

The spec (default: the dot sweep, TPE, `executor: auto`, hence fused batches of K = 64 on the dot data) is launched
through the public API into fresh workspaces, for each budget with the rule as shipped and without it (the coordinator's
`in_flight_limit` replaced by "no limit", for this benchmark only), as a user runs it: storage, tracking and the
executor's start-up included; `--pairs N` launches each N times, interleaved (bound, free, free, bound, ...) so that
neither gets the quieter minutes of a shared machine. Printed per launch: seconds end to end, trials per minute, the
trials asked before the sampler had a result (blind), the most trials in flight when one was asked (in flight, it
included) and the mean objective of the study's second half (what the sampler made of the first; one seed: an
illustration, not a comparison of search quality); then the ratio of the rates over a budget's launches.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from fitgap import launch
from fitgap.studies import coordinator
from fitgap.studies.stores import Stores
from fitgap.studies.study import open_storage
from fitgap.sweeps.reading import load_spec

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "specs" / "dot.yaml"


def run(spec_path: Path, trials: int, bound: bool) -> dict:
    spec = load_spec(spec_path).model_copy(update={"name": f"bench-batching-{trials}-{'bound' if bound else 'free'}"})
    shipped = coordinator.in_flight_limit
    if not bound:
        coordinator.in_flight_limit = lambda sampler, told, spec: None
    try:
        with tempfile.TemporaryDirectory() as workspace:
            started = time.perf_counter()
            launch(spec, trials=trials, workspace=workspace)
            seconds = time.perf_counter() - started
            study = optuna.load_study(study_name=spec.name, storage=open_storage(Stores.resolve(workspace=workspace).storage))
            asked = study.get_trials()
    finally:
        coordinator.in_flight_limit = shipped
    told = [sum(t.datetime_complete is not None and t.datetime_complete < trial.datetime_start for t in asked)
            for trial in asked]  # the results Optuna had at each ask
    return {"seconds": seconds, "rate": 60 * trials / seconds, "blind": told.count(0),
            "in_flight": max(number - seen for number, seen in enumerate(told)) + 1,
            "later": statistics.fmean(t.value for t in asked[trials // 2:] if t.value is not None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--spec", type=Path, default=SPEC)
    args = parser.parse_args()
    print(f"{'trials':>6} {'batching':>8} {'seconds':>8} {'trials/min':>10} {'blind':>6} {'in flight':>9} "
          f"{'mean 2nd half':>13}")
    for trials in args.trials:
        seconds = {True: 0.0, False: 0.0}
        for pair in range(args.pairs):
            for bound in (True, False) if pair % 2 == 0 else (False, True):
                r = run(args.spec, trials, bound)
                seconds[bound] += r["seconds"]
                print(f"{trials:>6} {'bound' if bound else 'free':>8} {r['seconds']:>8.1f} {r['rate']:>10.1f} "
                      f"{r['blind']:>6} {r['in_flight']:>9} {r['later']:>13.4f}", flush=True)
        print(f"{trials:>6} ratio bound / free: {seconds[False] / seconds[True]:.2f}x trials per minute", flush=True)


if __name__ == "__main__":
    main()
