"""TensorFlow side: the compiled executor, the reference's training as one compiled TensorFlow function per epoch.

Contract: `train_batch(tasks, data, on_epoch)` trains the tasks one after another (`train`) through the trial core
(`core.start_trial`, `core.EpochRule`, `core.measure`, the outcomes), to the records, states and reasons the
reference executor gives. The same trial: the model is `core.start_trial`'s (same initial weights and dropout
seeds), its forward pass is the Keras model's own (`stateless_call`, so every layer, dropout mask and batch-norm
update is Keras's), each epoch visits `steps.batch_order` in `batch_size` chunks (the last may be partial), each step
reads its rate from `steps.step_table`, the loss is the data loss plus the kernel penalty, and the optimizer is
Keras's update rule (`optimizers.OPTIMIZER_RULES`). What differs is only where the loop runs: all of an epoch's steps
and its measurement are one call into a graph, and that graph serves every later trial of the same architecture,
loss and optimizer, because everything else (weights, rates, batch order, regularization and optimizer
hyperparameters) is passed in as tensors.

Whether the epoch graph runs under XLA is measured by its first trial (`fitgap.training.xla`); never for dropout,
batch normalization or convolutions (`_xla_blocker`).

Parity (`tests/test_parity.py`): within rounding with XLA, bit for bit without. One known exception: Adam, RMSprop or
Adagrad on a batch-normalized cnn. The conv bias before a batch norm has a gradient of pure rounding noise, which
these optimizers scale into full-size steps, so any other summation order (another kernel choice of TensorFlow's)
drifts apart after a few epochs; the keras executor itself is not reproducible across devices there.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from fitgap.studies.messages import TrialOutcome, TrialTask
from fitgap.tracking.records import EpochRecord
from fitgap.training.core import EpochRule, TrialStart, failed_outcome, measure, start_trial, trained_outcome
from fitgap.training.optimizers import (
    OPTIMIZER_RULES, initial_slots, optimizer_hyperparameters, penalty, regularizer_weights,
)
from fitgap.training.parts import param
from fitgap.training.steps import batch_order, step_table
from fitgap.training.xla import EpochFunction

EXECUTOR = "compiled"
REGULARIZED = (keras.layers.Dense, keras.layers.Conv2D)
IRRELEVANT = ("kernel_initializer", "bias_initializer", "kernel_regularizer", "seed")  # to a graph, as layer names
_LOOPS: dict[str, "_Loop"] = {}  # by `_loop_key`: graphs shared across trials
_MAX_LOOPS = 16


def train_batch(tasks: list[TrialTask], data, on_epoch: Callable[[EpochRecord], bool]) -> list[TrialOutcome]:
    """Train `tasks` one after another on `data`; their outcomes, in order."""
    return [train(task, data, on_epoch) for task in tasks]


def train(task: TrialTask, data, on_epoch: Callable[[EpochRecord], bool]) -> TrialOutcome:
    """One trial, as `reference.train` trains it, in a compiled loop."""
    start = None
    try:
        start = start_trial(task, data)
        params = task.params
        batch_size, epochs = int(params["batch_size"]), int(params["epochs"])
        n = len(start.x_train)
        steps = math.ceil(n / batch_size)
        loop = _loop_for(start, params, data, batch_size)
        loop.epoch_function.start()
        state = loop.initial_state(start, params)
        inputs = loop.inputs(start, data)
        rates = step_table(params, steps, epochs)
        rule = EpochRule(task, data.task, steps, on_epoch, lambda: _numpy(state))
        for epoch in range(epochs):
            order = tf.constant(batch_order(task.seed, epoch, n, param(params, "shuffle")).astype(np.int32))
            state, measured = loop.epoch(state, order, tf.constant(rates[epoch * steps:(epoch + 1) * steps]),
                                         epoch * steps, inputs)
            if rule.after(epoch, measured.numpy().tolist()):
                break
        weights = rule.final_weights(_numpy(state))
        outcome = trained_outcome(task, data, start, rule, EXECUTOR, partial(loop.test, weights), weights)
        return dataclasses.replace(outcome, executor_reason=loop.epoch_function.reason)
    except Exception as error:
        return failed_outcome(task, error, EXECUTOR, start)


def _numpy(state: "_State") -> list[np.ndarray]:
    return [np.array(v) for v in (*state.trainable, *state.non_trainable)]


@dataclass
class _State:
    trainable: list[tf.Tensor]
    non_trainable: list[tf.Tensor]  # batch-norm moving statistics, dropout seed states
    slots: list[list[tf.Tensor]]  # optimizer state, per trainable variable
    hyper: dict[str, tf.Tensor]  # the trial's regularization and optimizer hyperparameters


def _loop_key(start: TrialStart, params: Mapping[str, Any], data, batch_size: int) -> str:
    """What a graph depends on: the architecture (without initializers, seeds, names and regularization weights), the
    loss and its constants, the optimizer kind, the task and the shapes of the data."""

    def structure(value):
        if isinstance(value, dict):
            layer = "trainable" in value  # a layer's config: its name is irrelevant, a dtype policy's is not
            return {k: structure(v) for k, v in value.items() if k not in IRRELEVANT and not (layer and k == "name")}
        if isinstance(value, list):
            return [structure(v) for v in value]
        return value

    loss = {k: params.get(k) for k in ("loss", "cost", "profit")}
    shapes = [start.x_train.shape, start.x_val.shape, start.targets.shape, data.y_val.shape]
    return json.dumps([structure(start.model.get_config()), loss, param(params, "optimizer"), data.task, batch_size,
                       [list(s) for s in shapes]], sort_keys=True, default=repr)


def _loop_for(start: TrialStart, params: Mapping[str, Any], data, batch_size: int) -> "_Loop":
    key = _loop_key(start, params, data, batch_size)
    loop = _LOOPS.get(key)
    if loop is None:
        if len(_LOOPS) >= _MAX_LOOPS:
            del _LOOPS[next(iter(_LOOPS))]  # oldest first
        loop = _LOOPS[key] = _Loop(start, params, data.task, batch_size)
    return loop


class _Loop:
    """The compiled epoch and test functions of one architecture, loss and optimizer; `template` only shapes the
    graph: each trial passes its own weights."""

    def __init__(self, start: TrialStart, params: Mapping[str, Any], task: str, batch_size: int):
        template = start.model
        self.optimizer = OPTIMIZER_RULES[param(params, "optimizer")]
        # Every Dense and Conv2D kernel carries the trial's regularizer (`parts.Parts`), whatever its weights; a
        # template built with none still penalizes with l1 = l2 = 0, so regularized or not, trials share the graph.
        kernels = {id(layer.kernel) for layer in _layers(template) if isinstance(layer, REGULARIZED)}
        self.kernels = [i for i, v in enumerate(template.trainable_variables) if id(v) in kernels]
        self.template, self.head, self.task = template, start.head, task
        self.loss = start.head.loss(params)
        self.n, self.batch_size = len(start.x_train), batch_size
        self.epoch_function = EpochFunction(self._train_epoch, _xla_blocker(template))
        self._test = tf.function(self._measure)

    def initial_state(self, start: TrialStart, params: Mapping[str, Any]) -> _State:
        model = start.model
        trainable = [tf.constant(v.numpy()) for v in model.trainable_variables]
        non_trainable = [tf.constant(v.numpy()) for v in model.non_trainable_variables]
        starts = initial_slots(self.optimizer, [v.numpy() for v in trainable], params)
        slots = [[tf.constant(s) for s in per] for per in starts]
        l1, l2 = regularizer_weights(params)
        hyper = {"l1": l1, "l2": l2, **optimizer_hyperparameters(params)}
        return _State(trainable, non_trainable, slots, {k: tf.constant(v, tf.float32) for k, v in hyper.items()})

    def inputs(self, start: TrialStart, data) -> tuple[tf.Tensor, ...]:
        return tuple(tf.constant(a) for a in (start.x_train, start.targets, data.y_train, start.x_val, data.y_val))

    def epoch(self, state: _State, order: tf.Tensor, rates: tf.Tensor, first_step: int,
              inputs: tuple[tf.Tensor, ...]) -> tuple[_State, tf.Tensor]:
        args = (state.trainable, state.non_trainable, state.slots, state.hyper, order, rates,
                tf.constant(first_step, tf.int64), *inputs)
        trainable, non_trainable, slots, measured = self.epoch_function(*args)
        return _State(list(trainable), list(non_trainable), [list(s) for s in slots], state.hyper), measured

    def test(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[float]:
        """`core.measure`'s values on (x, y) with `weights` (trainable then non-trainable)."""
        count = len(self.template.trainable_variables)
        return self._test([tf.constant(w) for w in weights[:count]], [tf.constant(w) for w in weights[count:]],
                          tf.constant(x), tf.constant(y)).numpy().tolist()

    # -- graphs -------------------------------------------------------------------------------------------------------

    def _penalties(self, trainable, hyper) -> list[tf.Tensor]:
        return [penalty(trainable[i], hyper["l1"], hyper["l2"]) for i in self.kernels]

    def _step(self, trainable, non_trainable, slots, hyper, x, y, lr, step):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            output, non_trainable = self.template.stateless_call(trainable, non_trainable, x, training=True)
            # Keras's `compute_loss`: the data loss and each layer's penalty, summed
            total = tf.reduce_sum(tf.stack([self.loss(y, output), *self._penalties(trainable, hyper)]))
        gradients = tape.gradient(total, trainable)
        updated = [self.optimizer.update(p, g, s, lr, step, hyper) for p, g, s in zip(trainable, gradients, slots)]
        return [p for p, _ in updated], non_trainable, [s for _, s in updated]

    def _train_epoch(self, trainable, non_trainable, slots, hyper, order, rates, first_step,
                     x_train, targets, y_train, x_val, y_val):
        size, full = self.batch_size, self.n // self.batch_size

        def batch(start, rows):
            chosen = order[start:start + rows]
            return tf.gather(x_train, chosen), tf.gather(targets, chosen)

        def body(i, trainable, non_trainable, slots):
            x, y = batch(i * size, size)
            step = first_step + tf.cast(i, tf.int64)
            return (i + 1, *self._step(trainable, non_trainable, slots, hyper, x, y, rates[i], step))

        _, trainable, non_trainable, slots = tf.while_loop(
            lambda i, *_: i < full, body, (tf.constant(0), trainable, non_trainable, slots))
        if self.n % size:  # the last, partial batch: its own static shape (XLA wants static shapes)
            x, y = batch(full * size, self.n % size)
            trainable, non_trainable, slots = self._step(trainable, non_trainable, slots, hyper, x, y, rates[full],
                                                         first_step + full)
        on_train = self._measure(trainable, non_trainable, x_train, y_train)
        on_val = self._measure(trainable, non_trainable, x_val, y_val)
        reg = tf.add_n(self._penalties(trainable, hyper)) if self.kernels else tf.constant(0.0)
        return trainable, non_trainable, slots, tf.concat([on_train, on_val, [reg]], 0)

    def _measure(self, trainable, non_trainable, x, y):
        return tf.stack(measure(self.template, self.task, self.head, self.loss, trainable, non_trainable, x, y))


def _xla_blocker(model) -> str | None:
    """The layer whose training XLA would not reproduce (`fitgap.training.xla`), or None."""
    for layer in _layers(model):
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Conv2D)) or \
                (isinstance(layer, keras.layers.Dropout) and layer.rate > 0):
            return f"{type(layer).__name__} layers"
    return None


def _layers(model) -> list:
    """Every layer, nested models expanded."""
    found = []
    for layer in model.layers:
        found += _layers(layer) if hasattr(layer, "layers") else [layer]
    return found
