"""TensorFlow side: the reference executor, each trial trained by Keras's own `model.fit`; the compiled and the fused
executors must match it epoch by epoch.

Contract: `train_batch(tasks, data, on_epoch)` trains the tasks one after another (`train`), each through the trial
core (`core.start_trial`, `core.EpochRule`, `core.measure`, the outcomes), and returns their outcomes in order.
What is decided here rather than by Keras, so that every executor agrees:
- the batch order: epoch e visits `steps.batch_order(seed, e, n, shuffle)` in `batch_size` chunks (the last may be
  partial), one epoch after another in one tf.data pipeline (`_batches`); a cnn's `augment` changes each training
  image with a stateless seed (training seed, epoch, row);
- the learning rate of every optimizer step: `steps.step_table`, which the optimizer reads as its schedule
  (`_StepRates`);
- the measures: after each epoch, the whole train and validation sets in inference mode, without the penalty
  (Keras's own `loss` includes it), and Keras's penalty as `reg_loss`, by one compiled function rather than extra
  `evaluate` calls; that function is cached across trials of the same model config, task and loss (`_MEASURES`).

One `fit` execution per epoch (`steps_per_execution`) and no XLA (its per-trial compile costs more than it saves).
"""

from __future__ import annotations

import json
import math
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from fitgap.studies.messages import TrialOutcome, TrialTask
from fitgap.tracking.records import EpochRecord
from fitgap.training.cnn import augmenter
from fitgap.training.core import EpochRule, TrialStart, failed_outcome, measure, start_trial, trained_outcome
from fitgap.training.heads import Head
from fitgap.training.model import make_optimizer
from fitgap.training.parts import param
from fitgap.training.steps import batch_order, step_table

EXECUTOR = "keras"


def train_batch(tasks: list[TrialTask], data, on_epoch: Callable[[EpochRecord], bool]) -> list[TrialOutcome]:
    """Train `tasks` one after another on `data` (a `datasets.Dataset`); their outcomes, in order."""
    return [train(task, data, on_epoch) for task in tasks]


def train(task: TrialTask, data, on_epoch: Callable[[EpochRecord], bool]) -> TrialOutcome:
    """Train one trial, streaming an `EpochRecord` per epoch to `on_epoch`; True from it stops the trial (PRUNED).
    Never raises for the trial's own problem: that is a FAIL outcome."""
    start = None
    try:
        start = start_trial(task, data)
        model, params = start.model, task.params
        batch_size, epochs = params["batch_size"], params["epochs"]
        steps = math.ceil(len(start.x_train) / batch_size)
        # No metrics and no validation_data: `_AfterEpoch` measures everything at once after each epoch.
        model.compile(
            optimizer=make_optimizer(params, _StepRates(step_table(params, steps, epochs))),
            loss=start.head.loss(params),
            steps_per_execution=steps,  # one Python -> graph call per epoch; callbacks still see every epoch
            jit_compile=False,  # XLA: slower per trial here (compile time), and "auto" would differ by device
        )
        after_epoch = _AfterEpoch(EpochRule(task, data.task, steps, on_epoch, model.get_weights), start, task, data)
        model.fit(
            _batches(start.x_train, start.targets, batch_size, epochs, task.seed, param(params, "shuffle"),
                     augmenter(params)),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=[after_epoch],
            verbose=0,
            shuffle=False,  # the order is already fitgap's; Keras must not touch it
        )
        rule = after_epoch.rule
        if rule.state == "COMPLETE" and rule.best_weights is not None:
            model.set_weights(rule.best_weights)  # the trial ends with early stopping's best epoch
        return trained_outcome(task, data, start, rule, EXECUTOR, after_epoch.measure_set)
    except Exception as error:
        return failed_outcome(task, error, EXECUTOR, start)


