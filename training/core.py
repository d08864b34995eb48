"""TensorFlow side: the trial core, written once for the three executors (reference, compiled, fused), so that their
trials agree record for record and outcome for outcome.

- `start_trial(task, data) -> TrialStart`: a fresh Keras session, the trial's seed, its head, its inputs
  (`inputs.model_inputs`), its Keras model (`model.build_model`; the seed fixes its initial weights and dropout
  seeds), its complexity, and `complexity.csv` as its first artifact. A fused member's model is not built: its
  initial weights come from its layers' initializers.
- `measure(template, task, head, loss, trainable, non_trainable, x, y)`: one whole set's data loss (without the
  penalty) and the task's metrics (`vocabulary.TASK_METRICS`) in inference mode, in `set_measures(task)` order.
  `template` only shapes the graph: any model of the same config passes its own weights.
- `EpochRule`: what follows every epoch, from its measured vector (`measured_names` order). A non-finite training
  loss fails the trial (FAIL "non-finite loss (nan) at epoch 7"; that epoch is not reported). Otherwise the
  `EpochRecord` (the measures, `loss_gap` = val_loss - loss, `fit_gap` (`vocabulary.fit_gap`), `accuracy_gap` for
  classification, `lr` = the rate of the epoch's first step, `ended_at` = now) goes to `on_epoch`, and True from it
  stops the trial (PRUNED "stopped at epoch e"). The rule keeps the weights of the best epoch on the first objective
  (the first of ties: the epoch the coordinator reports and the score comes from), so the model a trial ends with,
  its test score and its saved model are that epoch's; a complexity objective keeps the last epoch's. Early stopping
  (`early_stopping` = a patience > 0) on the first objective (val_loss when it is a complexity metric) stops once it
  has not strictly improved for `patience` epochs and says so in the reason.
- `as_test_metrics`: the test set's measures by name (`test_loss`, `test_<metric>`); measured once, after training,
  with the weights the trial ends with (its best epoch's), and never used for selection.
- Outcomes: `trained_outcome` (the rule's state and reason; a complete trial's test metrics and `final_artifacts`)
  and `failed_outcome` (FAIL from an exception: the `one_line` reason and the traceback). A trial's own problem never
  raises.
"""

from __future__ import annotations

import functools
import math
import random
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from fitgap.errors import one_line
from fitgap.studies.messages import TrialOutcome, TrialTask
from fitgap.sweeps.vocabulary import COMPLEXITY_METRICS, TASK_METRICS, epoch_metrics, fit_gap
from fitgap.tracking.records import EpochRecord
from fitgap.training.artifacts import trial_artifacts
from fitgap.training.complexity import count, to_csv
from fitgap.training.heads import TASK_MEASURES, Head, head_for, loss_targets, output_units
from fitgap.training.inputs import model_inputs
from fitgap.training.model import build_model, mlp_layers
from fitgap.training.parts import param
from fitgap.training.steps import epoch_learning_rate

Weights = list  # plain arrays, in the order the executor's weights() returns and takes them


# ---- starting a trial ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrialStart:
    """One trial, ready to train: its model with the initial weights and everything measured about it."""

    model: keras.Model | None  # None when not built (`start_trial(built=False)`): then `initial` holds its weights
    head: Head
    units: int
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray | None
    targets: np.ndarray  # what the training loss compares with (one-hot where the loss wants it)
    complexity: dict[str, int]
    artifacts: dict[str, bytes]
    initial: list[tuple[np.ndarray, np.ndarray | None]] | None = None  # per Dense layer: kernel, bias (None: no bias)


def start_trial(task: TrialTask, data, collect_garbage: bool = True, built: bool = True) -> TrialStart:
    """The trial's model and inputs, built in this order on every executor: same seed, same initial weights.

    `collect_garbage=False` skips the full garbage collection of `clear_session` (a fused batch collects once for all
    its members). `built=False` (an mlp: a fused member) makes the model's layers without building them and keeps
    only the initial weights their initializers give (Keras's own calls, so the same values; a fifth of the time of
    building the model); its complexity is that of the same layers built once (`_counted`). It skips what empties
    TensorFlow's cache of eager kernels (each op after it costs ~3 ms): `clear_session` (a fused batch clears the
    session once for all its members) and TensorFlow's global seed, which no unbuilt layer reads (initializers draw
    their seeds from Python's generator)."""
    if built:
        keras.backend.clear_session(free_memory=collect_garbage)  # the executor process is reused across trials
        keras.utils.set_random_seed(task.seed)  # same seed, same initial weights, same dropout masks
    else:
        random.seed(task.seed)  # `set_random_seed` without its TensorFlow part
        np.random.seed(task.seed)
    params = task.params
    head, units = head_for(params, data.task), output_units(data)
    x_train, x_val, x_test = model_inputs(params, data)
    targets = loss_targets(head, data.y_train, units)
    if not built:
        layers = mlp_layers(params, x_train.shape[1:], data.task, units)
        initial = _initial_weights(layers, math.prod(x_train.shape[1:]))
        return TrialStart(None, head, units, x_train, x_val, x_test, targets,
                          *_counted(params, x_train.shape[1:], data.task, units, layers), initial)
    model = build_model(params, x_train.shape[1:], data.task, units, search_dir=task.data_dir)
    return TrialStart(model, head, units, x_train, x_val, x_test, targets, *_complexity(model))


