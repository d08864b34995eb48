"""TensorFlow side: the course's two complexity measures of a Keras model, in total and per layer.

Space: parameters (weights + biases), split into trainable and non-trainable (BatchNormalization's moving mean and
variance). Time: multiply-adds (MACs) of one forward pass of one sample. The rules (the README's table):

| layer                         | MACs                                              | parameters                     |
|-------------------------------|---------------------------------------------------|--------------------------------|
| Dense                         | n_in * n_out (per position, for inputs of rank>2) | n_in * n_out + n_out           |
| Conv1D/2D/3D                  | k_h * k_w * (c_in / groups) * c_out * H_out * W_out | kernel + c_out                 |
| Conv*Transpose                | kernel size * input positions                     | kernel + c_out                 |
| DepthwiseConv1D/2D            | k_h * k_w * c_in * multiplier * H_out * W_out     | kernel + c_in * multiplier     |
| SeparableConv1D/2D            | (depthwise + pointwise kernels) * output positions | both kernels + biases          |
| BatchNormalization            | 0 (a per-channel scale and shift)                 | 4 per channel, 2 trainable     |
| LayerNormalization, Embedding | 0                                                 | their weights                  |
| activations, pooling, Dropout, Flatten, Reshape, padding, cropping, Add/Concatenate... (`FREE`) | 0 | 0 |

Biases and the input add none. Any other layer — with weights or without (an Attention layer has no weights but
plenty of multiply-adds) — is never guessed as zero: it is listed under ``unknown_layers`` and its row says
``unknown``, so a report can say the MAC total is a lower bound. Nested models are walked layer by layer.
"""

from __future__ import annotations

import csv
import io
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


def _free(layer) -> int:  # no multiply-adds in the course's sense (lookups, per-channel scale and shift, data movement)
    return 0


# Exact classes only: a subclass may compute something else, so it is reported as unknown rather than guessed.
MAC_RULES: dict[type, Callable[[keras.layers.Layer], int]] = {
    L.Dense: _kernel_at_outputs,
    L.Conv1D: _kernel_at_outputs,
    L.Conv2D: _kernel_at_outputs,  # the kernel is (k_h, k_w, c_in / groups, c_out): groups are in its size
    L.Conv3D: _kernel_at_outputs,
    L.Conv1DTranspose: _kernel_at_inputs,
    L.Conv2DTranspose: _kernel_at_inputs,
    L.Conv3DTranspose: _kernel_at_inputs,
    L.DepthwiseConv1D: _kernel_at_outputs,  # the kernel is (k_h, k_w, c_in, multiplier)
    L.DepthwiseConv2D: _kernel_at_outputs,
    L.SeparableConv1D: _separable,
    L.SeparableConv2D: _separable,
    L.BatchNormalization: _free,
    L.LayerNormalization: _free,
    L.Normalization: _free,
    L.Embedding: _free,
}
FREE: frozenset[type] = frozenset({
    L.InputLayer, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Softmax,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianDropout, L.GaussianNoise,
    L.AlphaDropout, L.Flatten, L.Reshape, L.Permute, L.RepeatVector, L.Identity,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.Add, L.Subtract, L.Maximum, L.Minimum, L.Average, L.Concatenate, L.UpSampling1D, L.UpSampling2D,
})
CSV_COLUMNS = ("layer", "class", "output_shape", "params", "params_trainable", "params_non_trainable", "macs")


def count(model: keras.Model) -> dict:
    """Totals (``params_total``, ``params_trainable``, ``params_non_trainable``, ``macs``), ``unknown_layers`` (class
    names) and ``layers`` (one row per layer, nested models expanded, as dicts with the `CSV_COLUMNS` keys)."""
    rows = _rows(model, prefix="")
    trainable = sum(_size(w) for w in model.trainable_weights)
    non_trainable = sum(_size(w) for w in model.non_trainable_weights)
    return {
        "params_total": trainable + non_trainable,
        "params_trainable": trainable,
        "params_non_trainable": non_trainable,
        "macs": sum(row["macs"] for row in rows if row["macs"] != "unknown"),
        "unknown_layers": [row["class"] for row in rows if row["macs"] == "unknown"],
        "layers": rows,
    }


def _rows(model: keras.Model, prefix: str) -> list[dict]:
    rows = []
    for layer in model.layers:
        name = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):  # nested Sequential / functional model
            rows += _rows(layer, prefix=f"{name}/")
            continue
        rows.append({
            "layer": name,
            "class": type(layer).__name__,
            "output_shape": _output_shape(layer),
            "params": sum(_size(w) for w in layer.weights),
            "params_trainable": sum(_size(w) for w in layer.trainable_weights),
            "params_non_trainable": sum(_size(w) for w in layer.non_trainable_weights),
            "macs": _macs(layer),
        })
    return rows


def _macs(layer) -> int | str:
    if type(layer) in FREE:
        return 0
    rule = MAC_RULES.get(type(layer))
    if rule is None:
        return "unknown"
    try:
        return int(rule(layer))
    except (AttributeError, ValueError):  # a layer of a subclassed model has no symbolic output to measure
        return "unknown"


def _output_shape(layer) -> str:
    try:
        return str(tuple(layer.output.shape))
    except (AttributeError, ValueError):
        return ""


def to_csv(rows: list[dict]) -> str:
    """The per-layer table as CSV text (the trial's ``complexity.csv`` artifact)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
