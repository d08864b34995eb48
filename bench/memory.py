"""Peak RSS of one executor process after 20 and after 200 trials, in one run.

    .venv/bin/python bench/memory.py [--trials 200] [--epochs 20]

Drives a real executor process (the one `fitgap launch` starts) over the protocol, with the dot spec's reference
model, and reads the process's VmHWM (peak resident set) from /proc. This is why executors are replaced after
--max-trials-per-executor trainings (default 100).
"""

from __future__ import annotations

import argparse
import queue
import tempfile
from pathlib import Path

from fitgap.studies.executors import ExecutorProcess
from fitgap.studies.messages import Ready, TrialOutcome, TrialTask
from fitgap.studies.slots import plan_slots
from fitgap.sweeps.space import trial_params
from fitgap.sweeps.spec import parse_spec


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    spec = parse_spec({"name": "bench-memory", "dataset": {"name": "dot"}, "epochs": args.epochs})
    params = trial_params(spec, {"activation": "relu", "regularizer": "l2", "regularization_weight": 0.001})
    events: queue.Queue = queue.Queue()
    with tempfile.TemporaryDirectory() as logs:
        executor = ExecutorProcess(plan_slots("none", cpu_slots=1)[0], events, Path(logs) / "executor.log")
        checkpoints = {20: None, args.trials: None}
        done = 0
        while done < args.trials:
            _, message = events.get(timeout=600)
            if isinstance(message, Ready):
                print(f"after start-up (TensorFlow imported): {peak_rss_mib(executor.pid):.0f} MiB")
                for number in range(args.trials):
                    executor.submit(TrialTask("bench-memory", number, params, number, spec.dataset.model_dump()))
            elif isinstance(message, TrialOutcome):
                done += 1
                if done in checkpoints:
                    checkpoints[done] = peak_rss_mib(executor.pid)
                    print(f"after {done:>4} trials: peak RSS {checkpoints[done]:.0f} MiB")
        executor.close()
    growth = checkpoints[args.trials] - checkpoints[20]
    print(f"growth from 20 to {args.trials} trials: {growth:.0f} MiB ({growth / (args.trials - 20) * 1024:.0f} KiB per trial)")


if __name__ == "__main__":
    main()
