"""TensorFlow side: the output layer and the data loss of a trial, per (task, loss) — the table `HEADS` — and the
loss-independent metrics each task reports (`vocabulary.TASK_METRICS`, computed by `TASK_MEASURES`), measured the
same way whatever the loss.

| task       | loss                                   | output layer                 | target the loss sees     |
|------------|----------------------------------------|------------------------------|--------------------------|
| binary     | binary_crossentropy                    | 1 unit, logit (fused loss)   | y in {0, 1}              |
| binary     | mse, mae, huber                        | 1 linear unit = P(y = 1)     | y in {0, 1}              |
| multiclass | softmax_cross_entropy                  | C units, logits (fused loss) | integer label            |
| multiclass | sparse_categorical_crossentropy        | C units, softmax             | integer label            |
| multiclass | categorical_crossentropy, mse          | C units, softmax             | one-hot label            |
| regression | mse, mae, huber, asymmetric            | k linear units               | y (n, k)                 |

Every combination not in the table is refused when the spec is loaded (`vocabulary.LOSSES_BY_TASK` lists the same
pairs; a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from fitgap.training.parts import param
from fitgap.sweeps.vocabulary import DEFAULT_LOSS

EPSILON = 1e-7  # probabilities are clipped to [eps, 1 - eps] before a log


class AsymmetricLoss(keras.losses.Loss):
    """The course's cost/profit loss, `where(y > y_, cost * (y - y_), profit * (y_ - y))` with y the prediction and
    y_ the truth: predicting too much costs `cost` per unit, too little loses `profit` per unit.

    The course sums over the batch; fitgap takes the mean (over the batch and the target columns), like every other
    loss here, so that the learning rate does not have to change with `batch_size`: the course's sum is this mean times
    the batch size.
    """

    def __init__(self, cost: float, profit: float, name: str = "asymmetric", **kwargs):
        super().__init__(name=name, **kwargs)
        self.cost, self.profit = float(cost), float(profit)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        over = self.cost * (y_pred - y_true)
        under = self.profit * (y_true - y_pred)
        return keras.ops.mean(keras.ops.where(y_pred > y_true, over, under), axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "cost": self.cost, "profit": self.profit}


def _identity(output):
    return output


@dataclass(frozen=True)
class Head:
    activation: str | None  # of the output Dense: None = linear (a logit, or the prediction itself)
    loss: Callable[[Mapping[str, Any]], keras.losses.Loss]  # params -> the data loss, mean over the batch
    probability: Callable[[Any], Any] = _identity  # output -> P(y = 1) (binary) or class probabilities (multiclass)
    one_hot: bool = False  # the loss compares with one-hot labels


L = keras.losses
_REGRESSION: dict[str, Callable[[Mapping[str, Any]], keras.losses.Loss]] = {
    "mse": lambda params: L.MeanSquaredError(),
    "mae": lambda params: L.MeanAbsoluteError(),
    "huber": lambda params: L.Huber(delta=1.0),
}

HEADS: dict[tuple[str, str], Head] = {
    # Cross-entropy on the logit: the fused form is numerically stable where sigmoid-then-log is not.
    ("binary", "binary_crossentropy"): Head(None, lambda params: L.BinaryCrossentropy(from_logits=True),
                                            keras.ops.sigmoid),
    # A regression loss regresses the 0/1 label directly: the linear output is read as the probability.
    **{("binary", name): Head(None, loss) for name, loss in _REGRESSION.items()},
    ("multiclass", "softmax_cross_entropy"): Head(None, lambda params: L.SparseCategoricalCrossentropy(from_logits=True),
                                                  keras.ops.softmax),
    ("multiclass", "sparse_categorical_crossentropy"): Head("softmax", lambda params: L.SparseCategoricalCrossentropy()),
    ("multiclass", "categorical_crossentropy"): Head("softmax", lambda params: L.CategoricalCrossentropy(), one_hot=True),
    ("multiclass", "mse"): Head("softmax", lambda params: L.MeanSquaredError(), one_hot=True),  # the course's iris
    **{("regression", name): Head(None, loss) for name, loss in _REGRESSION.items()},
    ("regression", "asymmetric"): Head(None, lambda params: AsymmetricLoss(param(params, "cost"),
                                                                           param(params, "profit"))),
}


def head_for(params: Mapping[str, Any], task: str) -> Head:
    loss = params.get("loss", DEFAULT_LOSS[task])  # the spec's default depends on the task
    if (task, loss) not in HEADS:
        valid = [name for t, name in HEADS if t == task]
        raise ValueError(f"`loss` {loss!r} does not fit a {task} task; valid: {valid}")
    return HEADS[task, loss]


def output_units(data) -> int:
    """One unit for binary, one per class for multiclass, one per target column for regression."""
    if data.task == "binary":
        return 1
    if data.task == "multiclass":
        return int(data.n_classes)
    return int(data.y_train.shape[1])


def loss_targets(head: Head, y: np.ndarray, units: int) -> np.ndarray:
    """What the loss compares the output with: the labels, one-hot encoded when the loss wants them so."""
    return np.eye(units, dtype=np.float32)[y] if head.one_hot else y


def _binary(head: Head, output, y) -> list:
    p = head.probability(output)
    # p and 1 - p are clipped separately: float32 cannot hold 1 - 1e-7, so clipping p alone would floor 1 - p at
    # 1.19e-7, not 1e-7.
    log_p = tf.math.log(tf.clip_by_value(p, EPSILON, 1 - EPSILON))
    log_not_p = tf.math.log(tf.clip_by_value(1 - p, EPSILON, 1 - EPSILON))
    bce = -tf.reduce_mean(y * log_p + (1 - y) * log_not_p)
    accuracy = tf.reduce_mean(tf.cast((p > 0.5) == (y > 0.5), tf.float32))
    return [bce, accuracy]


def _multiclass(head: Head, output, y) -> list:
    p = head.probability(output)
    labels = tf.cast(y, tf.int32)
    ce = -tf.reduce_mean(tf.math.log(tf.clip_by_value(tf.gather(p, labels, batch_dims=1), EPSILON, 1.0)))
    accuracy = tf.reduce_mean(tf.cast(tf.argmax(p, axis=-1, output_type=tf.int32) == labels, tf.float32))
    return [ce, accuracy]


def _regression(head: Head, output, y) -> list:
    error = output - y
    return [tf.reduce_mean(tf.square(error)), tf.reduce_mean(tf.abs(error))]


# task -> (head, output, labels) -> the values of vocabulary.TASK_METRICS[task], in that order
TASK_MEASURES: dict[str, Callable[[Head, Any, Any], list]] = {
    "binary": _binary,
    "multiclass": _multiclass,
    "regression": _regression,
}