class _StepRates(keras.optimizers.schedules.LearningRateSchedule):
    """The optimizer's learning rate at each step, read from fitgap's table (`steps.step_table`)."""

    def __init__(self, table: np.ndarray):
        self.table = tf.constant(table, dtype=tf.float32)

    def __call__(self, step):
        last = tf.shape(self.table)[0] - 1
        return tf.gather(self.table, tf.minimum(tf.cast(step, tf.int32), last))

    def get_config(self) -> dict:
        return {"table": self.table.numpy().tolist()}


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int, seed: int, shuffle: bool,
             augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None) -> tf.data.Dataset:
    """All epochs' batches, one epoch after another, each epoch in `batch_order` (so fit's iterator never resets)."""
    n = len(x)
    orders = np.stack([batch_order(seed, epoch, n, shuffle).astype(np.int32) for epoch in range(epochs)])
    x, y = tf.constant(x), tf.constant(y)

    def epoch_batches(epoch, order):
        rows = tf.data.Dataset.from_tensor_slices((tf.gather(x, order), tf.gather(y, order)))
        if augment is not None:  # each image its own draw: seed (training seed, epoch * n + position)
            draws = tf.cast(epoch, tf.int64) * n + tf.range(n, dtype=tf.int64)
            seeds = tf.stack([tf.fill([n], tf.constant(seed, tf.int64)), draws], axis=1)
            rows = tf.data.Dataset.zip((rows, tf.data.Dataset.from_tensor_slices(seeds)))
            rows = rows.map(lambda xy, s: (augment(xy[0], s), xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
        return rows.batch(batch_size)

    epochs_and_orders = tf.data.Dataset.from_tensor_slices((tf.range(epochs), orders))
    return epochs_and_orders.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


class _AfterEpoch(keras.callbacks.Callback):
    """Measures after each epoch and hands the values to the trial's `core.EpochRule`; stops `fit` when it says so."""

    def __init__(self, rule: EpochRule, start: TrialStart, task: TrialTask, data):
        super().__init__()
        self.rule, self.start, self.task, self.data = rule, start, task, data

    def on_train_begin(self, logs=None):
        self.measure_epoch, self.measure_set = _measure_functions(self.start, self.task, self.data)

    def on_epoch_end(self, epoch, logs=None):
        if self.rule.after(epoch, self.measure_epoch()):
            self.model.stop_training = True


# Compiled measure functions by model config, task and loss: a trial whose model matches an earlier one's skips
# tracing. The graphs take the weights as arguments, so they hold no trial's state.
_MEASURES: dict[str, tuple[Callable, Callable]] = {}
_MAX_MEASURES = 16


def _measure_functions(start: TrialStart, task: TrialTask, data
                       ) -> tuple[Callable[[], list[float]], Callable[[np.ndarray, np.ndarray], list[float]]]:
    """(measure the epoch: `core.measured_names`' values, measure one set: `core.set_measures`' values), with the
    weights the model holds when called."""
    model, params = start.model, task.params
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed builder model: no config, no cache
        config = None
    loss_params = {k: params.get(k) for k in ("loss", "cost", "profit")}
    key = json.dumps([config, data.task, loss_params], sort_keys=True, default=repr) if config else None
    functions = _MEASURES.get(key) if key else None
    if functions is None:
        functions = _compile_measures(model, data.task, start.head, start.head.loss(params))
        if key:
            if len(_MEASURES) >= _MAX_MEASURES:
                del _MEASURES[next(iter(_MEASURES))]  # oldest first
            _MEASURES[key] = functions
    pair, one = functions
    weights = (model.trainable_variables, model.non_trainable_variables)
    train_and_val = [tf.constant(a) for a in (start.x_train, data.y_train, start.x_val, data.y_val)]
    measure_pair = pair.get_concrete_function(*weights, *train_and_val)  # skips tf.function's argument matching

    def measure_epoch() -> list[float]:
        return measure_pair(*weights, *train_and_val).numpy().tolist()

    def measure_set(x: np.ndarray, y: np.ndarray) -> list[float]:
        return one(*weights, tf.constant(x), tf.constant(y)).numpy().tolist()

    return measure_epoch, measure_set


def _compile_measures(template: keras.Model, task: str, head: Head, loss: keras.losses.Loss
                      ) -> tuple[Callable, Callable]:
    """`core.measure` on train and validation with Keras's penalty (one vector), and on one set: compiled."""

    @tf.function
    def pair(trainable, non_trainable, x_train, y_train, x_val, y_val):
        on_train, reg = measure(template, task, head, loss, trainable, non_trainable, x_train, y_train,
                                keras_penalty=True)
        on_val = measure(template, task, head, loss, trainable, non_trainable, x_val, y_val)
        return tf.stack([*on_train, *on_val, reg])  # one stack: a concat of per-set stacks rounds reg_loss otherwise

    @tf.function
    def one(trainable, non_trainable, x, y):
        return tf.stack(measure(template, task, head, loss, trainable, non_trainable, x, y))

    return pair, one
