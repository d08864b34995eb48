"""What changes from epoch to epoch, decided by fitgap rather than by Keras, so every executor agrees on it.

No TensorFlow here: a compiled or fused executor, a test, or a report can recompute the exact learning rate and batch
order of any stored trial from its params and seed.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sweeps.vocabulary import HYPERPARAMETERS


def learning_rate_at(params: Mapping[str, Any], epoch: int) -> float:
    """The learning rate used throughout `epoch` (counted from 0): exponential decay in epochs, not optimizer steps.

    ``learning_rate * decay_rate ** (epoch / decay_steps)``; with ``staircase`` the exponent is ``epoch // decay_steps``.
    """

    def get(name: str) -> Any:
        return params.get(name, HYPERPARAMETERS[name].default)

    steps = get("decay_steps")
    exponent = epoch // steps if get("staircase") else epoch / steps
    return float(get("learning_rate") * get("decay_rate") ** exponent)


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the `n` training rows: a permutation fixed by (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)
