"""What the compiled and the fused executors share with each other and with `train.py`'s reference loop.

- `start_trial`: the trial's Keras model, built exactly as `train.train` builds it (same seed, so the same initial
  weights and dropout seeds), with its complexity, inputs and loss targets;
- `OPTIMIZER_RULES`: Keras's own update rules (keras/src/optimizers/*.py `update_step`), op for op, written as pure
  functions of tensors so that one graph serves many trials: every hyperparameter is a tensor, a scalar for one trial
  or a vector over a leading trial axis for a fused batch;
- `penalty`: the kernel penalty ``l1 * sum|w| + l2 * sum w**2`` (Keras's L1, L2 and L1L2, with the weights as
  tensors: a zero weight adds an exact 0, so regularizer "none" shares the graph of the others);
- `EpochWatch`: what happens after an epoch (non-finite loss, the record, a stop request, early stopping), exactly as
  `train._EpochMonitor` does it, on plain measured values;
- `finish_trial`: a complete trial's artifacts (`artifacts.trial_artifacts`), from its own Keras model given its final
  weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from studies.keras.artifacts import trial_artifacts
from studies.keras.complexity import count, to_csv
from studies.keras.decay import epoch_learning_rate
from studies.keras.heads import Head, head_for, loss_targets, output_units
from studies.keras.inputs import model_inputs
from studies.keras.model import build_model
from studies.keras.parts import param
from studies.keras.train import _EarlyStopping
from studies.protocol import TrialTask
from sweeps.vocabulary import COMPLEXITY_METRICS, TASK_METRICS, epoch_metrics
from tracking.records import EpochRecord

EPSILON = 1e-7  # Keras's optimizer epsilon default, which fitgap keeps
ADAGRAD_START = 0.1  # Keras's Adagrad initial_accumulator_value


@dataclass(frozen=True, eq=False)
class TrialStart:
    """One trial, ready to train: its model with the initial weights and everything measured about it."""

    model: keras.Model
    head: Head
    units: int
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray | None
    targets: np.ndarray  # what the training loss compares with (one-hot where the loss wants it)
    complexity: dict[str, int]
    artifacts: dict[str, bytes]


def start_trial(task: TrialTask, data, collect_garbage: bool = True) -> TrialStart:
    """`train.train`'s first steps, to the same model: same initial weights, same layer names in complexity.csv.

    `collect_garbage=False` skips the full garbage collection of `clear_session` (a fused batch collects once for all
    its members: one collection costs ~10 ms in a process with many live objects)."""
    keras.backend.clear_session(free_memory=collect_garbage)
    keras.utils.set_random_seed(task.seed)
    params = task.params
    head, units = head_for(params, data.task), output_units(data)
    x_train, x_val, x_test = model_inputs(params, data)
    model = build_model(params, x_train.shape[1:], data.task, units, search_dir=task.data_dir)
    totals = count(model)
    return TrialStart(model, head, units, x_train, x_val, x_test, loss_targets(head, data.y_train, units),
                      {name: totals[name] for name in COMPLEXITY_METRICS},
                      {"complexity.csv": to_csv(totals["layers"]).encode()})


def finish_trial(start: TrialStart, task: TrialTask, data, weights: Sequence[np.ndarray]) -> dict[str, bytes]:
    """The artifacts of a complete trial (`artifacts.trial_artifacts`: boundary.npz, model.keras), from its own Keras
    model given the weights it ends with: trainable then non-trainable variables, each cut to the variable's shape
    (a fused member's are padded)."""
    model = start.model
    for variable, value in zip([*model.trainable_variables, *model.non_trainable_variables], weights):
        variable.assign(value[tuple(slice(0, size) for size in variable.shape)])
    return trial_artifacts(model, task.params, data, start.head, task.save_model)


# ---- the penalty and the optimizers, with hyperparameters as tensors ------------------------------------------------


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
    return [[np.full(v.shape, start, dtype=np.float32) for start in rule.slots] for v in variables]


# ---- after each epoch ------------------------------------------------------------------------------------------------


def measured_names(task: str) -> list[str]:
    """The order of a measure function's vector: loss and task metrics on train, then on validation, then reg_loss."""
    own = ("loss", *TASK_METRICS[task])
    return [*own, *(f"val_{m}" for m in own), "reg_loss"]


class _Snapshot:
    """Stands in for the Keras model `train._EarlyStopping` keeps and restores weights of."""

    def __init__(self, get: Callable[[], list]):
        self.get, self.weights = get, None

    def get_weights(self) -> list:
        return self.get()

    def set_weights(self, weights: list) -> None:
        self.weights = weights


class EpochWatch:
    """`train._EpochMonitor` on measured values: the same records, states, reasons and early stopping.

    `weights()` returns the trial's current weights; they are copied only when early stopping keeps a better epoch.
    """

    def __init__(self, task: TrialTask, data_task: str, steps: int, on_epoch: Callable[[EpochRecord], bool],
                 weights: Callable[[], list]):
        self.task, self.steps, self.on_epoch = task, steps, on_epoch
        self.names = measured_names(data_task)
        self.stopper = _EarlyStopping.of(task, set(epoch_metrics(data_task)))
        self.snapshot = _Snapshot(weights)
        self.state, self.reason, self.done = "COMPLETE", None, False

    def after(self, epoch: int, measured: Sequence[float]) -> bool:
        """Handle one epoch's measured values; True once the trial must stop training."""
        values = dict(zip(self.names, measured))
        if not math.isfinite(values["loss"]):
            return self._stop("FAIL", f"non-finite loss ({values['loss']}) at epoch {epoch}")
        metrics = {**values, "gap": values["val_loss"] - values["loss"],
                   "lr": epoch_learning_rate(self.task.params, epoch, self.steps)}
        if "accuracy" in values:
            metrics["accuracy_gap"] = values["accuracy"] - values["val_accuracy"]
        if self.on_epoch(EpochRecord(trial=self.task.number, epoch=epoch, metrics=metrics)):
            return self._stop("PRUNED", f"stopped at epoch {epoch}")
        if self.stopper is not None:
            reason = self.stopper.after(epoch, metrics, self.snapshot)
            if reason:
                return self._stop("COMPLETE", reason)
        return False

    def _stop(self, state: str, reason: str) -> bool:
        self.state, self.reason, self.done = state, reason, True
        return True

    def final_weights(self, current: list) -> list:
        """The weights the test set is measured with: the best epoch's under early stopping, else `current`."""
        if self.stopper is not None and self.stopper.weights is not None:
            self.stopper.restore(self.snapshot)
            return self.snapshot.weights
        return current
