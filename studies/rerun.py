"""Coordinator side: `fitgap rerun` — train a stored trial again from its params and seed, and compare the curves.

The tasks are built by the coordinator's own task builder (`trials.trial_task`: the one seed rule) and trained by an
executor process, one repeat at a time (their epoch records carry the same trial number); the curves combine as a
launch combines them (`trials.mean_curves`). Nothing is written.
"""

from __future__ import annotations

import dataclasses
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitgap.data.datasets import load_dataset
from fitgap.studies.executors import Died, ExecutorProcess
from fitgap.studies.messages import Epochs, Ready, TrialOutcome
from fitgap.studies.slots import plan_slots
from fitgap.studies.stores import Stores
from fitgap.studies.study import load_study, stored_spec
from fitgap.studies.trials import mean_curves, trial_task
from fitgap.sweeps.spec import SpecError, check_builder
from fitgap.tracking.records import EpochRecord
from fitgap.tracking.results import ResultsDB


@dataclass(frozen=True)
class Rerun:
    """Trial `number` trained again from its stored params and seed, with both curves."""

    study: str
    number: int
    seeds: list[int]  # one per repeat: the stored seed first
    state: str  # the rerun's
    reason: str | None
    stored_state: str  # the trial's: a pruned trial is stopped where it was pruned, so PRUNED matches PRUNED
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
        return (self.state == self.stored_state and len(self.stored) == len(self.again) and bool(self.again)
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
          allow_builder: bool = False, **store_options) -> Rerun:
    """Rebuild trial `number` from the results database — its stored params, seed and executor — and train it again
    through an executor process (the dataset section comes from the spec stored with the study, its relative paths
    resolving in `data_dir`; a `model.builder` module runs only with `allow_builder`, since on shared storage
    someone else wrote its name). A pruned trial stops where it was pruned. Nothing is written. With the same seed
    the curves match the stored ones."""
    stores = Stores.resolve(**store_options)
    study = load_study(name, stores)
    spec = stored_spec(study, Path(data_dir))
    check_builder(spec, allow_builder)
    with ResultsDB(stores.results_url) as results:
        row = next((r for r in results.trials(name) if r["number"] == number), None)
        if row is None:
            known = [r["number"] for r in results.trials(name)]
            raise SpecError(f"study {name!r} has no trial {number} in the results database (it has "
                            f"{', '.join(map(str, known)) or 'none'})")
        params, stored = results.params(name, number), results.epochs(name, number)
    if row["state"] == "RUNNING":  # its curve so far would never match a whole training
        raise SpecError(f"trial {number} of {name!r} is still running (a RUNNING row, written live): rerun it once "
                        "it has ended")
    if row["seed"] is None or not params:
        raise SpecError(f"trial {number} of {name!r} has no stored params or seed to rebuild it from")
    data = load_dataset(spec.dataset.model_dump(), spec.base_dir)
    if data.content_hash != study.user_attrs.get("fitgap.dataset_hash"):
        raise SpecError(f"the data of study {name!r} differ from the data it was trained on: use --data-dir")
    pruned_at = frozenset({stored[-1]["epoch"]}) if row["state"] == "PRUNED" and stored else frozenset()
    tasks = [dataclasses.replace(trial_task(spec, number, params, repeat, row["executor"] or "keras", prune=False),
                                 decide_at=pruned_at) for repeat in range(row["repeats"] or 1)]
    seeds = [task.seed for task in tasks]
    events: queue.Queue = queue.Queue()
    slot = plan_slots(gpus, 1, None, deterministic=True)[0]  # on a GPU, a match to the bit needs it
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
                for record in message.records:
                    if record.epoch in pruned_at:  # the executor waits for the pruner's answer: stop, as it did
                        executor.decide(number, record.epoch, True)
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
    return Rerun(name, number, seeds, outcome.state, outcome.reason, row["state"], stored, again, tolerance)
