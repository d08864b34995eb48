"""The reference executor: one trial trained with `model.fit`. Faster executors (compiled, fused) must match it.

What fitgap decides rather than Keras, so that every executor agrees:
- the batch order: epoch e visits `schedule.batch_order(seed, e, n)` in `batch_size` chunks (the last may be partial);
- the learning rate: `schedule.learning_rate_at(params, e)`, assigned to the optimizer before epoch e;
- the metrics: measured after each epoch on the whole train and validation sets in inference mode, without the
  regularization penalty (Keras's own `loss` includes it), by one compiled function rather than extra `evaluate` calls.

Speed (dot, hidden [11], 100 epochs, batch 32, 2 CPU cores): one `fit` execution per epoch (`steps_per_execution`)
and no XLA (its per-trial compile costs more than it saves) are the measured wins; see `_freeze_imported_objects`.
"""

from __future__ import annotations

import gc
import json
import math
import traceback
from typing import Callable, Mapping

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

    Never raises for a trial's own problem: a non-finite train loss (that epoch is not reported) or any exception is a
    FAIL outcome with a one-line reason and, for exceptions, the traceback, so the study goes on.
    """
    complexity: dict[str, int] = {}
    try:
        keras.backend.clear_session()  # the executor process is reused across trials
        keras.utils.set_random_seed(task.seed)  # same seed, same initial weights
        params = task.params
        model = build_model(params, data.n_features)
        totals = count(model)
        complexity = {name: totals[name] for name in COMPLEXITY_METRICS}
        steps = math.ceil(len(data.x_train) / params["batch_size"])
        # No metrics and no validation_data: the monitor measures everything at once after each epoch.
        model.compile(
            optimizer=make_optimizer(params),
            loss=head(params).loss(),
            steps_per_execution=steps,  # one Python -> graph call per epoch; callbacks still see every epoch
            jit_compile=False,  # XLA: slower per trial here (compile time), and "auto" would differ by device
        )
        monitor = _EpochMonitor(task, data, on_epoch)
        model.fit(
            _batches(data, params["batch_size"], params["epochs"], task.seed),
            epochs=params["epochs"],
            steps_per_epoch=steps,
            callbacks=[monitor],
            verbose=0,
            shuffle=False,  # the order is already fitgap's; Keras must not touch it
        )
        return TrialOutcome(task.number, monitor.state, complexity, reason=monitor.reason)
    except Exception as error:
        return TrialOutcome(task.number, "FAIL", complexity, reason=_one_line(error), traceback=traceback.format_exc())


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _batches(data: Dataset, batch_size: int, epochs: int, seed: int) -> tf.data.Dataset:
    """All epochs' batches, one epoch after another, each epoch in `batch_order` (so fit's iterator never resets)."""
    orders = np.stack([batch_order(seed, epoch, len(data.x_train)).astype(np.int32) for epoch in range(epochs)])
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)

    def epoch_batches(order):
        return tf.data.Dataset.from_tensor_slices((tf.gather(x, order), tf.gather(y, order))).batch(batch_size)

    return tf.data.Dataset.from_tensor_slices(orders).flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


class _EpochMonitor(keras.callbacks.Callback):
    """Sets each epoch's learning rate; after it, measures, reports, and stops training when asked or on a NaN."""

    def __init__(self, task: TrialTask, data: Dataset, on_epoch: Callable[[EpochRecord], bool]):
        super().__init__()
        self.task, self.on_epoch = task, on_epoch
        self.sets = [tf.constant(a) for a in (data.x_train, data.y_train, data.x_val, data.y_val)]
        self.state, self.reason = "COMPLETE", None

    def on_train_begin(self, logs=None):
        self.measure = _measure_function(self.model, self.task.params, self.sets)

    def on_epoch_begin(self, epoch, logs=None):
        self.lr = learning_rate_at(self.task.params, epoch)
        self.model.optimizer.learning_rate.assign(self.lr)

    def on_epoch_end(self, epoch, logs=None):
        values = dict(zip(_MEASURED, self.measure().numpy().tolist()))
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


# Compiled measure functions by model config and loss: a trial whose model matches an earlier one's skips tracing
# (~40 ms of a ~350 ms trial). The graph takes the weights as arguments, so it holds no trial's state.
_MEASURES: dict[str, Callable] = {}
_MAX_MEASURES = 16


def _measure_function(model: keras.Model, params: Mapping, sets: list[tf.Tensor]) -> Callable[[], tf.Tensor]:
    """Measures `model` on `sets` (x_train, y_train, x_val, y_val): the `_MEASURED` values as one vector."""
    key = json.dumps([model.get_config(), param(params, "loss")], sort_keys=True, default=repr)
    if key not in _MEASURES:
        if len(_MEASURES) >= _MAX_MEASURES:
            del _MEASURES[next(iter(_MEASURES))]  # oldest first
        _MEASURES[key] = _compile_measure(model, head(params))
    weights = (model.trainable_variables, model.non_trainable_variables)
    # The concrete function skips tf.function's per-call argument matching: 0.2 ms a call instead of 0.6 ms.
    measure = _MEASURES[key].get_concrete_function(*weights, *sets)
    return lambda: measure(*weights, *sets)


def _compile_measure(template: keras.Model, head: Head) -> Callable:
    """One compiled function for the data loss, bce and accuracy on both sets, and the penalty (`_MEASURED`).

    `template` only shapes the graph: any model with the same config can pass its own weights.
    """
    loss = head.loss()

    def on(weights, x, y):
        output, _, penalties = template.stateless_call(*weights, x, training=False, return_losses=True)
        probability = head.probability(output)
        # p and 1 - p are clipped separately: float32 cannot hold 1 - 1e-7, so clipping p alone would floor 1 - p at
        # 1.19e-7, not 1e-7.
        log_p = tf.math.log(tf.clip_by_value(probability, _EPSILON, 1 - _EPSILON))
        log_not_p = tf.math.log(tf.clip_by_value(1 - probability, _EPSILON, 1 - _EPSILON))
        bce = -tf.reduce_mean(y * log_p + (1 - y) * log_not_p)
        accuracy = tf.reduce_mean(tf.cast((probability > 0.5) == (y > 0.5), tf.float32))
        penalty = tf.add_n(penalties) if penalties else tf.constant(0.0)  # the kernel penalties (no other losses)
        return [loss(y, output), bce, accuracy], penalty

    @tf.function
    def measure(trainable, non_trainable, x_train, y_train, x_val, y_val):
        weights = (trainable, non_trainable)
        on_train, penalty = on(weights, x_train, y_train)
        on_val, _ = on(weights, x_val, y_val)
        return tf.stack([*on_train, *on_val, penalty])

    return measure


def _freeze_imported_objects() -> None:
    """Move the ~400k objects importing TensorFlow created out of the garbage collector's sight.

    `clear_session()` runs a full `gc.collect()` and Python runs its own full collections during training; each one
    walked all of TensorFlow's long-lived objects: ~145 ms per trial, a third of a small trial. Frozen objects are never
    collected, which costs nothing for module-level objects that live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


_freeze_imported_objects()
