"""The reference executor: one trial trained with `model.fit`. Faster executors (compiled, fused) must match it.

What fitgap decides rather than Keras (so that every executor agrees):
- the batch order: epoch e visits `schedule.batch_order(seed, e, n)` in `batch_size` chunks (the last may be partial);
- the learning rate: `schedule.learning_rate_at(params, e)`, assigned to the optimizer before epoch e;
- the metrics: measured after each epoch on the whole train and validation sets in inference mode, without the
  regularization penalty (Keras's own `loss` includes it), by one compiled function instead of extra `evaluate` calls.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from studies.keras.complexity import count
from studies.keras.datasets import Dataset
from studies.keras.model import Head, build_model, head, make_optimizer, param
from studies.keras.schedule import batch_order, learning_rate_at
from studies.protocol import TrialOutcome, TrialTask
from sweeps.vocabulary import COMPLEXITY_METRICS
from tracking.records import EpochRecord

_EPSILON = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the log of `bce`
_MEASURED = ("loss", "bce", "accuracy", "val_loss", "val_bce", "val_accuracy", "reg_loss")


def train(task: TrialTask, data: Dataset, on_epoch: Callable[[EpochRecord], bool]) -> TrialOutcome:
    """Train one trial, streaming an `EpochRecord` per epoch to `on_epoch`; True from it stops the trial (PRUNED).

    Never raises for a trial's own problem: a non-finite train loss or any exception is a FAIL outcome with a one-line
    reason (and the traceback), so the study goes on.
    """
    complexity: dict[str, int] = {}
    try:
        keras.backend.clear_session()  # the executor process is reused across trials
        keras.utils.set_random_seed(task.seed)  # same seed, same initial weights
        params = task.params
        model = build_model(params, data.n_features)
        complexity = {name: count(model)[name] for name in COMPLEXITY_METRICS}
        model.compile(optimizer=make_optimizer(params), loss=head(params).loss(), steps_per_execution=int(os.environ.get("SPE", "1")) or math.ceil(len(data.x_train) / params["batch_size"]), jit_compile={"auto": "auto", "0": False, "1": True}[os.environ.get("JIT", "auto")])
        steps = math.ceil(len(data.x_train) / params["batch_size"])
        monitor = _EpochMonitor(task, data, on_epoch)
        model.fit(
            _batches(data, params["batch_size"], params["epochs"], task.seed),
            epochs=params["epochs"],
            steps_per_epoch=steps,
            callbacks=[monitor],
            verbose=0,
            shuffle=False,
        )
        return TrialOutcome(task.number, monitor.state, complexity, reason=monitor.reason)
    except Exception as error:
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return TrialOutcome(task.number, "FAIL", complexity, reason=reason, traceback=traceback.format_exc())


def _batches(data: Dataset, batch_size: int, epochs: int, seed: int) -> tf.data.Dataset:
    """Every epoch's batches, in fitgap's order, one after another (Keras's `shuffle` does not apply to a tf.data)."""
    orders = np.stack([batch_order(seed, epoch, len(data.x_train)) for epoch in range(epochs)])
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)

    def epoch_batches(order):
        return tf.data.Dataset.from_tensor_slices((tf.gather(x, order), tf.gather(y, order))).batch(batch_size)

    return tf.data.Dataset.from_tensor_slices(orders).flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


class _EpochMonitor(keras.callbacks.Callback):
    """Sets each epoch's learning rate, measures the epoch, reports it, and stops training when asked or on NaN."""

    def __init__(self, task: TrialTask, data: Dataset, on_epoch: Callable[[EpochRecord], bool]):
        super().__init__()
        self.task, self.on_epoch = task, on_epoch
        self.sets = [tf.constant(a) for a in (data.x_train, data.y_train, data.x_val, data.y_val)]
        self.state, self.reason = "COMPLETE", None
        self.measure = None

    def on_train_begin(self, logs=None):
        self.measure = _measure_function(self.model, self.task.params)

    def on_epoch_begin(self, epoch, logs=None):
        self.lr = learning_rate_at(self.task.params, epoch)
        self.model.optimizer.learning_rate.assign(self.lr)

    def on_epoch_end(self, epoch, logs=None):
        values = dict(zip(_MEASURED, self.measure(*self.sets).numpy().tolist()))
        if not math.isfinite(values["loss"]):
            self._stop("FAIL", f"non-finite loss ({values['loss']}) at epoch {epoch}")
            return
        metrics = {
            **values,
            "gap": values["val_loss"] - values["loss"],
            "accuracy_gap": values["accuracy"] - values["val_accuracy"],
            "lr": self.lr,
        }
        if self.on_epoch(EpochRecord(trial=self.task.number, epoch=epoch, metrics=metrics)):
            self._stop("PRUNED", f"stopped at epoch {epoch}")

    def _stop(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        self.model.stop_training = True


# Compiled measure functions by model config and loss, so a trial whose model matches an earlier one skips the
# tracing (about 40 ms, 7% of a small trial). The traced graph takes the weights as arguments and keeps no trial state.
_MEASURES: dict[str, Callable] = {}
_MAX_MEASURES = 16


def _measure_function(model: keras.Model, params) -> Callable:
    """model's measure: (x_train, y_train, x_val, y_val) -> the `_MEASURED` values as one vector."""
    key = json.dumps([model.get_config(), param(params, "loss")], sort_keys=True, default=repr)
    if key not in _MEASURES:
        if len(_MEASURES) >= _MAX_MEASURES:
            del _MEASURES[next(iter(_MEASURES))]
        _MEASURES[key] = _compile_measure(model, head(params))
    measure = _MEASURES[key]
    trainable, non_trainable = model.trainable_variables, model.non_trainable_variables
    return lambda *sets: measure(trainable, non_trainable, *sets)


def _compile_measure(template: keras.Model, head: Head) -> Callable:
    """One compiled function: the data loss, bce and accuracy on both sets, and the penalty (see `_MEASURED`).

    `template` only shapes the graph: the weights are arguments, so any model with the same config can use it.
    """
    loss = head.loss()

    def on(trainable, non_trainable, x, y):
        output, _, penalties = template.stateless_call(trainable, non_trainable, x, training=False, return_losses=True)
        p = tf.clip_by_value(head.probability(output), _EPSILON, 1 - _EPSILON)
        bce = -tf.reduce_mean(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
        accuracy = tf.reduce_mean(tf.cast((head.probability(output) > 0.5) == (y > 0.5), tf.float32))
        return [loss(y, output), bce, accuracy], tf.add_n(penalties) if penalties else tf.constant(0.0)

    @tf.function(jit_compile=os.environ.get('MJIT') == '1')
    def measure(trainable, non_trainable, x_train, y_train, x_val, y_val):
        train, penalty = on(trainable, non_trainable, x_train, y_train)
        val, _ = on(trainable, non_trainable, x_val, y_val)
        return tf.stack([*train, *val, penalty])

    return measure
