"""The batching rule (`studies/batching.py`) per sampler, on the samplers `make_sampler` builds."""

from __future__ import annotations

import pytest

from fitgap.studies.batching import in_flight_limit
from fitgap.sweeps import space
from fitgap.sweeps.space import make_sampler
from fitgap.sweeps.spec import parse_spec

SEARCH = {"learning_rate": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.2},  # four numbers, one category
          "decay_rate": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.25},
          "decay_steps": {"type": "int", "low": 1, "high": 3},
          "batch_size": {"type": "int", "low": 16, "high": 32, "step": 16},
          "activation": {"type": "categorical", "choices": ["relu", "tanh"]}}


@pytest.fixture
def sampler_of(monkeypatch):
    monkeypatch.setattr(space, "_SAMPLER_NEEDS", {})  # building GP's and CMA-ES's samplers needs neither package

    def sampler_of(name: str):
        spec = parse_spec({"name": "b", "dataset": {"name": "dot"}, "trials": 30, "sampler": name, "seed": 1,
                           "search": SEARCH})
        return make_sampler(spec, seed=3), spec

    return sampler_of


def rounds(sampler, spec, budget: int) -> list[int]:
    """The sizes of the rounds a study of `budget` trials is asked in when every round is told before the next."""
    told, sizes = 0, []
    while told < budget:
        sizes.append(min(in_flight_limit(sampler, told, spec), budget - told))
        told += sizes[-1]
    return sizes


@pytest.mark.parametrize("name", ["tpe", "gp"])
def test_tpe_and_gp_ask_their_start_up_trials_first_then_rounds_as_large_as_all_before(sampler_of, name):
    sampler, spec = sampler_of(name)
    assert [in_flight_limit(sampler, told, spec) for told in (0, 4, 9, 10, 15, 19, 20, 39, 40)] == \
        [10, 6, 1, 10, 5, 1, 20, 1, 40]
    assert rounds(sampler, spec, 30) == [10, 10, 10] and rounds(sampler, spec, 200) == [10, 10, 20, 40, 80, 40]
    sampler._n_startup_trials = 3  # read from the sampler, not copied
    assert rounds(sampler, spec, 30) == [3, 3, 6, 12, 6]


def test_cmaes_asks_its_start_up_trial_then_one_generation_a_round(sampler_of):
    sampler, spec = sampler_of("cmaes")
    assert sampler._n_startup_trials == 1 and sampler._popsize is None
    assert rounds(sampler, spec, 30) == [1, 8, 8, 8, 5]  # 4 + floor(3 ln 4): four numeric dimensions
    sampler._popsize = 5
    assert rounds(sampler, spec, 12) == [1, 5, 5, 1]


def test_nsgaii_asks_one_generation_a_round(sampler_of):
    sampler, spec = sampler_of("nsgaii")
    assert [in_flight_limit(sampler, told, spec) for told in (0, 49, 50, 99, 100)] == [50, 1, 50, 1, 50]
    sampler._population_size = 8
    assert rounds(sampler, spec, 30) == [8, 8, 8, 6]


@pytest.mark.parametrize("name", ["random", "grid", "qmc"])
def test_samplers_that_draw_without_results_batch_freely(sampler_of, name):
    sampler, spec = sampler_of(name)
    assert [in_flight_limit(sampler, told, spec) for told in (0, 10, 1000)] == [None, None, None]
