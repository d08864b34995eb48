"""The reference executor: one trial trained with `model.fit`. Faster executors (compiled, fused) must match it.

What fitgap decides rather than Keras, so that every executor agrees:
- the inputs: `inputs.model_inputs` (standardized with training-split statistics, reshaped to a cnn's images);
- the batch order: epoch e visits `schedule.batch_order(seed, e, n)` in `batch_size` chunks (the last may be partial);
  a cnn's `augment` changes each training image with a stateless seed (training seed, epoch, row);
- the learning rate of every optimizer step: `decay.step_table`, which the optimizer reads as its schedule; the logged
  `lr` of an epoch is the rate of its first step;
- the metrics: measured after each epoch on the whole train and validation sets in inference mode, without the
  regularization penalty (Keras's own `loss` includes it), by one compiled function rather than extra `evaluate` calls:
  `loss`, the task's loss-independent metrics (`vocabulary.TASK_METRICS`), their val_ twins, `gap`, `accuracy_gap`
  (classification), `reg_loss` and `lr` — `vocabulary.epoch_metrics(task)`;
- early stopping (`early_stopping` = a patience > 0) watches the first objective (`TrialTask.objective`; val_loss when
  there is none), stops once it has not strictly improved for `patience` epochs, says so in the outcome's reason, and
  always ends the trial with the weights of its best epoch — the first of ties, the epoch the coordinator reports;
- the test set, when the data has one: measured once after training (with those best weights under early stopping,
  else the final ones) into `TrialOutcome.test_metrics`; it never takes part in selection.
The model's per-layer complexity table goes to `TrialOutcome.artifacts["complexity.csv"]`.

Speed (dot, hidden [11], 100 epochs, batch 32, 2 CPU cores): one `fit` execution per epoch (`steps_per_execution`)
and no XLA (its per-trial compile costs more than it saves) are the measured wins; see `_freeze_imported_objects`.
"""

from __future__ import annotations

import gc
import json
import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from studies.keras.artifacts import trial_artifacts
from studies.keras.cnn import augmenter
from studies.keras.complexity import count, to_csv
from studies.keras.decay import epoch_learning_rate, step_table
from studies.keras.heads import TASK_MEASURES, Head, head_for, loss_targets, output_units
from studies.keras.inputs import model_inputs
from studies.keras.model import build_model, make_optimizer
from studies.keras.parts import param
from studies.keras.schedule import batch_order
from studies.protocol import TrialOutcome, TrialTask
from sweeps.vocabulary import COMPLEXITY_METRICS, TASK_METRICS, epoch_metrics
from tracking.records import EpochRecord


def train(task: TrialTask, data, on_epoch: Callable[[EpochRecord], bool]) -> TrialOutcome:
    """Train one trial on `data` (a `datasets.Dataset`), streaming an `EpochRecord` per epoch to `on_epoch`; True from
    it stops the trial (PRUNED).

    Never raises for a trial's own problem: a non-finite train loss (that epoch is not reported) or any exception is a
    FAIL outcome with a one-line reason and, for exceptions, the traceback, so the study goes on.
    """
    complexity: dict[str, int] = {}
    artifacts: dict[str, bytes] = {}
    try:
        keras.backend.clear_session()  # the executor process is reused across trials
        keras.utils.set_random_seed(task.seed)  # same seed, same initial weights, same dropout masks
        params = task.params
        head, units = head_for(params, data.task), output_units(data)
        x_train, x_val, x_test = model_inputs(params, data)
        model = build_model(params, x_train.shape[1:], data.task, units, search_dir=task.data_dir)
        totals = count(model)
        complexity = {name: totals[name] for name in COMPLEXITY_METRICS}
        artifacts["complexity.csv"] = to_csv(totals["layers"]).encode()
        batch_size, epochs = params["batch_size"], params["epochs"]
        steps = math.ceil(len(x_train) / batch_size)
        # No metrics and no validation_data: the monitor measures everything at once after each epoch.
        model.compile(
            optimizer=make_optimizer(params, _StepRates(step_table(params, steps, epochs))),
            loss=head.loss(params),
            steps_per_execution=steps,  # one Python -> graph call per epoch; callbacks still see every epoch
            jit_compile=False,  # XLA: slower per trial here (compile time), and "auto" would differ by device
        )
        sets = _Sets(data.task, x_train, data.y_train, x_val, data.y_val, x_test, data.y_test)
        monitor = _EpochMonitor(task, sets, head, steps, on_epoch)
        targets = loss_targets(head, data.y_train, units)
        model.fit(
            _batches(x_train, targets, batch_size, epochs, task.seed, augmenter(params)),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=[monitor],
            verbose=0,
            shuffle=False,  # the order is already fitgap's; Keras must not touch it
        )
        test_metrics = monitor.finish()
        if monitor.state == "COMPLETE":  # with the weights the trial ends with (early stopping's best ones)
            artifacts.update(trial_artifacts(model, params, data, head, task.save_model))
        return TrialOutcome(task.number, monitor.state, complexity, reason=monitor.reason, test_metrics=test_metrics,
                            artifacts=artifacts)
    except Exception as error:
        return TrialOutcome(task.number, "FAIL", complexity, reason=_one_line(error), traceback=traceback.format_exc(),
                            artifacts=artifacts)


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class _StepRates(keras.optimizers.schedules.LearningRateSchedule):
    """The optimizer's learning rate at each step, read from fitgap's table (`decay.step_table`)."""

    def __init__(self, table: np.ndarray):
        self.table = tf.constant(table, dtype=tf.float32)

    def __call__(self, step):
        last = tf.shape(self.table)[0] - 1
        return tf.gather(self.table, tf.minimum(tf.cast(step, tf.int32), last))

    def get_config(self) -> dict:
        return {"table": self.table.numpy().tolist()}


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int, seed: int,
             augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None) -> tf.data.Dataset:
    """All epochs' batches, one epoch after another, each epoch in `batch_order` (so fit's iterator never resets)."""
    n = len(x)
    orders = np.stack([batch_order(seed, epoch, n).astype(np.int32) for epoch in range(epochs)])
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


