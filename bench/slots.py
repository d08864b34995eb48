"""Trials per minute with 1 and with 2 CPU slots on the same sweep, in one run.

    .venv/bin/python bench/slots.py [--trials 64] [--epochs 100]

Each configuration launches the same study (the course's 2-D points, the dot spec's search space, fixed seed, the
keras executor) into a fresh workspace through the public API, storage and tracking included. Two rates are printed: end to end (from
launch to the last trial, executor start-up included) and steady (from the first finished trial to the last).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from studies import launch
from sweeps.spec import load_spec

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "specs" / "dot.yaml"


def run(slots: int, trials: int, epochs: int) -> tuple[float, float]:
    # The keras executor trains one trial per slot at a time: what slots multiply is trials, not batches.
    spec = load_spec(SPEC).model_copy(update={"name": f"bench-slots-{slots}", "epochs": epochs, "executor": "keras"})
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
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    rates = {slots: run(slots, args.trials, args.epochs) for slots in (1, 2)}
    print(f"{args.trials} trials x {args.epochs} epochs, dot spec search space")
    print(f"{'slots':>5} {'trials/min end to end':>22} {'trials/min steady':>18}")
    for slots, (end_to_end, steady) in rates.items():
        print(f"{slots:>5} {end_to_end:>22.1f} {steady:>18.1f}")
    print(f"ratio 2 slots / 1 slot: end to end {rates[2][0] / rates[1][0]:.2f}x, steady {rates[2][1] / rates[1][1]:.2f}x")


if __name__ == "__main__":
    main()
