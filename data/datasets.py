"""Data (numpy only, both sides): the data a trial trains on, as plain arrays — the CLI validates data without
TensorFlow, and each executor loads the same arrays.

A loader (the `LOADERS` table) reads a source into checked arrays; `load_dataset` then splits them the same way on
every run and machine, and `content_hash` proves it. Splits, in row order: the file's own test set when it has one,
else the last `test_fraction` of the rows; of the rows left, the last `validation_fraction` validates (or the file's
test set, with `validation: test`). The only shuffle is iris's and digits's, once, with `SHUFFLE_SEED`: sklearn ships
them ordered by class, so their last rows would otherwise all be one class.

Every data problem is caught here, before any trial starts: one line naming the file, the column or row, and the
problem, as a `ValueError` (an `OSError` for a missing file), which `fitgap validate` and `launch` turn into exit 2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from fitgap.data.keras_cache import keras_cache
from fitgap.data.readers import DataError, Rows, csv_file, hdf5_file, labels, npz_file
from fitgap.sweeps.dataset_spec import DatasetSpec

SHUFFLE_SEED = 0  # iris and digits: np.random.RandomState(0).permutation, applied once before splitting


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays do not compare to one bool
class Dataset:
    """What the trainer gets. x: float32 (n, *input_shape). y by task: binary float32 (n, 1) of 0/1; regression
    float32 (n, k); multiclass int32 (n,) of 0..n_classes-1. The test set is for reporting only, never selection."""

    name: str
    task: str  # binary, multiclass or regression
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    content_hash: str  # sha256 of every array's dtype, shape and bytes: train, validation, then test
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    n_classes: int | None = None  # 2 for binary, None for regression

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape: (n_features,) for rows, (h, w, c) for images."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        """Input values per sample (h*w*c for images)."""
        return int(np.prod(self.input_shape))


def _dot(spec, base_dir: Path) -> Rows:
    """The course's 2-D point set: 300 standard-normal points, label 1 inside the circle x1^2 + x2^2 < 2."""
    rng = np.random.RandomState(2)
    x = rng.randn(300, 2)
    y = (x[:, 0] ** 2 + x[:, 1] ** 2 < 2).astype(np.float32).reshape(-1, 1)  # labelled in float64, as the course does
    return Rows(x.astype(np.float32), y, "dataset 'dot'")


def _sales(spec, base_dir: Path) -> Rows:
    """The course's yogurt sales, in the course's order of random draws: all of X first, then one noise per row."""
    rng = np.random.RandomState(23455)
    x = rng.rand(32, 2)
    y = [[x1 + x2 + (rng.rand() / 10.0 - 0.05)] for (x1, x2) in x]
    return Rows(x.astype(np.float32), np.array(y, dtype=np.float32), "dataset 'sales'")


def _iris(spec, base_dir: Path) -> Rows:
    from sklearn.datasets import load_iris  # bundled with scikit-learn: no download

    x, y = load_iris(return_X_y=True)
    return _shuffled(x, y, spec, "dataset 'iris'")


def _digits(spec, base_dir: Path) -> Rows:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # pixels are 0..16
    return _shuffled(x.reshape(-1, 8, 8, 1) if spec.as_images else x, y, spec, "dataset 'digits'")


def _shuffled(x: np.ndarray, y: np.ndarray, spec, where: str) -> Rows:
    order = np.random.RandomState(SHUFFLE_SEED).permutation(len(x))
    y = labels(y[order], len(x), spec.task, spec.n_classes, where, lambda i: f"row {i + 1}")
    return Rows(x[order].astype(np.float32), y, where)


# spec name -> loader(spec, base_dir) -> Rows; a new source slots in here, in sweeps.dataset_spec and in
# sweeps.vocabulary.DATASETS
LOADERS: dict[str, Callable[..., Rows]] = {
    "dot": _dot, "sales": _sales, "iris": _iris, "digits": _digits,
    "csv": csv_file, "npz": npz_file, "hdf5": hdf5_file, "keras": keras_cache,
}
_SPEC = TypeAdapter(DatasetSpec)


