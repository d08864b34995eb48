"""The data a trial trains on, as plain numpy arrays (no TensorFlow: the CLI validates data without it).

Every built-in dataset is generated or loaded in full by a loader, then split deterministically: the first
`round(n * (1 - validation_fraction))` rows train, the rest validate. No shuffling happens here, so a dataset and its
split are the same on every run and machine, and `content_hash` proves it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

DEFAULT_VALIDATION_FRACTION = 0.2  # the spec's default, for sections that omit it


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays do not compare to one bool
class Dataset:
    name: str
    task: str  # "binary": y holds 0/1 labels
    x_train: np.ndarray  # float32, (n_train, n_features)
    y_train: np.ndarray  # float32, (n_train, 1)
    x_val: np.ndarray
    y_val: np.ndarray
    content_hash: str  # sha256 of the four arrays' dtypes, shapes and bytes

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def _dot() -> tuple[np.ndarray, np.ndarray, str]:
    """The course's 2-D point set: 300 standard-normal points, label 1 inside the circle x1^2 + x2^2 < 2."""
    rng = np.random.RandomState(2)
    x = rng.randn(300, 2)
    y = (x[:, 0] ** 2 + x[:, 1] ** 2 < 2).astype(np.float32).reshape(-1, 1)  # labelled in float64, as the course does
    return x.astype(np.float32), y, "binary"


# name -> loader returning (x, y, task) for the whole set; new datasets slot in here (and in sweeps.vocabulary.DATASETS)
LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, str]]] = {"dot": _dot}


def load_dataset(section: Mapping, base_dir: Path | None = None) -> Dataset:
    """The spec's dataset section (e.g. ``{"name": "dot", "validation_fraction": 0.2}``) as a split `Dataset`."""
    name = section.get("name")
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}")
    fraction = section.get("validation_fraction", DEFAULT_VALIDATION_FRACTION)
    x, y, task = LOADERS[name]()
    n_train = round(len(x) * (1 - fraction))
    if not 0 < n_train < len(x):
        raise ValueError(
            f"`validation_fraction` {fraction!r} leaves an empty split of dataset {name!r} ({len(x)} rows)"
        )
    arrays = [_frozen(a) for a in (x[:n_train], y[:n_train], x[n_train:], y[n_train:])]
    return Dataset(name, task, *arrays, content_hash=content_hash(*arrays))


def content_hash(*arrays: np.ndarray) -> str:
    """sha256 over each array's dtype, shape and bytes, in little-endian C order (the same on every machine)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.setflags(write=False)  # the hash must stay true
    return array
