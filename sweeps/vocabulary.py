"""Spec language: the names fitgap uses everywhere: hyperparameters with their defaults, metrics, samplers, and which go together.

A hyperparameter can be searched (``search:``), fixed (``params:``) or left at its default. The defaults are the
course's where it has one, else Keras's (the course's forms are options: ``momentum_form: course``,
``initial_accumulator: 0``, ``use_bias: false``, ``shuffle: false``); they are pinned by tests and listed in the
README's defaults table. Pure data: no TensorFlow, no pydantic.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "swish", "softplus", "linear")
LOSSES = (
    "mse", "mae", "huber",
    "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
    "softmax_cross_entropy",  # softmax and cross-entropy fused on the logits (the course's stable form)
    "asymmetric",  # the course's cost/profit loss
)
REGULARIZERS = ("none", "l1", "l2", "l1_l2")
OPTIMIZERS = ("sgd", "sgdm", "adagrad", "rmsprop", "adam")
INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal", "lecun_uniform",
                "random_normal", "truncated_normal")
DECAY_UNITS = ("epoch", "step")
MODEL_KINDS = ("mlp", "cnn", "builder")
TASKS = ("binary", "multiclass", "regression")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "nsgaii")
DATASETS = ("dot", "sales", "iris", "digits", "csv", "npz", "hdf5", "keras")


@dataclass(frozen=True)
class Hyperparameter:
    kind: type  # float, int, bool, str, or list (of positive ints: layer widths)
    default: Any
    choices: tuple = ()  # for str
    minimum: float | None = None  # for numbers
    exclusive_minimum: bool = False
    maximum: float | None = None
    exclusive_maximum: bool = False
    doc: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid for this hyperparameter, or None when it is."""
        if self.kind is str:
            return None if value in self.choices else f"must be one of {list(self.choices)}"
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind is list:
            ok = isinstance(value, list) and all(type(v) is int and v > 0 for v in value)
            return None if ok else "must be a list of positive integers (layer widths)"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a {self.kind.__name__}"
        if self.kind is int and not isinstance(value, int):  # 3.0 would reach Keras as a float
            return "must be an integer"
        if not finite(value):
            return "must be a finite number"
        if self.minimum is not None:
            if self.exclusive_minimum and not value > self.minimum:
                return f"must be > {self.minimum}"
            if not value >= self.minimum:
                return f"must be >= {self.minimum}"
        if self.maximum is not None:
            if self.exclusive_maximum and not value < self.maximum:
                return f"must be < {self.maximum}"
            if not value <= self.maximum:
                return f"must be <= {self.maximum}"
        return None