@dataclass(frozen=True, eq=False)
class _Sets:
    """The arrays the metrics are measured on, as the model takes them (x) and as the data has them (y)."""

    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None


@dataclass
class _EarlyStopping:
    patience: int
    metric: str
    direction: str
    best: float | None = None
    best_epoch: int = -1
    weights: list | None = None

    @classmethod
    def of(cls, task: TrialTask, measured: set[str]) -> _EarlyStopping | None:
        patience = int(param(task.params, "early_stopping"))
        if patience <= 0:
            return None
        watched = [(m, d) for m, d in task.objective[:1] if m in measured] or [("val_loss", "minimize")]
        return cls(patience, *watched[0])

    def after(self, epoch: int, metrics: Mapping[str, float], model: keras.Model) -> str | None:
        """Keep the weights of a strictly better epoch; the reason to stop once `patience` epochs were not."""
        value = metrics[self.metric]
        better = math.isfinite(value) and (
            self.best is None or (value < self.best if self.direction == "minimize" else value > self.best)
        )
        if better:
            self.best, self.best_epoch, self.weights = value, epoch, model.get_weights()
        elif epoch - self.best_epoch >= self.patience:
            return (f"early stopping after epoch {epoch}: {self.metric} not better than {self.best:.6g} (epoch "
                    f"{self.best_epoch}) for {self.patience} epochs; epoch {self.best_epoch}'s weights restored")
        return None

    def restore(self, model: keras.Model) -> None:
        if self.weights is not None:
            model.set_weights(self.weights)


