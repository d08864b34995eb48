"""TensorFlow side: what a trained model leaves behind for tracking, as bytes. `tracking` never imports TensorFlow,
so anything that needs the model is computed here, in the executor, at the end of a complete trial
(`core.final_artifacts`).

- ``boundary.npz`` (2-D inputs of a binary task, as the course's dot example): the model's P(y = 1) on a grid over
  the data, with the points. Arrays: ``grid_x`` (nx,), ``grid_y`` (ny,), ``probability`` (ny, nx) float32, and
  ``x_train``, ``y_train``, ``x_val``, ``y_val`` in the data's own units (before standardizing). Tracking draws the
  p = 0.5 contour.
- ``model.keras`` (only when ``TrialTask.save_model``): the trained network in Keras format — architecture and
  weights, uncompiled (fitgap's learning-rate table and custom losses would otherwise be needed to load it), so
  ``keras.models.load_model(path)`` loads it anywhere.
"""

from __future__ import annotations

import io
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import numpy as np

from fitgap.training.inputs import standardizer

GRID_POINTS = 150  # per axis: 22,500 predictions, a few ms; the course's 0.01 step over [-3, 3] is 360,000
MARGIN = 0.1  # of the data's range, on each side


def trial_artifacts(params: Mapping[str, Any], data, save_model: bool, model: Callable[[], keras.Model],
                    probability: Callable[[np.ndarray], np.ndarray]) -> dict[str, bytes]:
    """The artifacts of a finished trial (see the module docstring): `model()` gives its trained model, called only
    when it is saved; `probability(inputs)` its P(y = 1) on `boundary_inputs`."""
    wanted = {}
    if wants_boundary(params, data):
        wanted["boundary.npz"] = lambda: boundary(probability, params, data)
    if save_model:
        wanted["model.keras"] = lambda: model_bytes(model())
    artifacts = {}
    for name, make in wanted.items():
        try:
            artifacts[name] = make()
        except Exception:  # a missing artifact must not fail a trained trial: say why instead
            artifacts[f"{name}.error.txt"] = traceback.format_exc().encode()
    return artifacts


def wants_boundary(params: Mapping[str, Any], data) -> bool:
    return data.task == "binary" and data.input_shape == (2,) and params.get("model_kind", "mlp") != "cnn"


def _grid(data) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([data.x_train, data.x_val])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = (high - low) * MARGIN
    return (np.linspace(low[0] - pad[0], high[0] + pad[0], GRID_POINTS),
            np.linspace(low[1] - pad[1], high[1] + pad[1], GRID_POINTS))


def boundary_inputs(params: Mapping[str, Any], data) -> np.ndarray:
    """The grid's points (GRID_POINTS² rows, row-major over (y, x)) as the model sees them (float32)."""
    xx, yy = np.meshgrid(*_grid(data))
    inputs = np.stack([xx.ravel(), yy.ravel()], axis=1)
    if params.get("standardize"):  # the model sees what `inputs.model_inputs` feeds it
        mean, std = standardizer(data.x_train)
        inputs = (inputs - mean) / std
    return inputs.astype(np.float32)


def boundary(probability: Callable[[np.ndarray], np.ndarray], params: Mapping[str, Any], data) -> bytes:
    grid_x, grid_y = _grid(data)
    values = np.asarray(probability(boundary_inputs(params, data)), np.float32).reshape(len(grid_y), len(grid_x))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, grid_x=grid_x, grid_y=grid_y, probability=values,
                        x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val)
    return buffer.getvalue()


def model_bytes(model: keras.Model) -> bytes:
    """The model in Keras format, uncompiled: a clone with the trained weights."""
    clone = type(model).from_config(model.get_config())  # not clone_model: it would compile the clone too
    clone.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory(prefix="fitgap-model-") as folder:
        path = Path(folder) / "model.keras"
        clone.save(path)
        return path.read_bytes()
