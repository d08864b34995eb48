"""From a spec to what a trial trains with: Optuna samplers, suggestions, and the full params dict."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import optuna

from sweeps.spec import CategoricalDim, FloatDim, SpecError, SweepSpec
from sweeps.vocabulary import HYPERPARAMETERS

# Samplers that need a package fitgap does not install.
_SAMPLER_NEEDS = {"cmaes": "cmaes", "gp": "torch"}


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded. TPE uses the constant liar so that parallel slots don't get the same suggestion."""
    check_sampler(spec)
    samplers = optuna.samplers
    match spec.sampler:
        case "tpe":
            return samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True)
        case "random":
            return samplers.RandomSampler(seed=seed)
        case "grid":
            return samplers.GridSampler(grid(spec), seed=seed)
        case "cmaes":
            return samplers.CmaEsSampler(seed=seed)
        case "qmc":
            return samplers.QMCSampler(seed=seed)
        case "gp":
            return samplers.GPSampler(seed=seed)
        case "nsgaii":
            return samplers.NSGAIISampler(seed=seed)
    raise AssertionError(spec.sampler)


def check_sampler(spec: SweepSpec) -> None:
    package = _SAMPLER_NEEDS.get(spec.sampler)
    if package and importlib.util.find_spec(package) is None:
        raise SpecError(f"`sampler` {spec.sampler!r} needs the package {package!r}: pip install {package}")
    if spec.sampler == "grid":
        grid(spec)


def grid(spec: SweepSpec) -> dict[str, list]:
    """The grid sampler's finite search space; floats need a `step`."""
    space = {}
    for name, dim in spec.search.items():
        if dim.when:
            raise SpecError(f"`search.{name}.when`: the grid sampler cannot search conditional dimensions")
        if isinstance(dim, CategoricalDim):
            space[name] = list(dim.choices)
        elif dim.step is None:
            raise SpecError(f"`search.{name}.step` is needed by the grid sampler, but got step=None")
        else:
            values = np.arange(dim.low, dim.high + dim.step / 2, dim.step)
            space[name] = [v.item() for v in values]
    return space


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Sample the spec's dimensions in order; a dimension whose `when` does not hold is not sampled at all."""
    known = dict(spec.params)
    sampled: dict[str, Any] = {}
    for name, dim in spec.search.items():
        if dim.when and any(known.get(key) not in values for key, values in dim.when.items()):
            continue
        if isinstance(dim, CategoricalDim):
            value = trial.suggest_categorical(name, dim.choices)
        elif isinstance(dim, FloatDim):
            value = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
        else:
            value = trial.suggest_int(name, dim.low, dim.high, log=dim.log, step=dim.step)
        sampled[name] = known[name] = value
    return sampled


def trial_params(spec: SweepSpec, sampled: dict[str, Any]) -> dict[str, Any]:
    """Everything a trial trains with: defaults, then fixed params, then sampled ones, then the spec's shape."""
    params = {name: hp.default for name, hp in HYPERPARAMETERS.items()}
    params.update(spec.params)
    params.update(sampled)
    for name in spec.search.keys() - sampled.keys():
        del params[name]  # a conditional dimension whose condition was false does not exist for this trial
    params.update(epochs=spec.epochs, batch_size=spec.batch_size, hidden=list(spec.model.hidden))
    return params
