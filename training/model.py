"""TensorFlow side: the model a trial trains, built from a plain params dict, so any stored trial can be rebuilt
from the results database.

`params["model_kind"]` picks the builder (`MODEL_KINDS`; absent means mlp): every kind is made of the same pieces
(`parts.Parts`: activation, initializer, kernel regularizer, dropout) and ends with the output layer of the head for the
trial's task and loss (`heads.HEADS`). The optimizers are the course's five (`OPTIMIZERS`), in Keras's forms unless
the params ask for the course's (`momentum_form`, `initial_accumulator`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import keras

from fitgap.training.builder import Kit, build_user_model
from fitgap.training.cnn import build_cnn
from fitgap.training.heads import head_for
from fitgap.training.optimizers import CourseMomentum
from fitgap.training.parts import Parts, choose, param
from fitgap.training.parts import validate as check_parts

Params = Mapping[str, Any]


def build_mlp(params: Params, input_shape: tuple[int, ...], parts: Parts,
              output: Callable[[], keras.layers.Layer]) -> keras.Model:
    return keras.Sequential(_mlp_layers(params, input_shape, parts, output), name="mlp")


def _mlp_layers(params: Params, input_shape: tuple[int, ...], parts: Parts,
                output: Callable[[], keras.layers.Layer]) -> list[keras.layers.Layer]:
    """input -> [Flatten, for images] -> hidden Dense layers (activation, dropout) -> output."""
    layers: list[keras.layers.Layer] = [keras.Input(input_shape)]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten())
    layers += parts.hidden_layers(params["hidden"])
    layers.append(output())  # made last, so that layer names follow the order of the layers
    return layers


def mlp_layers(params: Params, input_shape: int | tuple[int, ...], task: str = "binary",
               units: int = 1) -> list[keras.layers.Layer]:
    """The layers of the mlp `build_model` builds, made in its order but not built (no variables): each kernel
    initializer draws its seed when it is made, so after the same `set_random_seed` they give the initial weights
    the built model would hold (all a fused member needs of its model)."""
    return _mlp_layers(params, *_pieces(params, input_shape, task, units))


def _pieces(params: Params, input_shape: int | tuple[int, ...], task: str, units: int):
    """(sample shape, parts, output layer factory) of `params`, checked."""
    head = head_for(params, task)  # an unknown loss, or one that does not fit the task, fails here
    check_parts(params)
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    parts = Parts(params)

    def output() -> keras.layers.Layer:
        return parts.dense(units, activation=head.activation)  # linear unless the head says softmax

    return shape, parts, output


def build_model(params: Params, input_shape: int | tuple[int, ...], task: str = "binary", units: int = 1,
                search_dir: str | None = None) -> keras.Model:
    """The model of `params` for samples of `input_shape` (an int: that many features), built, not compiled.

    `units` output values (1 for binary, the classes for multiclass, the targets for regression); `search_dir` is
    where a builder's module is looked for first (the spec's folder).
    """
    shape, parts, output = _pieces(params, input_shape, task, units)
    kind = params.get("model_kind", "mlp")
    if kind == "builder":  # the user's function gets the same pieces, and what it must know to fit the task
        return build_user_model(params, Kit(shape, task, units, parts, output), search_dir)
    return choose(MODEL_KINDS, {"model_kind": kind}, "model_kind")(params, shape, parts, output)


# (params, sample shape, parts, output layer factory) -> model; "builder" is the user's function (`builder.py`)
MODEL_KINDS: dict[str, Callable[..., keras.Model]] = {"mlp": build_mlp, "cnn": build_cnn}

# sgdm by `momentum_form`: Keras's (v = momentum v - lr g; w += v) or the course's (`optimizers.CourseMomentum`).
MOMENTUM_FORMS = {"keras": keras.optimizers.SGD, "course": CourseMomentum}

# Keras's implementations (and the course's momentum); what the spec does not set keeps Keras's default (epsilon
# 1e-7; Adagrad's accumulator starts at `initial_accumulator`, 0.1). The learning rate is a float or fitgap's
# per-step schedule (`reference._StepRates`).
OPTIMIZERS: dict[str, Callable[[Params, Any], keras.optimizers.Optimizer]] = {
    "sgd": lambda params, rate: keras.optimizers.SGD(learning_rate=rate),
    "sgdm": lambda params, rate: choose(MOMENTUM_FORMS, params, "momentum_form")(
        learning_rate=rate, momentum=float(param(params, "momentum"))),
    "adagrad": lambda params, rate: keras.optimizers.Adagrad(
        learning_rate=rate, initial_accumulator_value=float(param(params, "initial_accumulator"))),
    "rmsprop": lambda params, rate: keras.optimizers.RMSprop(learning_rate=rate, rho=float(param(params, "rho"))),
    "adam": lambda params, rate: keras.optimizers.Adam(learning_rate=rate, beta_1=float(param(params, "beta_1")),
                                                       beta_2=float(param(params, "beta_2"))),
}


def make_optimizer(params: Params, rate=None) -> keras.optimizers.Optimizer:
    """The trial's optimizer at `rate` (a float or a schedule; default: the initial learning rate)."""
    if rate is None:
        rate = float(param(params, "learning_rate"))
    return choose(OPTIMIZERS, params, "optimizer")(params, rate)