def load_dataset(section: Mapping | BaseModel, base_dir: Path | None = None) -> Dataset:
    """The spec's dataset section (e.g. ``{"name": "csv", "path": "data.csv", "target": "y", "task": "binary"}``) as
    a split, checked `Dataset`; relative paths resolve against `base_dir` (the spec file's folder; default: cwd)."""
    spec = section if isinstance(section, BaseModel) else _parse(section)
    rows = LOADERS[spec.name](spec, Path.cwd() if base_dir is None else Path(base_dir))
    if spec.task != "regression":  # one class to learn: every trial would score perfectly, or by chance
        classes = np.unique(np.concatenate([y.ravel() for y in (rows.y, rows.y_test) if y is not None]))
        if len(classes) < 2:
            raise DataError(f"{rows.where}: every label is {classes[0]:g}; a classification needs at least two "
                            "classes")
    train, val, test = _split(spec, rows)
    n_classes = spec.n_classes
    if spec.task == "multiclass" and n_classes is None:  # a user file that did not say: count the classes
        n_classes = int(max(part[1].max() for part in (train, val, test) if part)) + 1
    arrays = [_frozen(a) for part in (train, val, test) if part for a in part]
    return Dataset(spec.name, spec.task, *arrays[:4], content_hash=content_hash(*arrays),
                   x_test=arrays[4] if test else None, y_test=arrays[5] if test else None, n_classes=n_classes)


def _parse(section: Mapping):
    if section.get("name") not in LOADERS:
        raise ValueError(f"unknown dataset {section.get('name')!r}; known: {sorted(LOADERS)}")
    try:
        return _SPEC.validate_python(dict(section))
    except ValidationError as e:
        first = e.errors()[0]  # its loc starts with the source's name: the union's tag
        field = ".".join(map(str, first["loc"][1:]))
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"`{field}`: {message}, but got {first['input']!r}" if field else message) from None


Pair = tuple[np.ndarray, np.ndarray]


def _split(spec, rows: Rows) -> tuple[Pair, Pair, Pair | None]:
    """(train, validation, test or None), each an (x, y) pair cut in row order."""
    own_test = (rows.x_test, rows.y_test) if rows.x_test is not None else None
    on_test = getattr(spec, "validation", "split") == "test"
    if on_test and own_test is None:
        raise DataError(f"{rows.where}: `validation: test` needs the file's own test set, but it has none")
    if own_test and not on_test and spec.test_fraction:
        raise DataError(f"{rows.where}: has its own test set, so `test_fraction` {spec.test_fraction} would make a "
                        "second one; drop it (or validate on the file's test set with `validation: test`)")
    x, y = rows.x, rows.y
    test = None if on_test else own_test
    if spec.test_fraction:
        n = _cut(len(x), spec.test_fraction, "test_fraction", rows.where)
        x, y, test = x[:n], y[:n], (x[n:], y[n:])
    if on_test:
        val = own_test
    else:
        n = _cut(len(x), spec.validation_fraction, "validation_fraction", rows.where)
        x, y, val = x[:n], y[:n], (x[n:], y[n:])
    for label, part in (("training", (x, y)), ("validation", val), ("test", test)):
        if part and not len(part[0]):
            raise DataError(f"{rows.where}: the {label} set is an empty split (0 rows)")
    return (x, y), val, test


def _cut(n_rows: int, fraction: float, field: str, where: str) -> int:
    """How many leading rows stay when the last `fraction` of `n_rows` is split off; both sides must have rows."""
    kept = round(n_rows * (1 - fraction))
    if not 0 < kept < n_rows:
        raise DataError(f"{where}: `{field}` {fraction!r} leaves an empty split ({n_rows} rows: {kept} kept, "
                        f"{n_rows - kept} split off)")
    return kept


def content_hash(*arrays: np.ndarray) -> str:
    """sha256 over each array's dtype, shape and bytes, in little-endian C order (the same on every machine)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)  # the readers already chose float32 or int32
    array.setflags(write=False)  # the hash must stay true
    return array
