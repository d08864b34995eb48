"""Data (numpy only): readers of user data (csv, npz, hdf5; the Keras cache is keras_cache.py): each returns checked arrays as `Rows`,
or raises one line naming the file, the column or row, and the problem, quoting the bad value. No TensorFlow here.

The checks live here too, shared by every reader: features are finite numbers; labels fit the task (binary: 0 or 1;
multiclass: integers 0..n_classes-1; regression: finite numbers); x and y have the same number of rows.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


class DataError(ValueError):
    """A data problem, already phrased as one line that names the file and the place."""


@dataclass(frozen=True)
class Rows:
    """A source's checked arrays, before splitting; y already has the shape and dtype of the `Dataset` contract."""

    x: np.ndarray  # float32, (n, *input_shape)
    y: np.ndarray  # binary: float32 (n, 1); regression: float32 (n, k); multiclass: int32 (n,)
    where: str  # names the data in messages: the file as the spec spells it, or "dataset 'iris'"
    x_test: np.ndarray | None = None  # the file's own test set
    y_test: np.ndarray | None = None


def existing_file(spelled: str, base_dir: Path) -> Path:
    """The spec's path, relative to the spec file's folder; a missing file is an OSError naming where we looked."""
    path = Path(spelled).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        raise FileNotFoundError(f"{spelled}: no such file (looked for {path})")
    if not path.is_file():
        raise DataError(f"{spelled}: not a file ({path})")
    return path


@contextlib.contextmanager
def reading(name: str, what: str) -> Iterator[None]:
    """Turn a library's error about an unreadable file into one line; our own `DataError`s pass unchanged."""
    try:
        yield
    except DataError:
        raise
    except Exception as error:  # zipfile, gzip, pickle and h5py each raise their own kinds
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"{name}: cannot read it as {what} ({first})") from None


# --- checks -------------------------------------------------------------------------------------------------------


def features(x: np.ndarray, where: str, scale: float | None = None, flatten: bool = False) -> np.ndarray:
    """x as float32 (n, ...): numeric, finite, divided by `scale`; one column when given as a vector."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: holds {x.dtype} values, but features must be numbers")
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    x = x.astype(np.float32) / np.float32(scale) if scale else x.astype(np.float32)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise DataError(f"{where}, index {index}: not a finite number ({x[index]})")
    return x.reshape(len(x), -1) if flatten else x


def labels(y: np.ndarray, n_rows: int, task: str, n_classes: int | None, where: str,
           at: Callable[[int], str]) -> np.ndarray:
    """y in the contract's shape and dtype, or a `DataError` naming the first bad row: f"{where}, {at(i)}: ..."."""
    if y.ndim == 2 and y.shape[0] == 1 and n_rows != 1:
        y = y.T  # stored as one row of n labels, as in the cat-vs-non-cat files
    if len(y) != n_rows:
        raise DataError(f"{where}: {len(y)} labels for {n_rows} rows of features")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: holds {y.dtype} values, but labels must be numbers")
    if task == "regression":
        if y.ndim > 2:
            raise DataError(f"{where}: regression targets must have shape (n,) or (n, k), but got {y.shape}")
        y = y.astype(np.float32).reshape(n_rows, -1)
        _first_bad(~np.isfinite(y).all(axis=1), y[:, 0], where, at, lambda v: "not a finite number")
        return y
    if not (y.ndim == 1 or y.ndim == 2 and y.shape[1] == 1):
        raise DataError(f"{where}: {task} labels must be one class number per row, but got shape {y.shape} "
                        "(turn one-hot rows into class numbers)")
    y = y.reshape(n_rows).astype(np.float64)
    if task == "binary":
        _first_bad((y != 0) & (y != 1), y, where, at, lambda v: f"label {v:g} is not 0 or 1 (task 'binary')")
        return y.astype(np.float32).reshape(n_rows, 1)
    _first_bad(y != np.round(y), y, where, at, lambda v: f"label {v:g} is not a whole class number")
    if n_classes is None:
        _first_bad(y < 0, y, where, at, lambda v: f"label {v:g} is negative (classes are 0, 1, 2, ...)")
    else:
        _first_bad((y < 0) | (y >= n_classes), y, where, at,
                   lambda v: f"label {v:g} is outside 0..{n_classes - 1} (n_classes {n_classes})")
    return y.astype(np.int32)


def _first_bad(bad: np.ndarray, values: np.ndarray, where: str, at: Callable[[int], str], problem: Callable) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        raise DataError(f"{where}, {at(int(rows[0]))}: {problem(values[rows[0]])}")


# --- csv ----------------------------------------------------------------------------------------------------------


