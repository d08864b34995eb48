"""The MLP a trial trains, built from a plain params dict, so any stored trial can be rebuilt from the results database.

Choices made once here, for every executor:
- kernels start `he_normal` (the course's advice: centred, std sqrt(2 / n_in)); biases start at zero;
- the regularizer penalizes kernels only, on every Dense layer including the output, never biases.
  `l2` is Keras's `L2(w)` = w * sum(x**2): twice the course's `w * tf.nn.l2_loss(x)`. `l1` is w * sum(|x|);
- `leaky_relu` has slope `leaky_alpha` (default 0.2, as Keras's `activation="leaky_relu"`; `LeakyReLU()` would be 0.3);
- the output is one unit whose meaning depends on the loss (`HEADS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras

from sweeps.vocabulary import HYPERPARAMETERS


@dataclass(frozen=True)
class Head:
    """How the single output unit is trained and read as a probability (accuracy thresholds it at 0.5)."""

    loss: Callable[[], keras.losses.Loss]  # the data loss, mean over the batch
    probability: Callable[[Any], Any]  # output tensor -> P(y = 1)


HEADS: dict[str, Head] = {
    # MSE regresses the 0/1 label directly: the linear output is the "probability".
    "mse": Head(keras.losses.MeanSquaredError, lambda output: output),
    # Cross-entropy on logits: the fused form is numerically stable where sigmoid-then-log is not.
    "binary_crossentropy": Head(lambda: keras.losses.BinaryCrossentropy(from_logits=True), keras.ops.sigmoid),
}

ACTIVATIONS: dict[str, Callable[[Mapping[str, Any]], keras.layers.Layer]] = {
    "sigmoid": lambda params: keras.layers.Activation("sigmoid"),
    "tanh": lambda params: keras.layers.Activation("tanh"),
    "relu": lambda params: keras.layers.ReLU(),
    "leaky_relu": lambda params: keras.layers.LeakyReLU(negative_slope=float(param(params, "leaky_alpha"))),
}

REGULARIZERS: dict[str, Callable[[float], keras.regularizers.Regularizer | None]] = {
    "none": lambda weight: None,
    "l1": keras.regularizers.L1,
    "l2": keras.regularizers.L2,
}

OPTIMIZERS: dict[str, Callable[[float], keras.optimizers.Optimizer]] = {
    # A plain float learning rate, never a schedule object: the trainer assigns it each epoch.
    "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate),
}


def param(params: Mapping[str, Any], name: str) -> Any:
    """A hyperparameter's value, or its vocabulary default when absent (e.g. an unsampled conditional dimension)."""
    return params[name] if name in params else HYPERPARAMETERS[name].default


def head(params: Mapping[str, Any]) -> Head:
    return _choose(HEADS, params, "loss")


def _choose(table: Mapping[str, Any], params: Mapping[str, Any], name: str) -> Any:
    value = param(params, name)
    if value not in table:
        raise ValueError(f"`{name}` must be one of {sorted(table)}, but got {value!r}")
    return table[value]


def build_model(params: Mapping[str, Any], n_inputs: int) -> keras.Model:
    """The MLP n_inputs -> params["hidden"] widths -> 1 output unit (see `HEADS`), built, not compiled."""
    head(params)  # an unknown loss fails here, before anything is built
    regularizer = _choose(REGULARIZERS, params, "regularizer")
    weight = float(param(params, "regularization_weight"))
    activation = _choose(ACTIVATIONS, params, "activation")

    def dense(units: int) -> keras.layers.Dense:
        return keras.layers.Dense(
            units, kernel_initializer="he_normal", bias_initializer="zeros", kernel_regularizer=regularizer(weight)
        )

    layers: list[keras.layers.Layer] = [keras.Input((n_inputs,))]
    for units in params["hidden"]:
        layers += [dense(units), activation(params)]  # a weightless layer: costs no parameters, no multiply-adds
    layers.append(dense(1))  # linear: a logit or, for mse, the prediction itself
    return keras.Sequential(layers, name="mlp")


def make_optimizer(params: Mapping[str, Any]) -> keras.optimizers.Optimizer:
    return _choose(OPTIMIZERS, params, "optimizer")(float(param(params, "learning_rate")))
