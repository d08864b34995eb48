"""Coordinator side: how many trials may be asked and not yet told at once, so that batching (fused batches, asking
ahead) never hides every result from a model-based sampler. Pure: the sampler object (`sweeps.space.make_sampler`),
the spec and a count of told trials in, a number out.

- ``in_flight_limit(sampler, told, spec) -> int | None``: the most trials in flight now (None: no limit), with `told`
  results (finished trials) in the study of `spec`.

The rule works in rounds: the next round is asked once the last is told.

- Start-up: the first round is the sampler's start-up trials, which it draws at random anyway (TPE's and GP's
  `n_startup_trials`, CMA-ES's, NSGA-II's first generation, `population_size`); without the round a fused batch of
  64 would be 64 random trials (Optuna counts start-up trials by results, not by asks: optuna/optuna#2923).
- TPE and GP then double: each round is as large as all the rounds before it, so the trials a sampler draws
  without their siblings' results (the constant liar's and GP's q-batch's lies) never outnumber the results it
  has seen. For 30 trials: 10, 10, 10; for 200: 10, 10, 20, 40, 80, 40.
- CMA-ES and NSGA-II then ask one generation a round (CMA-ES's `popsize`, NSGA-II's `population_size`): a
  generation is drawn from one distribution, or bred from one parent population, so asking it whole hides
  nothing, and trials beyond it would join the generation still running (Optuna: "parallel execution ... may
  degrade the optimization performance of CMA-ES, especially if the number of trials running in parallel exceeds
  the population size").
- Random, grid and QMC draw without results: no limit.

Rounds rather than a bound that follows each tell: tells arrive one by one, and a bound that grew with each would cut
the next fused batch into fragments of one or two trials.
"""

from __future__ import annotations

import math

import optuna

from fitgap.sweeps.spec import CategoricalDim, SweepSpec

samplers = optuna.samplers


def _rounds(sampler: samplers.BaseSampler, spec: SweepSpec) -> tuple[int, int | None] | None:
    """(start-up trials, trials per round after it: None = doubling), or None for a sampler that needs no rounds."""
    if isinstance(sampler, (samplers.TPESampler, samplers.GPSampler)):
        return max(1, sampler._n_startup_trials), None
    if isinstance(sampler, samplers.CmaEsSampler):  # its default population as cmaes sizes it: CMA-ES searches numbers
        dimensions = sum(not isinstance(dim, CategoricalDim) for dim in spec.search.values())
        popsize = sampler._popsize or 4 + math.floor(3 * math.log(max(1, dimensions)))
        return max(1, sampler._n_startup_trials), popsize
    if isinstance(sampler, samplers.NSGAIISampler):
        return sampler._population_size, sampler._population_size
    return None


def in_flight_limit(sampler: samplers.BaseSampler, told: int, spec: SweepSpec) -> int | None:
    """How many trials may be asked and not told now, `told` results in; None: as many as the batching wants."""
    rounds = _rounds(sampler, spec)
    if rounds is None:
        return None
    start_up, size = rounds
    if told < start_up:
        return start_up - told
    end = start_up  # the end of the last round that is all told
    while (following := end + (size or end)) <= told:
        end = following
    return following - told
