"""Trials per minute with 1 and with 2 CPU slots on the same sweep, in one run.

    .venv/bin/python bench/slots.py [--trials 64] [--spec SPEC ...]

Each sweep (default: the dot spec, whose trials train in ~0.7 s, and the course's digits MLP, ~1.2 s) is launched
with 1 and then 2 CPU slots into fresh workspaces through the public API, storage and tracking included, with the
keras executor and the random sampler: the sampler's draws follow the trial number, so both launches train the same
trials. Two rates: end to end (launch to last trial, executor start-up included) and steady (first finished trial
to last).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fitgap import launch
from fitgap.sweeps.reading import load_spec

SPECS = Path(__file__).resolve().parent.parent / "sweeps" / "specs"
DEFAULT_SPECS = [SPECS / "dot.yaml", SPECS / "course" / "digits-mlp.yaml"]


def run(spec_path: Path, slots: int, trials: int) -> tuple[float, float]:
    # The keras executor trains one trial per slot at a time: what slots multiply is trials, not batches.
    spec = load_spec(spec_path).model_copy(update={"name": f"bench-slots-{slots}", "executor": "keras",
                                                   "sampler": "random"})
    finished: list[float] = []
    with tempfile.TemporaryDirectory() as workspace:
        started = time.perf_counter()
        launch(spec, trials=trials, cpu_slots=slots, workspace=workspace,
               on_trial=lambda record, used, budget: finished.append(time.perf_counter()))
        ended = time.perf_counter()
    end_to_end = 60 * trials / (ended - started)
    steady = 60 * (len(finished) - 1) / (finished[-1] - finished[0])
    return end_to_end, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--spec", type=Path, action="append", help="a sweep spec (repeatable) [default: dot, digits]")
    args = parser.parse_args()
    print(f"{args.trials} trials per launch")
    print(f"{'sweep':<22} {'slots':>5} {'trials/min end to end':>22} {'trials/min steady':>18}")
    for spec_path in args.spec or DEFAULT_SPECS:
        rates = {slots: run(spec_path, slots, args.trials) for slots in (1, 2)}
        for slots, (end_to_end, steady) in rates.items():
            print(f"{spec_path.stem:<22} {slots:>5} {end_to_end:>22.1f} {steady:>18.1f}")
        print(f"{spec_path.stem:<22} ratio 2 slots / 1 slot: end to end {rates[2][0] / rates[1][0]:.2f}x, "
              f"steady {rates[2][1] / rates[1][1]:.2f}x")


if __name__ == "__main__":
    main()
