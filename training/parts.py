"""TensorFlow side: the pieces every model kind is made of, chosen by the trial's params: one table per
hyperparameter.

Choices made once here, for every model kind (a user's builder gets the same pieces through `Parts`):
- kernels start with `initializer` (default he_normal: the course's centred weights, std sqrt(2 / n_in)); biases at 0;
- `use_bias: false` drops the bias of every Dense and Conv2D layer (the course's linear models, y = w1 x1 + w2 x2);
- the regularizer penalizes kernels only (every Dense and Conv2D, the output layer included), never biases.
  fitgap's `l2` is Keras's `L2(w)` = w * sum(x**2): twice the course's `w * tf.nn.l2_loss(x)`, so the course's
  weight 0.03 is 0.015 here. `l1` is w * sum(|x|); `l1_l2` is w * (l1_ratio * sum(|x|) + (1 - l1_ratio) * sum(x**2));
- `leaky_relu` has slope `leaky_alpha` (default 0.2, as Keras's `activation="leaky_relu"`; `LeakyReLU()` would be 0.3);
- `dropout` follows the activation of each hidden Dense layer (never a conv block or the output), when above 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras

from fitgap.sweeps.vocabulary import HYPERPARAMETERS

Params = Mapping[str, Any]


def param(params: Params, name: str) -> Any:
    """A hyperparameter's value, or its vocabulary default when absent (e.g. an unsampled conditional dimension)."""
    return params[name] if name in params else HYPERPARAMETERS[name].default


def choose(table: Mapping[str, Any], params: Params, name: str) -> Any:
    value = param(params, name)
    if value not in table:
        raise ValueError(f"`{name}` must be one of {sorted(table)}, but got {value!r}")
    return table[value]


def _named(name: str) -> Callable[[Params], keras.layers.Layer]:
    return lambda params: keras.layers.Activation(name)


ACTIVATIONS: dict[str, Callable[[Params], keras.layers.Layer]] = {
    **{name: _named(name) for name in ("sigmoid", "tanh", "elu", "selu", "gelu", "swish", "softplus", "linear")},
    "relu": lambda params: keras.layers.ReLU(),
    "leaky_relu": lambda params: keras.layers.LeakyReLU(negative_slope=float(param(params, "leaky_alpha"))),
}


def _weight(params: Params) -> float:
    return float(param(params, "regularization_weight"))


REGULARIZERS: dict[str, Callable[[Params], keras.regularizers.Regularizer | None]] = {
    "none": lambda params: None,
    "l1": lambda params: keras.regularizers.L1(_weight(params)),
    "l2": lambda params: keras.regularizers.L2(_weight(params)),
    "l1_l2": lambda params: keras.regularizers.L1L2(
        l1=_weight(params) * float(param(params, "l1_ratio")),
        l2=_weight(params) * (1 - float(param(params, "l1_ratio"))),
    ),
}

# Keras's own initializers with Keras's default arguments (random_normal: std 0.05; truncated_normal: std 0.05).
INITIALIZERS = {
    name: name
    for name in ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal", "lecun_uniform",
                 "random_normal", "truncated_normal")
}


@dataclass(frozen=True)
class Parts:
    """Fresh layers and objects for one trial's params; each call makes a new one."""

    params: Params

    def activation(self) -> keras.layers.Layer:
        return choose(ACTIVATIONS, self.params, "activation")(self.params)

    def regularizer(self) -> keras.regularizers.Regularizer | None:
        return choose(REGULARIZERS, self.params, "regularizer")(self.params)

    def initializer(self) -> keras.initializers.Initializer:
        return keras.initializers.get(choose(INITIALIZERS, self.params, "initializer"))

    def dropout(self) -> keras.layers.Layer | None:
        """A Dropout layer, or None when the rate is 0 (no layer at all, so nothing changes for the course's nets)."""
        rate = float(param(self.params, "dropout"))
        return keras.layers.Dropout(rate) if rate > 0 else None

    def use_bias(self) -> bool:
        return bool(param(self.params, "use_bias"))

    def dense(self, units: int, activation: str | None = None) -> keras.layers.Dense:
        return keras.layers.Dense(units, activation=activation, use_bias=self.use_bias(),
                                  kernel_initializer=self.initializer(), bias_initializer="zeros",
                                  kernel_regularizer=self.regularizer())

    def conv(self, filters: int, kernel: int, stride: int, padding: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=self.use_bias(),
                                   kernel_initializer=self.initializer(), bias_initializer="zeros",
                                   kernel_regularizer=self.regularizer())

    def hidden_layers(self, widths: list[int]) -> list[keras.layers.Layer]:
        """Dense -> activation -> [dropout], per width: a weightless layer costs no parameters, no multiply-adds."""
        layers: list[keras.layers.Layer] = []
        for units in widths:
            layers += [self.dense(units), self.activation()]
            dropout = self.dropout()
            if dropout is not None:
                layers.append(dropout)
        return layers


def validate(params: Params) -> None:
    """Fail on an unknown activation, regularizer or initializer before anything is built."""
    for table, name in ((ACTIVATIONS, "activation"), (REGULARIZERS, "regularizer"), (INITIALIZERS, "initializer")):
        choose(table, params, name)
