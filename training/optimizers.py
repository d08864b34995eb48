"""TensorFlow side: the optimizers and the kernel penalty of the compiled and the fused executors, as pure functions
of tensors, so that one graph serves many trials.

Contract: `OPTIMIZER_RULES[kind].update(variable, gradient, slots, lr, step, hyperparameters) -> (variable, slots)`
is the `update_step` of the optimizer the keras executor trains with (`model.OPTIMIZERS`: Keras's own,
keras/src/optimizers/*.py, or `CourseMomentum` below), op for op, so a trial trains as `model.fit` trains it. Every
hyperparameter is a tensor: a scalar for one trial, or a vector over a leading trial axis for a fused batch (`along`
shapes it to broadcast), so trials of one optimizer share a graph whatever their hyperparameters, sgdm's
`momentum_form` included (both forms are computed, `tf.where` picks). `penalty` is Keras's L1, L2 and L1L2 with the
weights as tensors: a zero weight adds an exact 0, so regularizer "none" shares the graph of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from fitgap.training.parts import param

EPSILON = 1e-7  # Keras's optimizer epsilon default, which fitgap keeps (the course's RMSProp and Adam have none)


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
    momentum, b1, b2, rho = (float(param(params, name)) for name in ("momentum", "beta_1", "beta_2", "rho"))
    return {"momentum": momentum, "one_minus_momentum": 1 - momentum,
            "course_momentum": float(param(params, "momentum_form") == "course"),  # 1: the course's form, 0: Keras's
            "rho": rho, "one_minus_rho": 1 - rho,
            "beta_1": b1, "beta_2": b2, "one_minus_beta_1": 1 - b1, "one_minus_beta_2": 1 - b2}


def _sgd(p, g, slots, lr, step, h):
    return p - g * lr, slots


def _sgdm(p, g, slots, lr, step, h):
    (m,) = slots
    momentum, course = along(h["momentum"], p), along(h["course_momentum"], p) > 0
    velocity = m * momentum - g * lr  # Keras's SGD
    average = m * momentum + g * along(h["one_minus_momentum"], p)  # `CourseMomentum`
    return tf.where(course, p - average * lr, p + velocity), [tf.where(course, average, velocity)]


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
    slots: tuple[float | str, ...]  # each slot variable's initial value: a number, or the hyperparameter holding it


OPTIMIZER_RULES: dict[str, OptimizerRule] = {
    "sgd": OptimizerRule(_sgd, ()),
    "sgdm": OptimizerRule(_sgdm, (0.0,)),
    "adagrad": OptimizerRule(_adagrad, ("initial_accumulator",)),
    "rmsprop": OptimizerRule(_rmsprop, (0.0,)),
    "adam": OptimizerRule(_adam, (0.0, 0.0)),
}


def initial_slots(rule: OptimizerRule, variables: Sequence[np.ndarray],
                  params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[list[np.ndarray]]:
    """Each variable's slots at their starting values, float32: `params` is the trial's, or for a fused batch one
    per row of the variables' leading trial axis (each row starts at its own trial's values)."""

    def start(value: float | str, p: Mapping[str, Any]) -> float:
        return float(param(p, value)) if isinstance(value, str) else value

    def full(variable: np.ndarray, value: float | str) -> np.ndarray:
        if isinstance(params, Mapping):
            return np.full(variable.shape, start(value, params), dtype=np.float32)
        rows = np.array([start(value, p) for p in params], dtype=np.float32).reshape(-1, *[1] * (variable.ndim - 1))
        return np.broadcast_to(rows, variable.shape).copy()

    return [[full(v, value) for value in rule.slots] for v in variables]


class CourseMomentum(keras.optimizers.Optimizer):
    """SGD with momentum as the course writes it: ``m = momentum * m + (1 - momentum) * g; w -= lr * m`` (Keras's
    SGD takes ``v = momentum * v - lr * g; w += v``, a step 1 / (1 - momentum) times larger at a constant rate).
    `momentum_form: course`; `_sgdm` is its update, op for op."""

    def __init__(self, learning_rate=0.01, momentum: float = 0.9, name: str = "course_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.averages = self.add_optimizer_variables(variables, "average")

    def update_step(self, gradient, variable, learning_rate):
        lr = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        m = self.averages[self._get_variable_index(variable)]
        momentum = keras.ops.cast(self.momentum, variable.dtype)
        rest = keras.ops.cast(1 - self.momentum, variable.dtype)  # in float64 first, as `optimizer_hyperparameters`
        self.assign(m, keras.ops.add(keras.ops.multiply(m, momentum), keras.ops.multiply(gradient, rest)))
        self.assign_sub(variable, keras.ops.multiply(m, lr))

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}