def finite(value: int | float) -> bool:
    """A number a float can hold (a YAML int can have hundreds of digits)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _unit_interval(default: float, doc: str) -> Hyperparameter:  # [0, 1)
    return Hyperparameter(float, default, minimum=0, maximum=1, exclusive_maximum=True, doc=doc)


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "learning_rate": Hyperparameter(float, 0.01, minimum=0, exclusive_minimum=True, doc="initial learning rate"),
    "decay_rate": Hyperparameter(float, 1.0, minimum=0, exclusive_minimum=True, doc="1.0 = no decay"),
    "decay_steps": Hyperparameter(int, 1, minimum=1, doc="epochs or steps (decay_unit) per decay_rate factor"),
    "staircase": Hyperparameter(bool, False, doc="integer division of the decay exponent"),
    "decay_unit": Hyperparameter(str, "epoch", choices=DECAY_UNITS, doc="what the decay exponent counts"),
    "activation": Hyperparameter(str, "relu", choices=ACTIVATIONS),
    "leaky_alpha": Hyperparameter(float, 0.2, minimum=0, exclusive_minimum=True, doc="slope of leaky_relu below 0"),
    "loss": Hyperparameter(str, "binary_crossentropy", choices=LOSSES, doc="default per task: DEFAULT_LOSS"),
    "cost": Hyperparameter(float, 1.0, minimum=0, exclusive_minimum=True, doc="asymmetric: per unit predicted too much"),
    "profit": Hyperparameter(float, 99.0, minimum=0, exclusive_minimum=True, doc="asymmetric: per unit too little"),
    "regularizer": Hyperparameter(str, "none", choices=REGULARIZERS),
    "regularization_weight": Hyperparameter(float, 0.0, minimum=0, doc="weight of the kernel penalty"),
    "l1_ratio": Hyperparameter(float, 0.5, minimum=0, maximum=1, doc="l1_l2: share of the weight on L1"),
    "dropout": _unit_interval(0.0, "rate after each hidden layer"),
    "optimizer": Hyperparameter(str, "sgd", choices=OPTIMIZERS),
    "momentum": _unit_interval(0.9, "sgdm"),
    # Keras's forms by default (every trial before them trained so); the course's are one value away.
    "momentum_form": Hyperparameter(str, "keras", choices=("keras", "course"),
                                    doc="sgdm: keras v = momentum*v - lr*g, w += v; "
                                        "course m = momentum*m + (1 - momentum)*g, w -= lr*m"),
    "initial_accumulator": Hyperparameter(float, 0.1, minimum=0,
                                          doc="adagrad: the accumulator's start (Keras 0.1, the course 0)"),
    "rho": _unit_interval(0.9, "rmsprop: decay of the squared-gradient average"),
    "beta_1": _unit_interval(0.9, "adam: decay of the gradient average"),
    "beta_2": _unit_interval(0.999, "adam: decay of the squared-gradient average"),
    "initializer": Hyperparameter(str, "he_normal", choices=INITIALIZERS, doc="kernels; biases start at 0"),
    "use_bias": Hyperparameter(bool, True, doc="a bias in every Dense and Conv2D layer; false: none (the course's "
                                               "linear models)"),
    "standardize": Hyperparameter(bool, False, doc="inputs to mean 0, std 1 with training-split statistics"),
    "shuffle": Hyperparameter(bool, True, doc="the training rows in a new order every epoch; false: in their stored "
                                              "order, every epoch (the course's)"),
    "early_stopping": Hyperparameter(int, 0, minimum=0, doc="patience in epochs on the first objective; 0 = off"),
    # The shape of training and of the model. Their defaults are the spec-level fields (`epochs:`, `batch_size:`,
    # `model.hidden`); they can be searched, but not fixed in `params:` (the spec-level field is the fixed value).
    "epochs": Hyperparameter(int, 100, minimum=1),
    "batch_size": Hyperparameter(int, 32, minimum=1),
    "hidden": Hyperparameter(list, [11], doc="hidden layer widths"),
    "depth": Hyperparameter(int, 1, minimum=0, doc="hidden = [width] * depth; replaces hidden"),
    "width": Hyperparameter(int, 11, minimum=1, doc="hidden = [width] * depth; replaces hidden"),
}
SPEC_LEVEL = ("epochs", "batch_size", "hidden")  # fixed by spec-level fields, never in `params:`
SHAPE = ("depth", "width")  # in a trial's params only when the spec names one of them

# Built-in conditions: a hyperparameter exists only when another one has one of these values. A spec that searches
# it under a searched parent must say so with a matching `when:` (fitgap does not add it implicitly); where the
# condition is false it is absent from the trial (params, Optuna, MLflow, the results database).
CONDITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "leaky_alpha": ("activation", ("leaky_relu",)),
    "cost": ("loss", ("asymmetric",)),
    "profit": ("loss", ("asymmetric",)),
    "regularization_weight": ("regularizer", ("l1", "l2", "l1_l2")),
    "l1_ratio": ("regularizer", ("l1_l2",)),
    "momentum": ("optimizer", ("sgdm",)),
    "momentum_form": ("optimizer", ("sgdm",)),
    "initial_accumulator": ("optimizer", ("adagrad",)),
    "rho": ("optimizer", ("rmsprop",)),
    "beta_1": ("optimizer", ("adam",)),
    "beta_2": ("optimizer", ("adam",)),
}

# Which values fit a task (binary: y in {0, 1}, one output; multiclass: integer labels, one output per class;
# regression: real targets). Fixed values outside these are refused at load; searched choices are cut down to them
# before sampling, so an incompatible combination is never sampled and never shows up as a failed trial.
LOSSES_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": ("binary_crossentropy", "mse", "mae", "huber"),  # the regression losses regress the 0/1 label
    # mse compares the softmax with the one-hot label, as the course's iris example does
    "multiclass": ("softmax_cross_entropy", "sparse_categorical_crossentropy", "categorical_crossentropy", "mse"),
    "regression": ("mse", "mae", "huber", "asymmetric"),
}
TASK_CHOICES: dict[str, dict[str, tuple]] = {"loss": LOSSES_BY_TASK}
DEFAULT_LOSS = {task: losses[0] for task, losses in LOSSES_BY_TASK.items()}

# Measured at the end of every epoch on the train set and (val_) the validation set, without the penalty; each task
# reports `loss`, its loss-independent metrics (TASK_METRICS), their val_ twins, the gaps, reg_loss and lr.
EPOCH_METRICS = (
    "loss", "val_loss",  # the trial's own loss: not comparable across losses
    "bce", "val_bce",  # binary: cross-entropy of the predicted probability, whatever the loss
    "accuracy", "val_accuracy",  # classification
    "loss_gap",  # val_loss - loss: the trial's own loss
    "fit_gap",  # loss-independent: `fit_gap` below
    "accuracy_gap",  # accuracy - val_accuracy
    "reg_loss",  # the regularization penalty, weight * R(kernels)
    "lr",  # the learning rate at the epoch's first step
    "ce", "val_ce",  # multiclass: cross-entropy of the predicted class probabilities, whatever the loss
    "mse", "val_mse",  # regression: mean squared error of the prediction, whatever the loss
    "mae", "val_mae",  # regression: mean absolute error
)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("bce", "accuracy"),
    "multiclass": ("ce", "accuracy"),
    "regression": ("mse", "mae"),
}
COMPLEXITY_METRICS = ("params_total", "params_trainable", "macs", "params_non_trainable")
LOSS_DEPENDENT_METRICS = ("loss", "val_loss", "loss_gap")
OBJECTIVE_METRICS = EPOCH_METRICS + COMPLEXITY_METRICS
# Measured once on the dataset's test set (when it has one) after training; never an objective.
TEST_METRICS = ("test_loss", "test_bce", "test_ce", "test_mse", "test_mae", "test_accuracy")


def epoch_metrics(task: str) -> tuple[str, ...]:
    """The metrics every epoch of a `task` trial reports, in EPOCH_METRICS order."""
    own = TASK_METRICS[task]
    measured = {"loss", *own, "loss_gap", "fit_gap", "reg_loss", "lr", *(f"val_{m}" for m in ("loss", *own))}
    if "accuracy" in own:
        measured.add("accuracy_gap")
    return tuple(m for m in EPOCH_METRICS if m in measured)


def fit_gap(task: str, metrics) -> float:
    """The fit gap of one epoch: how much worse the model does on the validation set than on the training set, on a
    measure that does not depend on the trial's loss, so that trials with different losses compare.

    - classification: ``val_bce - bce`` (binary) or ``val_ce - ce`` (multiclass), in nats: the cross-entropy of the
      predicted probabilities, whatever the loss trained;
    - regression: ``(val_mse - mse) / (val_mse + mse)``, in [-1, 1]: scale-free, and bounded near zero training
      error, where a relative gap ``(val_mse - mse) / mse`` explodes (0 when both are 0).
    NaN when a measure is missing or not finite."""
    own = TASK_METRICS[task][0]
    train, val = metrics.get(own, math.nan), metrics.get(f"val_{own}", math.nan)
    if task != "regression":
        return val - train
    total = val + train
    return 0.0 if total == 0 else (val - train) / total


FIT_GAP_MEASURES = {"binary": "val_bce - bce", "multiclass": "val_ce - ce",
                    "regression": "(val_mse - mse) / (val_mse + mse)"}


def metrics_on_test_set(task: str) -> tuple[str, ...]:
    """What a `task` trial measures on the dataset's test set, in TEST_METRICS order."""
    return tuple(f"test_{m}" for m in ("loss", *TASK_METRICS[task]))


def default_direction(metric: str) -> str:
    return "maximize" if "accuracy" in metric and metric != "accuracy_gap" else "minimize"


# How every message quotes a value that was given to fitgap: a bounded excerpt, never the whole input (a spec can be
# 50 MB, a `--where` 3,000 parentheses).
EXCERPT = 80
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = EXCERPT  # reprlib stops early: a huge value is never repr'd whole


def shorten(text: str, limit: int = EXCERPT) -> str:
    """`text` when it is at most `limit` characters, else its start and an ellipsis."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def excerpt(value: Any) -> str:
    """The bad value as a message quotes it: its repr, shortened."""
    try:
        return shorten(_REPR.repr(value))
    except ValueError:  # an int of more than 4300 digits has no repr
        return f"a {type(value).__name__} too large to print"