def csv_file(spec, base_dir: Path) -> Rows:
    """A header row, then one row per sample; `features` default to every column but the target."""
    name = spec.path
    path = existing_file(name, base_dir)
    with reading(name, "UTF-8 CSV text"), open(path, newline="", encoding="utf-8-sig") as file:
        records = list(csv.reader(file, skipinitialspace=True))
    if not records:
        raise DataError(f"{name}: empty file (a header row naming the columns is expected)")
    header = [column.strip() for column in records[0]]
    if len(set(header)) < len(header):
        twice = sorted({c for c in header if header.count(c) > 1})
        raise DataError(f"{name}: column names must be unique, but got {twice} more than once")
    wanted = spec.features or [c for c in header if c != spec.target]
    if not wanted:
        raise DataError(f"{name}: no feature columns besides the target {spec.target!r}")
    for column in [*wanted, spec.target]:
        if column not in header:
            raise DataError(f"{name}: no column {column!r}; the columns are {header}")
    numbered = [(i, r) for i, r in enumerate(records[1:], start=1) if r]  # 1-based data rows; blank lines skipped
    for i, record in numbered:
        if len(record) != len(header):
            raise DataError(f"{name}: row {i}: {len(record)} cells, but the header has {len(header)} columns")
    if not numbered:
        raise DataError(f"{name}: no data rows after the header")
    rows = [i for i, _ in numbered]
    columns = [header.index(c) for c in [*wanted, spec.target]]
    cells = np.array([[record[c] for c in columns] for _, record in numbered], dtype=str)
    values = _numbers(cells, name, [*wanted, spec.target], rows)
    y = labels(values[:, -1], len(values), spec.task, spec.n_classes, f"{name}: column {spec.target!r}",
               lambda i: f"row {rows[i]}")
    return Rows(values[:, :-1].astype(np.float32), y, name)


def _numbers(cells: np.ndarray, name: str, columns: list[str], rows: list[int]) -> np.ndarray:
    """The cells as float64, or the first unreadable cell (else the first NaN or infinity) by column and data row."""
    try:
        values = cells.astype(np.float64)
    except ValueError:  # numpy does not say where: look cell by cell, in file order
        values = np.empty(cells.shape)
        for (r, c), cell in np.ndenumerate(cells):
            try:
                values[r, c] = float(cell)
            except ValueError:
                problem = "empty cell" if not cell.strip() else f"not a number ({str(cell)!r})"
                raise DataError(f"{name}: column {columns[c]!r}, row {rows[r]}: {problem}") from None
    for r, c in np.argwhere(~np.isfinite(values))[:1]:
        raise DataError(f"{name}: column {columns[c]!r}, row {rows[r]}: not a finite number ({str(cells[r, c])!r})")
    return values


# --- arrays: npz and hdf5 -----------------------------------------------------------------------------------------


def npz_file(spec, base_dir: Path) -> Rows:
    """Arrays x_train, y_train and, both or neither, x_test, y_test."""
    name = spec.path
    path = existing_file(name, base_dir)
    with reading(name, "a numpy .npz archive"), np.load(path, allow_pickle=False) as archive:  # a pickle runs code
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{name}: a single .npy array, but an .npz archive with x_train and y_train is expected")
        train = pick(archive, ["x_train", "y_train"], name, "array", required=True)
        test = pick(archive, ["x_test", "y_test"], name, "array", required=False)
    places = [f"{name}: array {n!r}" for n in ("x_train", "y_train", "x_test", "y_test")]
    return array_rows(spec, train, test, places, name, spec.scale)


def hdf5_file(spec, base_dir: Path) -> Rows:
    """Named datasets; the test pair comes from `test_path` when given (the cat-vs-non-cat data is two files)."""
    import h5py  # only when an hdf5 source is used

    def read(spelled: str, names: list[str], required: bool) -> list[np.ndarray] | None:
        path = existing_file(spelled, base_dir)
        with reading(spelled, "an HDF5 file"), h5py.File(path, "r") as file:
            return pick(file, names, spelled, "dataset", required)

    test_file = spec.test_path or spec.path
    train = read(spec.path, [spec.x_train, spec.y_train], required=True)
    # The default test names are optional; a test_path or test datasets named in the spec must be there.
    x_test, y_test = spec.x_test or "test_set_x", spec.y_test or "test_set_y"
    explicit = spec.test_path is not None or spec.x_test is not None or spec.y_test is not None
    test = read(test_file, [x_test, y_test], required=explicit)
    places = [f"{spec.path}: dataset {spec.x_train!r}", f"{spec.path}: dataset {spec.y_train!r}",
              f"{test_file}: dataset {x_test!r}", f"{test_file}: dataset {y_test!r}"]
    return array_rows(spec, train, test, places, spec.path, spec.scale)


def pick(container, names: list[str], name: str, kind: str, required: bool) -> list[np.ndarray] | None:
    """The named arrays, all of them; None when none is there and they are optional (a pair is both or neither)."""
    found = [n for n in names if n in container]
    if not found and not required:
        return None
    for n in names:
        if n not in found:
            raise DataError(f"{name}: no {kind} {n!r} (it holds {sorted(container)})")
    return [np.asarray(container[n][()]) for n in names]


def array_rows(spec, train: list[np.ndarray], test: list[np.ndarray] | None, places: list[str], where: str,
               scale: float | None) -> Rows:
    """Checked x/y pairs; places name x_train, y_train, x_test, y_test in messages, `where` the whole source."""
    parts = []
    for (x, y), (x_place, y_place) in zip([train, test] if test else [train], [places[:2], places[2:]]):
        x = features(x, x_place, scale, spec.flatten)
        parts += [x, labels(y, len(x), spec.task, spec.n_classes, y_place, lambda i: f"index {i}")]
    if test and parts[0].shape[1:] != parts[2].shape[1:]:
        raise DataError(f"{places[2]}: samples of shape {parts[2].shape[1:]}, unlike the training samples' "
                        f"{parts[0].shape[1:]}")
    return Rows(parts[0], parts[1], where, *parts[2:])
