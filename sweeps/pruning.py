"""Spec language: the spec's `pruner:` section, and the epochs at which a trial reports to it.

Every report is a storage write, so a trial reports only at the epochs where its pruner decides: every
`report_every` epochs for median/percentile, the rungs for successive halving and Hyperband. Steps are epochs
trained (epoch index + 1). The full curves are kept anyway: they go to MLflow and the results database.
"""

from __future__ import annotations

from typing import Annotated, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Pruner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)  # as the spec's


class NoPruner(_Pruner):
    type: Literal["none"]


class MedianPruner(_Pruner):
    type: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)  # trials that finish before any pruning
    n_warmup_steps: int = Field(0, ge=0)  # epochs a trial trains before it can be pruned
    report_every: PositiveInt | None = None  # default: a tenth of the epochs


class PercentilePruner(MedianPruner):
    type: Literal["percentile"]  # type: ignore[assignment]
    percentile: float = Field(25.0, gt=0, lt=100)  # pruned below this percentile of the other trials


class SuccessiveHalvingPruner(_Pruner):
    type: Literal["successive_halving"]
    min_resource: PositiveInt = 1  # epochs of the first rung
    reduction_factor: int = Field(3, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)


class HyperbandPruner(_Pruner):
    type: Literal["hyperband"]
    min_resource: PositiveInt = 1
    reduction_factor: int = Field(3, ge=2)


PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")
PrunerSpec = Annotated[
    NoPruner | MedianPruner | PercentilePruner | SuccessiveHalvingPruner | HyperbandPruner,
    Field(discriminator="type"),
]


def make_pruner(spec: PrunerSpec | None, epochs: int) -> optuna.pruners.BasePruner:
    pruners = optuna.pruners
    match spec:
        case None | NoPruner():
            return pruners.NopPruner()
        case PercentilePruner():
            return pruners.PercentilePruner(spec.percentile, spec.n_startup_trials, spec.n_warmup_steps)
        case MedianPruner():
            return pruners.MedianPruner(spec.n_startup_trials, spec.n_warmup_steps)
        case SuccessiveHalvingPruner():
            return pruners.SuccessiveHalvingPruner(spec.min_resource, spec.reduction_factor,
                                                   spec.min_early_stopping_rate)
        case HyperbandPruner():
            return pruners.HyperbandPruner(spec.min_resource, epochs, spec.reduction_factor)
    raise AssertionError(spec)


def report_epochs(spec: PrunerSpec | None, epochs: int) -> frozenset[int]:
    """The epoch indices (from 0) after which a trial reports its objective and waits for the pruner's answer."""
    match spec:
        case None | NoPruner():
            return frozenset()
        case MedianPruner():  # and PercentilePruner
            every = spec.report_every or max(1, epochs // 10)
            return frozenset(range(every - 1, epochs - 1, every))  # the last epoch ends the trial anyway
        case SuccessiveHalvingPruner() | HyperbandPruner():
            rungs, resource = set(), spec.min_resource
            while resource < epochs:
                rungs.add(resource - 1)
                resource *= spec.reduction_factor
            return frozenset(rungs)
    raise AssertionError(spec)
