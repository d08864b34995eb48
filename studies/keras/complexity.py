"""The course's two complexity measures of a Keras model.

Space: parameters (weights + biases). Time: multiply-adds (MACs) of one forward pass of one sample. A layer with
kernel K applied at P positions costs K.size * P: Dense n_in*n_out (P = 1 for a flat input), Conv2D
k_h*k_w*(c_in/groups)*c_out * H_out*W_out. Biases, activations, pooling, Dropout, Flatten and the input add none.

Layers without weights cost nothing. A layer with weights that has no rule below is never guessed as zero: its class
name is listed under ``unknown_layers``, so a report can say the MAC count is a lower bound.
"""

from __future__ import annotations

import math
from typing import Callable

import keras

L = keras.layers


def _size(variable) -> int:
    return math.prod(variable.shape)


def _positions(shape, data_format: str = "channels_last") -> int:
    """How many positions a kernel is applied at: the product of the dimensions between batch and channels."""
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    return math.prod(int(d) for d in spatial)


def _kernel_at_outputs(layer) -> int:
    return _size(layer.kernel) * _positions(layer.output.shape, getattr(layer, "data_format", "channels_last"))


def _kernel_at_inputs(layer) -> int:  # transposed convolutions: each input position scatters the whole kernel
    return _size(layer.kernel) * _positions(layer.input.shape, layer.data_format)


def _separable(layer) -> int:  # depthwise then pointwise, both at the output positions
    positions = _positions(layer.output.shape, layer.data_format)
    return (_size(layer.depthwise_kernel) + _size(layer.pointwise_kernel)) * positions


def _depthwise(layer) -> int:
    return _size(layer.kernel) * _positions(layer.output.shape, layer.data_format)


def _free(layer) -> int:  # weights, but no multiply-adds in the course's sense (lookups, per-channel scale and shift)
    return 0


# Exact classes only: a subclass may compute something else, so it is reported as unknown rather than guessed.
MAC_RULES: dict[type, Callable[[keras.layers.Layer], int]] = {
    L.Dense: _kernel_at_outputs,
    L.Conv1D: _kernel_at_outputs,
    L.Conv2D: _kernel_at_outputs,
    L.Conv3D: _kernel_at_outputs,
    L.Conv1DTranspose: _kernel_at_inputs,
    L.Conv2DTranspose: _kernel_at_inputs,
    L.Conv3DTranspose: _kernel_at_inputs,
    L.DepthwiseConv1D: _depthwise,
    L.DepthwiseConv2D: _depthwise,
    L.SeparableConv1D: _separable,
    L.SeparableConv2D: _separable,
    L.BatchNormalization: _free,
    L.LayerNormalization: _free,
    L.Embedding: _free,
}


def count(model: keras.Model) -> dict:
    """``params_total``, ``params_trainable``, ``macs`` and ``unknown_layers`` (class names) of a built model."""
    macs, unknown = _macs(model)
    return {
        "params_total": int(model.count_params()),
        "params_trainable": sum(_size(w) for w in model.trainable_weights),
        "macs": macs,
        "unknown_layers": unknown,
    }


def _macs(model: keras.Model) -> tuple[int, list[str]]:
    total, unknown = 0, []
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # nested Sequential / functional model
            inner, inner_unknown = _macs(layer)
            total, unknown = total + inner, unknown + inner_unknown
        elif type(layer) in MAC_RULES:
            total += MAC_RULES[type(layer)](layer)
        elif layer.weights:
            unknown.append(type(layer).__name__)
    return int(total), unknown