class _EpochMonitor(keras.callbacks.Callback):
    """After each epoch: measures, reports, and stops training when asked, on a NaN, or by early stopping."""

    def __init__(self, task: TrialTask, sets: _Sets, head: Head, steps: int,
                 on_epoch: Callable[[EpochRecord], bool]):
        super().__init__()
        self.task, self.sets, self.head, self.steps, self.on_epoch = task, sets, head, steps, on_epoch
        self.own = ("loss", *TASK_METRICS[sets.task])  # per set, in the measure function's order
        self.names = [*self.own, *(f"val_{m}" for m in self.own), "reg_loss"]
        self.stopper = _EarlyStopping.of(task, set(epoch_metrics(sets.task)))
        self.state, self.reason = "COMPLETE", None

    def on_train_begin(self, logs=None):
        self.measure, self.measure_one = _measure_functions(self.model, self.task.params, self.sets, self.head)

    def on_epoch_end(self, epoch, logs=None):
        values = dict(zip(self.names, self.measure().numpy().tolist()))
        if not math.isfinite(values["loss"]):
            self._stop("FAIL", f"non-finite loss ({values['loss']}) at epoch {epoch}")
            return
        metrics = {**values, "gap": values["val_loss"] - values["loss"],
                   "lr": epoch_learning_rate(self.task.params, epoch, self.steps)}
        if "accuracy" in values:
            metrics["accuracy_gap"] = values["accuracy"] - values["val_accuracy"]
        if self.on_epoch(EpochRecord(trial=self.task.number, epoch=epoch, metrics=metrics)):
            self._stop("PRUNED", f"stopped at epoch {epoch}")
        elif self.stopper is not None:
            reason = self.stopper.after(epoch, metrics, self.model)
            if reason:
                self._stop("COMPLETE", reason)

    def _stop(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        self.model.stop_training = True

    def finish(self) -> dict[str, float]:
        """After training: the best weights back under early stopping; the test metrics of a complete trial."""
        if self.state != "COMPLETE":
            return {}
        if self.stopper is not None:
            self.stopper.restore(self.model)
        if self.sets.x_test is None:
            return {}
        values = self.measure_one(self.sets.x_test, self.sets.y_test).numpy().tolist()
        return {f"test_{name}": value for name, value in zip(self.own, values)}


# Compiled measure functions by model config, task and loss: a trial whose model matches an earlier one's skips tracing
# (~40 ms of a ~350 ms trial). The graphs take the weights as arguments, so they hold no trial's state.
_MEASURES: dict[str, tuple[Callable, Callable]] = {}
_MAX_MEASURES = 16


def _measure_functions(model: keras.Model, params: Mapping[str, Any], sets: _Sets, head: Head
                       ) -> tuple[Callable[[], tf.Tensor], Callable[[np.ndarray, np.ndarray], tf.Tensor]]:
    """(measure train and validation: the monitor's `names` as one vector, measure one set: loss and task metrics)."""
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed builder model: no config, no cache
        config = None
    loss_params = {k: params.get(k) for k in ("loss", "cost", "profit")}
    key = json.dumps([config, sets.task, loss_params], sort_keys=True, default=repr) if config else None
    functions = _MEASURES.get(key) if key else None
    if functions is None:
        functions = _compile_measures(model, sets.task, head, head.loss(params))
        if key:
            if len(_MEASURES) >= _MAX_MEASURES:
                del _MEASURES[next(iter(_MEASURES))]  # oldest first
            _MEASURES[key] = functions
    pair, one = functions
    weights = (model.trainable_variables, model.non_trainable_variables)
    train_and_val = [tf.constant(a) for a in (sets.x_train, sets.y_train, sets.x_val, sets.y_val)]
    # The concrete function skips tf.function's per-call argument matching: 0.2 ms a call instead of 0.6 ms.
    measure = pair.get_concrete_function(*weights, *train_and_val)
    return (lambda: measure(*weights, *train_and_val)), (lambda x, y: one(*weights, tf.constant(x), tf.constant(y)))


def _compile_measures(template: keras.Model, task: str, head: Head, loss: keras.losses.Loss) -> tuple[Callable, Callable]:
    """Compiled functions for the data loss and the task's metrics, without and with the penalty.

    `template` only shapes the graph: any model with the same config can pass its own weights.
    """
    task_measures = TASK_MEASURES[task]

    def on(weights, x, y):
        output, _, penalties = template.stateless_call(*weights, x, training=False, return_losses=True)
        target = tf.one_hot(tf.cast(y, tf.int32), tf.shape(output)[-1]) if head.one_hot else y
        penalty = tf.add_n(penalties) if penalties else tf.constant(0.0)  # the kernel penalties (no other losses)
        return [loss(target, output), *task_measures(head, output, y)], penalty

    @tf.function
    def pair(trainable, non_trainable, x_train, y_train, x_val, y_val):
        weights = (trainable, non_trainable)
        on_train, penalty = on(weights, x_train, y_train)
        on_val, _ = on(weights, x_val, y_val)
        return tf.stack([*on_train, *on_val, penalty])

    @tf.function
    def one(trainable, non_trainable, x, y):
        values, _ = on((trainable, non_trainable), x, y)
        return tf.stack(values)

    return pair, one


def _freeze_imported_objects() -> None:
    """Move the ~400k objects importing TensorFlow created out of the garbage collector's sight.

    `clear_session()` runs a full `gc.collect()` and Python runs its own full collections during training; each one
    walked all of TensorFlow's long-lived objects: ~145 ms per trial, a third of a small trial. Frozen objects are never
    collected, which costs nothing for module-level objects that live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


_freeze_imported_objects()
