"""The names fitgap uses everywhere: hyperparameters with their defaults, metrics, samplers.

A hyperparameter can be searched (``search:``), fixed (``params:``) or left at its default. The defaults are the
course's and are pinned by tests and listed in the README's defaults table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
LOSSES = ("mse", "binary_crossentropy")
REGULARIZERS = ("none", "l1", "l2")
OPTIMIZERS = ("sgd",)
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "nsgaii")
DATASETS = ("dot",)


@dataclass(frozen=True)
class Hyperparameter:
    kind: type  # float, int, bool or str
    default: Any
    choices: tuple = ()  # for str
    minimum: float | None = None  # for numbers
    exclusive_minimum: bool = False
    maximum: float | None = None
    doc: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid for this hyperparameter, or None when it is."""
        if self.kind is str:
            return None if value in self.choices else f"must be one of {list(self.choices)}"
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a {self.kind.__name__}"
        if self.kind is int and value != int(value):
            return "must be an integer"
        if self.minimum is not None:
            if self.exclusive_minimum and not value > self.minimum:
                return f"must be > {self.minimum}"
            if not value >= self.minimum:
                return f"must be >= {self.minimum}"
        if self.maximum is not None and not value <= self.maximum:
            return f"must be <= {self.maximum}"
        return None


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "learning_rate": Hyperparameter(float, 0.01, minimum=0, exclusive_minimum=True, doc="initial learning rate"),
    "decay_rate": Hyperparameter(float, 1.0, minimum=0, exclusive_minimum=True, doc="1.0 = no decay"),
    "decay_steps": Hyperparameter(int, 1, minimum=1, doc="epochs per decay_rate factor"),
    "staircase": Hyperparameter(bool, False, doc="integer division of the decay exponent"),
    "activation": Hyperparameter(str, "relu", choices=ACTIVATIONS),
    "leaky_alpha": Hyperparameter(float, 0.2, minimum=0, exclusive_minimum=True, doc="slope of leaky_relu below 0"),
    "loss": Hyperparameter(str, "binary_crossentropy", choices=LOSSES),
    "regularizer": Hyperparameter(str, "none", choices=REGULARIZERS),
    "regularization_weight": Hyperparameter(float, 0.0, minimum=0, doc="weight of the kernel penalty"),
    "optimizer": Hyperparameter(str, "sgd", choices=OPTIMIZERS),
}

# Measured at the end of every epoch on the train set and (val_) the validation set, without the penalty.
EPOCH_METRICS = (
    "loss", "val_loss",  # the trial's own loss: not comparable across losses
    "bce", "val_bce",  # binary cross-entropy of the predicted probability: loss-independent
    "accuracy", "val_accuracy",
    "gap",  # val_loss - loss
    "accuracy_gap",  # accuracy - val_accuracy
    "reg_loss",  # the regularization penalty, weight * R(kernels)
    "lr",  # the learning rate used during the epoch
)
COMPLEXITY_METRICS = ("params_total", "params_trainable", "macs")
LOSS_DEPENDENT_METRICS = ("loss", "val_loss", "gap")
OBJECTIVE_METRICS = EPOCH_METRICS + COMPLEXITY_METRICS


def default_direction(metric: str) -> str:
    return "maximize" if "accuracy" in metric and metric != "accuracy_gap" else "minimize"
