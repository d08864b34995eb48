"""TensorFlow side: the optimizers and the kernel penalty of the compiled and the fused executors, as pure functions
of tensors, so that one graph serves many trials.

Contract: `OPTIMIZER_RULES[kind].update(variable, gradient, slots, lr, step, hyperparameters) -> (variable, slots)`
is Keras's own update rule (keras/src/optimizers/*.py `update_step`), op for op, so a trial trains as
`model.fit` trains it. Every hyperparameter is a tensor: a scalar for one trial, or a vector over a leading trial
axis for a fused batch (`along` shapes it to broadcast). `penalty` is Keras's L1, L2 and L1L2 with the weights as
tensors: a zero weight adds an exact 0, so regularizer "none" shares the graph of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from fitgap.training.parts import param

EPSILON = 1e-7  # Keras's optimizer epsilon default, which fitgap keeps
ADAGRAD_START = 0.1  # Keras's Adagrad initial_accumulator_value


def regularizer_weights(params: Mapping[str, Any]) -> tuple[float, float]:
    """(l1, l2) as `parts.REGULARIZERS` builds them, computed in float64 as Keras's Python floats are."""
    kind, weight = param(params, "regularizer"), float(param(params, "regularization_weight"))
    if kind == "l1":
        return weight, 0.0
    if kind == "l2":
        return 0.0, weight
    if kind == "l1_l2":
        ratio = float(param(params, "l1_ratio"))
        return weight * ratio, weight * (1 - ratio)
    return 0.0, 0.0


def along(value: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A per-trial scalar or vector ([K]) shaped to broadcast against `like` ([K, ...])."""
    if value.shape.rank == 0:
        return value
    return tf.reshape(value, [-1] + [1] * (like.shape.rank - 1))


def penalty(kernel: tf.Tensor, l1: tf.Tensor, l2: tf.Tensor, axes=None) -> tf.Tensor:
    """Keras's `L1L2.__call__`: ``0 + l1 * sum|w| + l2 * sum w**2``, summed over `axes` (all when None)."""
    return 0.0 + l1 * tf.reduce_sum(tf.abs(kernel), axes) + l2 * tf.reduce_sum(tf.square(kernel), axes)


def optimizer_hyperparameters(params: Mapping[str, Any]) -> dict[str, float]:
    """The float hyperparameters the update rules read, with Keras's `1 - x` taken in float64 first."""
    b1, b2, rho = (float(param(params, name)) for name in ("beta_1", "beta_2", "rho"))
    return {"momentum": float(param(params, "momentum")), "rho": rho, "one_minus_rho": 1 - rho,
            "beta_1": b1, "beta_2": b2, "one_minus_beta_1": 1 - b1, "one_minus_beta_2": 1 - b2}


def _sgd(p, g, slots, lr, step, h):
    return p - g * lr, slots


def _sgdm(p, g, slots, lr, step, h):
    (m,) = slots
    m = m * along(h["momentum"], p) - g * lr
    return p + m, [m]


def _adagrad(p, g, slots, lr, step, h):
    (accumulator,) = slots
    accumulator = accumulator + tf.square(g)
    return p - (lr * g) / tf.sqrt(accumulator + EPSILON), [accumulator]


def _rmsprop(p, g, slots, lr, step, h):
    (velocity,) = slots
    velocity = along(h["rho"], p) * velocity + along(h["one_minus_rho"], p) * tf.square(g)
    return p - (lr * g) / tf.sqrt(velocity + EPSILON), [velocity]


def _adam(p, g, slots, lr, step, h):
    m, v = slots
    local_step = tf.cast(step + 1, p.dtype)
    beta_1_power = tf.pow(along(h["beta_1"], p), local_step)
    beta_2_power = tf.pow(along(h["beta_2"], p), local_step)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m = m + (g - m) * along(h["one_minus_beta_1"], p)
    v = v + (tf.square(g) - v) * along(h["one_minus_beta_2"], p)
    return p - (m * alpha) / (tf.sqrt(v) + EPSILON), [m, v]


@dataclass(frozen=True)
class OptimizerRule:
    update: Callable  # (variable, gradient, slots, lr, step, hyperparameters) -> (variable, slots)
    slots: tuple[float, ...]  # the initial value of each slot variable, one per slot


OPTIMIZER_RULES: dict[str, OptimizerRule] = {
    "sgd": OptimizerRule(_sgd, ()),
    "sgdm": OptimizerRule(_sgdm, (0.0,)),
    "adagrad": OptimizerRule(_adagrad, (ADAGRAD_START,)),
    "rmsprop": OptimizerRule(_rmsprop, (0.0,)),
    "adam": OptimizerRule(_adam, (0.0, 0.0)),
}


def initial_slots(rule: OptimizerRule, variables: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Each variable's slots at their starting values, float32."""
    return [[np.full(v.shape, start, dtype=np.float32) for start in rule.slots] for v in variables]
