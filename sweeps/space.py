"""Spec language: from a spec to what a trial trains with: Optuna samplers, suggestions, and the full params dict."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
from typing import Any

import numpy as np
import optuna
from optuna.samplers._lazy_random_state import LazyRandomState

from fitgap.sweeps.spec import CategoricalDim, FloatDim, SpecError, SweepSpec
from fitgap.sweeps.vocabulary import CONDITIONS, HYPERPARAMETERS, SHAPE, shorten

# Samplers that need a package fitgap does not install.
_SAMPLER_NEEDS = {"cmaes": "cmaes", "gp": "torch"}


def derive_seed(*parts) -> int:
    """A 31-bit seed from the study seed and what must make it distinct (a trial number, a repeat...)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler, its random draws seeded per trial (see `_SeededPerTrial`). TPE uses the constant liar so
    that parallel slots don't get the same suggestion."""
    check_sampler(spec)
    samplers = optuna.samplers
    match spec.sampler:
        case "tpe":
            return _seeded(samplers.TPESampler)(seed=seed, constant_liar=True, multivariate=True, group=True)
        case "random":
            return _seeded(samplers.RandomSampler)(seed=seed)
        case "grid":
            return _seeded(_GridSampler)(grid(spec), seed=seed)
        case "cmaes":
            return _seeded(samplers.CmaEsSampler)(seed=seed)
        case "qmc":  # scrambled: unscrambled Sobol ignores the seed, and its first point is every dimension's low
            return _seeded(samplers.QMCSampler)(seed=seed, scramble=True)
        case "gp":
            return _seeded(samplers.GPSampler)(seed=seed)
        case "nsgaii":
            return _seeded(samplers.NSGAIISampler)(seed=seed)
    raise AssertionError(spec.sampler)


class _SeededPerTrial:
    """Each trial draws from random states of its own, seeded from the sampler's seed and the trial number, whatever
    the order of asks and suggestions (a batch may ask several trials before it suggests their params). Trial numbers
    are unique in a study, so coordinators that start at once with one seed (two workers) draw different parameters
    instead of each replaying the other's sequence, and a resumed study moves on."""

    def __init__(self, *args, seed: int, **kwargs) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        self._fitgap_seed = seed
        self._trial_states: dict[int, list[np.random.RandomState]] = {}  # of the trials not yet told

    def _draw_for(self, number: int) -> None:
        """Point every random state of the sampler (and of the samplers inside it) at trial `number`'s own."""
        lazy = list(_random_states(self))
        if number not in self._trial_states:
            self._trial_states[number] = [np.random.RandomState(derive_seed(self._fitgap_seed, number, i))
                                          for i in range(len(lazy))]
        for state, own in zip(lazy, self._trial_states[number]):
            state._rng = own

    def before_trial(self, study, trial) -> None:
        self._draw_for(trial.number)
        super().before_trial(study, trial)

    def sample_relative(self, study, trial, search_space):
        self._draw_for(trial.number)
        return super().sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        self._draw_for(trial.number)
        return super().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._trial_states.pop(trial.number, None)
        super().after_trial(study, trial, state, values)


@functools.cache
def _seeded(sampler: type) -> type:
    return type(sampler.__name__, (_SeededPerTrial, sampler), {})


def _random_states(sampler: optuna.samplers.BaseSampler):
    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            yield value
        elif isinstance(value, optuna.samplers.BaseSampler):
            yield from _random_states(value)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is covered: that call raises under ask/tell (it
    works only inside `optimize`), and the study's trial budget is what ends a fitgap study anyway."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def check_sampler(spec: SweepSpec) -> None:
    package = _SAMPLER_NEEDS.get(spec.sampler)
    if package and importlib.util.find_spec(package) is None:
        raise SpecError(f"`sampler` {spec.sampler!r} needs the package {package!r}: pip install "
                        f"\"fitgap[{spec.sampler}]\" (or pip install {package})")
    if spec.sampler == "grid":
        grid(spec)