def _complexity(model: keras.Model) -> tuple[dict[str, int], dict[str, bytes]]:
    """The model's complexity totals, and its per-layer table as the first artifact."""
    totals = count(model)
    return ({name: totals[name] for name in COMPLEXITY_METRICS},
            {"complexity.csv": to_csv(totals["layers"]).encode()})


_COUNTS: dict[tuple, tuple[dict[str, int], dict[str, bytes]]] = {}


def _counted(params, shape, task: str, units: int, layers: list) -> tuple[dict[str, int], dict[str, bytes]]:
    """`_complexity` of the model these unbuilt `layers` make, from a cache keyed by all it reads (each layer's
    class, width and bias; the input shape): on a miss the model is built after a `clear_session`, so its layers
    get the names they have in a trial's own session (which follow from their classes and order)."""
    key = (tuple(shape), tuple((type(layer).__name__, getattr(layer, "units", None), getattr(layer, "use_bias", None))
                               for layer in layers))
    if key not in _COUNTS:
        keras.backend.clear_session(free_memory=False)
        _COUNTS[key] = _complexity(build_model(params, shape, task, units))
    return _COUNTS[key]


def _initial_weights(layers: list, fan_in: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per Dense layer, the kernel and bias its variables would start with: `add_weight` calls the same
    initializer with the same shape and dtype."""
    weights = []
    for dense in (layer for layer in layers if isinstance(layer, keras.layers.Dense)):
        kernel = dense.kernel_initializer((fan_in, dense.units), dtype="float32")
        bias = dense.bias_initializer((dense.units,), dtype="float32") if dense.use_bias else None
        weights.append((keras.ops.convert_to_numpy(kernel), None if bias is None else keras.ops.convert_to_numpy(bias)))
        fan_in = dense.units
    return weights


# ---- measuring -------------------------------------------------------------------------------------------------------


def set_measures(task: str) -> tuple[str, ...]:
    """What `measure` returns for one set, in order: the data loss, then the task's metrics."""
    return ("loss", *TASK_METRICS[task])


def measured_names(task: str) -> list[str]:
    """An epoch's measured vector: `set_measures` on train, then on validation (val_), then reg_loss."""
    own = set_measures(task)
    return [*own, *(f"val_{m}" for m in own), "reg_loss"]


def as_test_metrics(task: str, values: Sequence[float]) -> dict[str, float]:
    """`measure`'s values on the test set, by name."""
    return {f"test_{name}": value for name, value in zip(set_measures(task), values)}


def measure(template: keras.Model, task: str, head: Head, loss: keras.losses.Loss, trainable, non_trainable, x, y,
            keras_penalty: bool = False):
    """[data loss, *task metrics] of the model on (x, y), in inference mode, as scalars (the caller stacks them); with
    `keras_penalty`, also the template's own Keras penalty (its regularizers' weights are its own: only for a template
    built from this trial's params)."""
    called = template.stateless_call(trainable, non_trainable, x, training=False, return_losses=keras_penalty)
    output = called[0]
    target = tf.one_hot(tf.cast(y, tf.int32), tf.shape(output)[-1]) if head.one_hot else y
    values = [loss(target, output), *TASK_MEASURES[task](head, output, y)]
    if not keras_penalty:
        return values
    penalties = called[2]  # every loss the model adds: for fitgap's own models, the kernel penalties alone
    return values, tf.add_n(penalties) if penalties else tf.constant(0.0)


# ---- after each epoch ------------------------------------------------------------------------------------------------


@dataclass
class _BestEpoch:
    """The best epoch so far on `metric` (strictly better only: the first of ties, the epoch the coordinator reports)
    and its weights; with a `patience` > 0, early stopping once `patience` epochs were not better."""

    metric: str
    direction: str
    patience: int = 0
    best: float | None = None
    best_epoch: int = -1
    weights: Weights | None = None

    @classmethod
    def of(cls, task: TrialTask, measured: set[str]) -> _BestEpoch | None:
        """On the first objective when epochs measure it; else (a complexity objective: the last epoch is the best)
        only for early stopping, on val_loss."""
        patience = int(param(task.params, "early_stopping"))
        watched = [(m, d) for m, d in task.objective[:1] if m in measured]
        if watched:
            return cls(*watched[0], patience)
        return cls("val_loss", "minimize", patience) if patience > 0 else None

    def after(self, epoch: int, metrics: Mapping[str, float], weights: Callable[[], Weights]) -> str | None:
        """Keep the weights of a strictly better epoch; the reason to stop once `patience` epochs were not."""
        value = metrics[self.metric]
        better = math.isfinite(value) and (
            self.best is None or (value < self.best if self.direction == "minimize" else value > self.best)
        )
        if better:
            self.best, self.best_epoch, self.weights = value, epoch, weights()
        elif self.patience and epoch - self.best_epoch >= self.patience:
            return (f"early stopping after epoch {epoch}: {self.metric} not better than {self.best:.6g} (epoch "
                    f"{self.best_epoch}) for {self.patience} epochs; epoch {self.best_epoch}'s weights restored")
        return None


class EpochRule:
    """The after-epoch rule (see the module docstring) for one trial. `weights()` returns the trial's current weights
    as plain arrays; it is called at each epoch better than all before (`_BestEpoch`)."""

    def __init__(self, task: TrialTask, data_task: str, steps: int, on_epoch: Callable[[EpochRecord], bool],
                 weights: Callable[[], Weights]):
        self.task, self.steps, self.on_epoch, self.weights = task, steps, on_epoch, weights
        self.names = measured_names(data_task)
        self.data_task = data_task
        self.stopping = _BestEpoch.of(task, set(epoch_metrics(data_task)))
        self.state, self.reason = "COMPLETE", None

    def after(self, epoch: int, measured: Sequence[float]) -> bool:
        """Handle one epoch's measured vector; True once the trial must stop training."""
        values = dict(zip(self.names, measured))
        if not math.isfinite(values["loss"]):
            return self._stop("FAIL", f"non-finite loss ({values['loss']}) at epoch {epoch}")
        metrics = {**values, "loss_gap": values["val_loss"] - values["loss"],
                   "fit_gap": fit_gap(self.data_task, values),
                   "lr": epoch_learning_rate(self.task.params, epoch, self.steps)}
        if "accuracy" in values:
            metrics["accuracy_gap"] = values["accuracy"] - values["val_accuracy"]
        if self.on_epoch(EpochRecord(trial=self.task.number, epoch=epoch, metrics=metrics, ended_at=time.time())):
            return self._stop("PRUNED", f"stopped at epoch {epoch}")
        if self.stopping is not None:
            reason = self.stopping.after(epoch, metrics, self.weights)
            if reason:
                return self._stop("COMPLETE", reason)
        return False

    def _stop(self, state: str, reason: str) -> bool:
        self.state, self.reason = state, reason
        return True

    @property
    def best_weights(self) -> Weights | None:
        """The best epoch's weights, or None (a complexity objective without early stopping, or no finite epoch)."""
        return self.stopping.weights if self.stopping is not None else None

    def final_weights(self, current: Weights) -> Weights:
        """The weights the trial ends with: the best epoch's (the score's), else `current`."""
        best = self.best_weights
        return current if best is None else best


# ---- outcomes --------------------------------------------------------------------------------------------------------


def final_artifacts(start: TrialStart, task: TrialTask, data, weights: Weights | None = None,
                    probability: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, bytes]:
    """`start`'s artifacts and a complete trial's (`artifacts.trial_artifacts`: boundary.npz, model.keras), from its
    own Keras model (built here if `start` has none): given `weights` (trainable then non-trainable variables, each
    cut to the variable's shape, since a fused member's are padded), or with the weights the model holds when None.
    `probability` (inputs -> P(y = 1)): computed by the caller, as a fused batch does for all its members at once."""
    @functools.cache
    def model() -> keras.Model:
        built = start.model
        if built is None:  # a fresh session, so that its layers have the names the member's would have had
            keras.backend.clear_session(free_memory=False)
            built = build_model(task.params, start.x_train.shape[1:], data.task, start.units)
        if weights is not None:
            for variable, value in zip([*built.trainable_variables, *built.non_trainable_variables], weights):
                variable.assign(value[tuple(slice(0, size) for size in variable.shape)])
        return built

    def predicted(inputs: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(start.head.probability(model()(inputs, training=False)))

    return {**start.artifacts, **trial_artifacts(task.params, data, task.save_model, model, probability or predicted)}


def trained_outcome(task: TrialTask, data, start: TrialStart, rule: EpochRule, executor: str,
                    measure_test: Callable[[np.ndarray, np.ndarray], Sequence[float]],
                    weights: Weights | None = None,
                    probability: Callable[[np.ndarray], np.ndarray] | None = None) -> TrialOutcome:
    """The outcome of a trial that trained to its end or was stopped by its rule. A complete one is measured on the
    test set (`measure_test(x_test, y_test)`, when the data has one) and leaves its `final_artifacts`, both with the
    weights it ends with: `weights` (see `final_artifacts`), or the model's own when None."""
    if rule.state != "COMPLETE":
        return TrialOutcome(task.number, rule.state, start.complexity, reason=rule.reason, artifacts=start.artifacts,
                            executor=executor)
    test = {} if start.x_test is None else as_test_metrics(data.task, measure_test(start.x_test, data.y_test))
    return TrialOutcome(task.number, rule.state, start.complexity, reason=rule.reason, test_metrics=test,
                        artifacts=final_artifacts(start, task, data, weights, probability), executor=executor)


def failed_outcome(task: TrialTask, error: Exception, executor: str, start: TrialStart | None = None) -> TrialOutcome:
    """FAIL from `error`, raised while handling it (the traceback is the current exception's)."""
    return TrialOutcome(task.number, "FAIL", start.complexity if start else {}, reason=one_line(error),
                        traceback=traceback.format_exc(), artifacts=start.artifacts if start else {}, executor=executor)
