"""TensorFlow side: the `cnn` model kind (conv blocks, a dense head, the output layer) and its training-only
augmentation.

A conv block is Conv2D -> [BatchNormalization] -> activation -> [max or average pooling]. Images are channels-last
(height, width, channels); flat rows become images when the spec gives `model.image_shape`.

Augmentation (the course's CIFAR-10 recipe: random flips, and random crops of a zero-padded image) is applied to the
training batches in the input pipeline, never inside the model: validation, test and any later use of the model see
the images unchanged, and the model's complexity is the network's alone. Each training image gets its own random
draw per epoch, from a stateless seed (training seed, epoch, row), so a trial's augmentation repeats exactly.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import keras
import tensorflow as tf

from fitgap.training.inputs import image_shape
from fitgap.training.parts import Parts

BLOCK_DEFAULTS = {"kernel": 3, "stride": 1, "padding": "same", "batch_norm": False, "pool": "none", "pool_size": 2}
POOLING: dict[str, Callable[[int], keras.layers.Layer] | None] = {
    "none": None,
    "max": lambda size: keras.layers.MaxPooling2D(size),
    "avg": lambda size: keras.layers.AveragePooling2D(size),
}


def build_cnn(params: Mapping[str, Any], input_shape: tuple[int, ...], parts: Parts,
              output: Callable[[], keras.layers.Layer]) -> keras.Model:
    layers: list[keras.layers.Layer] = [keras.Input(image_shape(params, input_shape))]
    for block in params["conv"]:
        block = {**BLOCK_DEFAULTS, **block}
        layers.append(parts.conv(block["filters"], block["kernel"], block["stride"], block["padding"]))
        if block["batch_norm"]:
            layers.append(keras.layers.BatchNormalization())
        layers.append(parts.activation())
        pool = POOLING[block["pool"]]
        if pool is not None:
            layers.append(pool(block["pool_size"]))
    layers.append(keras.layers.Flatten())
    layers += parts.hidden_layers(params["hidden"])
    layers.append(output())  # made last, so that layer names follow the order of the layers
    return keras.Sequential(layers, name="cnn")


def augmenter(params: Mapping[str, Any]) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None:
    """image (h, w, c), seed (2,) -> the randomly changed image; None when the spec asks for no augmentation."""
    augment = params.get("augment") or {}
    flip, crop = augment.get("flip", "none"), int(augment.get("crop", 0))
    if params.get("model_kind") != "cnn" or (flip == "none" and crop == 0):
        return None

    def change(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        flip_seed, flop_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        if flip in ("horizontal", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        if flip in ("vertical", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_up_down(image, flop_seed)
        if crop:
            padded = tf.pad(image, [[crop, crop], [crop, crop], [0, 0]])
            image = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
        return image

    return change