MAX_GRID_POINTS = 1_000_000  # Optuna's GridSampler holds every point in memory


def grid(spec: SweepSpec) -> dict[str, list]:
    """The grid sampler's finite search space (categorical choices cut down to the task's); floats need a `step`.
    Its size is counted before anything is built: at most MAX_GRID_POINTS points."""
    sizes = {}
    for name, dim in spec.search.items():
        if dim.when:
            raise SpecError(f"`search.{name}.when`: the grid sampler cannot search conditional dimensions")
        if isinstance(dim, CategoricalDim):
            sizes[name] = len(spec.choices(name))
        elif dim.points is None:
            raise SpecError(f"`search.{name}.step` is needed by the grid sampler, but got step=None")
        else:
            sizes[name] = dim.points
    points = math.prod(sizes.values())
    if points > MAX_GRID_POINTS:
        shown = " x ".join(f"{size:,} {name}" for name, size in sizes.items())
        raise SpecError(f"`search`: the grid has {shorten(f'{points:,}')} points ({shorten(shown)}), more than the "
                        f"{MAX_GRID_POINTS:,} the grid sampler takes: use fewer choices or larger steps, or another "
                        "sampler")
    space = {}
    for name, dim in spec.search.items():
        if isinstance(dim, CategoricalDim):
            space[name] = [_to_optuna(c) for c in spec.choices(name)]
        else:
            values = np.arange(dim.low, dim.high + dim.step / 2, dim.step)
            space[name] = [v.item() for v in values]
    return space


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Sample the spec's dimensions in order; a dimension whose `when` does not hold is not sampled at all.

    Categorical choices are the ones that fit the dataset's task (`SweepSpec.choices`), so an incompatible loss is
    never sampled. A list choice (`hidden` widths) is a JSON string to Optuna and a list in the returned params.
    """
    known = {name: spec.value_of(name) for name in HYPERPARAMETERS if name not in spec.search}
    sampled: dict[str, Any] = {}
    for name, dim in spec.search.items():
        if dim.when and any(known.get(key) not in values for key, values in dim.when.items()):
            continue
        if isinstance(dim, CategoricalDim):
            value = from_optuna(trial.suggest_categorical(name, [_to_optuna(c) for c in spec.choices(name)]), name)
        elif isinstance(dim, FloatDim):
            value = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
        else:
            value = trial.suggest_int(name, dim.low, dim.high, log=dim.log, step=dim.step)
        sampled[name] = known[name] = value
    return sampled


def _to_optuna(choice: Any) -> Any:
    return json.dumps(choice) if isinstance(choice, list) else choice


def from_optuna(value: Any, name: str) -> Any:
    return json.loads(value) if HYPERPARAMETERS[name].kind is list else value


def trial_params(spec: SweepSpec, sampled: dict[str, Any]) -> dict[str, Any]:
    """Everything a trial trains with: defaults, then fixed params, then sampled ones, then the model section.

    A hyperparameter that does not exist for this trial is absent: a searched one whose `when` was false, and a
    conditional one (`vocabulary.CONDITIONS`) whose condition is false, e.g. `momentum` unless the optimizer is sgdm.
    `epochs`, `batch_size` and `hidden` are always there; `depth` and `width` only when the spec names one of them,
    and then `hidden` is `[width] * depth`.
    """
    params = {name: spec.value_of(name) for name in HYPERPARAMETERS if name not in SHAPE}
    params.update(sampled)
    for name in spec.search.keys() - sampled.keys():
        params.pop(name, None)  # a conditional dimension whose condition was false does not exist for this trial
    for name, (parent, allowed) in CONDITIONS.items():
        if params.get(parent) not in allowed:
            params.pop(name, None)
    if any(name in spec.search or name in spec.params for name in SHAPE):
        for name in SHAPE:
            params[name] = sampled.get(name, spec.value_of(name))
        params["hidden"] = [params["width"]] * params["depth"]
    params.update(spec.model_params())
    return params
