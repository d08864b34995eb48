"""TensorFlow side: what the model is fed, from the dataset's arrays and the params (numpy only, no TensorFlow
import).

- `standardize`: every input value (feature, or pixel and channel) to mean 0 and std 1 using the statistics of the
  training split only, applied alike to validation and test; a value constant in the training split (std 0, e.g. the
  blank border pixels of digits) is only centred.
- a cnn fed flat rows reshapes them to `model.image_shape`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fitgap.sweeps.spec import image_shape_for
from fitgap.sweeps.vocabulary import HYPERPARAMETERS


def standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training split's per-value mean and std (std 0 replaced by 1), in float64."""
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)


def image_shape(params: Mapping[str, Any], sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one image a cnn takes: `image_shape` when given (rows are reshaped to it), else the data's."""
    return image_shape_for(params.get("image_shape"), sample_shape)


def model_inputs(params: Mapping[str, Any], data) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """x_train, x_val and x_test (None when the data has no test set) as the model takes them, float32."""
    xs = [data.x_train, data.x_val, data.x_test]
    if params.get("standardize", HYPERPARAMETERS["standardize"].default):
        mean, std = standardizer(data.x_train)
        xs = [None if x is None else ((x - mean) / std).astype(np.float32) for x in xs]
    if params.get("model_kind") == "cnn":
        shape = image_shape(params, tuple(data.x_train.shape[1:]))
        xs = [None if x is None else x.reshape(-1, *shape) for x in xs]
    return xs[0], xs[1], xs[2]
