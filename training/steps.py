"""TensorFlow side: what changes from step to step and epoch to epoch, decided by fitgap from the params and the
seed alone (numpy, no TensorFlow import), so that every executor trains alike and a test or a report can recompute
any stored trial's rates and batch order.

The learning rate of every optimizer step:

``lr = learning_rate * decay_rate ** (t / decay_steps)``, with ``t // decay_steps`` as the exponent under
``staircase``. What `t` counts is ``decay_unit``:
- ``epoch`` (the default): t is the epoch (from 0), so the rate is constant within an epoch and changes between them;
- ``step``: t is the optimizer step (from 0), as in Keras's ``ExponentialDecay``, so the rate changes at every batch.
The trainer hands the optimizer this table of per-step rates; the ``lr`` logged for an epoch is the rate of its first
step (for ``epoch``, the rate of the whole epoch).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fitgap.sweeps.vocabulary import HYPERPARAMETERS


def learning_rates(params: Mapping[str, Any], steps: np.ndarray, steps_per_epoch: int) -> np.ndarray:
    """The rate (float64) of each optimizer step in `steps`, counted from 0 across epochs."""

    def get(name: str) -> Any:
        return params.get(name, HYPERPARAMETERS[name].default)

    steps = np.asarray(steps, dtype=np.int64)
    t = steps // steps_per_epoch if get("decay_unit") == "epoch" else steps
    exponent = t // get("decay_steps") if get("staircase") else t / get("decay_steps")
    return float(get("learning_rate")) * float(get("decay_rate")) ** exponent.astype(np.float64)


def step_table(params: Mapping[str, Any], steps_per_epoch: int, epochs: int) -> np.ndarray:
    """Every step's rate for a whole training, as float32 (what the optimizer reads)."""
    return learning_rates(params, np.arange(steps_per_epoch * epochs), steps_per_epoch).astype(np.float32)


def epoch_learning_rate(params: Mapping[str, Any], epoch: int, steps_per_epoch: int) -> float:
    """The logged rate of `epoch`: the rate of its first step."""
    return float(learning_rates(params, np.array([epoch * steps_per_epoch]), steps_per_epoch)[0])


def batch_order(seed: int, epoch: int, n: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch `epoch` visits the `n` training rows: a permutation fixed by (seed, epoch) alone, or
    without `shuffle` (the trial's `shuffle: false`, the course's way) the rows in their stored order, every epoch."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)
