"""Coordinator side: how a coordinator runs its trials — one options object for `launch`, `worker` and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fitgap.sweeps.spec import SpecError

MAX_TRIALS_PER_EXECUTOR = 100  # then the executor is replaced: Keras leaks ~1 MiB per trial (bench/memory.py)
CHOICES = ("none", "best", "all")  # of save_models and plots


@dataclass(frozen=True)
class RunOptions:
    """gpus, slots_per_gpu, cpu_slots: see `slots.plan_slots`. timeout: seconds after which no trial starts.
    retries: how often a trial whose executor or coordinator died is retried with the same params.
    max_trials_per_executor: trainings after which an executor is replaced. fuse: trials per fused batch (default:
    `choice.choose_k`). allow_builder: let a spec's `model.builder` import the user's module. save_models: none,
    best (the best trial's model, or the Pareto set's, under <workspace>/models/<study>/, also logged to its MLflow
    run) or all. plots: which trials get their plots (learning curves, decision boundary) in their MLflow runs: none,
    best (each new best: `keeping.PlotPolicy`) or all. deterministic: TensorFlow's op determinism in every executor
    (on a GPU, what `fitgap rerun` needs to reproduce a trial to the bit; costs some speed)."""

    timeout: float | None = None
    gpus: str | None = None
    slots_per_gpu: int = 1
    cpu_slots: int | None = None
    retries: int = 1
    max_trials_per_executor: int = MAX_TRIALS_PER_EXECUTOR
    fuse: int | None = None
    allow_builder: bool = False
    save_models: str = "best"
    plots: str = "best"
    deterministic: bool = False

    def __post_init__(self):
        for name in ("save_models", "plots"):
            if getattr(self, name) not in CHOICES:
                raise SpecError(f"`{name}` must be one of {', '.join(CHOICES)}, but got {getattr(self, name)!r}")

    @classmethod
    def split(cls, options: dict[str, Any]) -> tuple["RunOptions", dict[str, Any]]:
        """(the run options among keyword arguments, the rest: the store options of `Stores.resolve`)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names}), \
            {k: v for k, v in options.items() if k not in names}
