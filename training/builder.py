"""TensorFlow side: the `builder` model kind, the user's own Keras model, from
`model: {kind: builder, builder: "module:function"}`.

The function is called as ``function(params, kit) -> keras.Model``:
- `params` is the trial's full params dict (every hyperparameter, `hidden`, and for depth/width specs `depth`/`width`);
- `kit` is a `Kit`: the data's `input_shape`, the `task`, the output `units`, and fitgap's pieces for this trial —
  `kit.dense(units)` (a Dense with fitgap's initializer and kernel regularizer), `kit.regularizer()`,
  `kit.initializer()`, `kit.activation()`, `kit.dropout()` (None when dropout is 0), `kit.conv(...)`, and
  `kit.output()`, the output layer the trial's loss expects: end the model with it.
fitgap applies the regularizer and the activation only where the builder uses these pieces, then checks the model's
output has `units` values, counts its complexity, and trains it like any other (a Sequential or functional model gets
a full per-layer count; in a subclassed model, layers whose cost depends on their output shape are reported unknown).

Importing the module runs the user's code, so a spec that names a builder is refused unless allowed
(`--allow-builder`). The module is imported with the spec's folder first on sys.path.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras
import numpy as np

from fitgap.training.parts import Parts


@dataclass(frozen=True)
class Kit:
    input_shape: tuple[int, ...]  # one sample's shape
    task: str  # binary, multiclass or regression
    units: int  # values the output layer must have
    parts: Parts
    output: Callable[[], keras.layers.Layer]  # the output layer for the trial's loss and task

    def dense(self, units: int) -> keras.layers.Dense:
        return self.parts.dense(units)

    def conv(self, filters: int, kernel: int = 3, stride: int = 1, padding: str = "same") -> keras.layers.Conv2D:
        return self.parts.conv(filters, kernel, stride, padding)

    def regularizer(self):
        return self.parts.regularizer()

    def initializer(self):
        return self.parts.initializer()

    def activation(self) -> keras.layers.Layer:
        return self.parts.activation()

    def dropout(self) -> keras.layers.Layer | None:
        return self.parts.dropout()


def load_builder(path: str, search_dir: str | None = None) -> Callable[[Mapping[str, Any], Kit], keras.Model]:
    """The function named by `module:function`, imported with `search_dir` first on sys.path."""
    module_name, _, function_name = path.partition(":")
    if search_dir:
        sys.path.insert(0, search_dir)
    try:
        module = importlib.import_module(module_name)
    finally:
        if search_dir:
            sys.path.remove(search_dir)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"`model.builder` {path!r}: module {module_name!r} has no function {function_name!r}")
    return function


def build_user_model(params: Mapping[str, Any], kit: Kit, search_dir: str | None = None) -> keras.Model:
    model = load_builder(params["builder"], search_dir)(dict(params), kit)
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model.builder` {params['builder']!r} must return a keras.Model, but got "
                         f"{type(model).__name__}")
    output = model(np.zeros((1, *kit.input_shape), dtype=np.float32), training=False)  # builds it, checks the input
    if tuple(output.shape) != (1, kit.units):
        raise ValueError(f"`model.builder` {params['builder']!r} returned a model whose output has shape "
                         f"{tuple(output.shape)[1:]}, but this {kit.task} task needs ({kit.units},): end it with "
                         "kit.output()")
    return model
