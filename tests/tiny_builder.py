"""Builders for the `builder` model kind's tests: `function(params, kit) -> keras.Model`."""

import keras


def mlp_again(params, kit):
    """The mlp fitgap builds itself, from the kit's pieces: hidden Dense layers, activation, output."""
    layers = [keras.Input(kit.input_shape)]
    for units in params["hidden"]:
        layers += [kit.dense(units), kit.activation()]
    return keras.Sequential([*layers, kit.output()], name="mlp_again")


def unregularized(params, kit):
    """Ignores the kit's regularizer: fitgap penalizes only what the builder asks for."""
    return keras.Sequential([keras.Input(kit.input_shape), keras.layers.Dense(4), keras.layers.Dense(kit.units)])


def wrong_outputs(params, kit):
    return keras.Sequential([keras.Input(kit.input_shape), keras.layers.Dense(kit.units + 1)])
