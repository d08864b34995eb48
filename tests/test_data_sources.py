"""Every dataset source: built-ins, user files and the Keras cache, their splits, hashes and bad-data errors.

No TensorFlow: the Keras cache files are written here in Keras's own formats, tiny.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits, load_iris

from fitgap.studies.cli import main
from fitgap.data.datasets import LOADERS, SHUFFLE_SEED, load_dataset
from fitgap.sweeps.dataset_spec import DatasetSpec
from fitgap.sweeps.spec import parse_spec
from fitgap.sweeps.vocabulary import DATASETS

from conftest import snapshot

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def parts(data):
    return [getattr(data, name) for name in ARRAYS if getattr(data, name) is not None]


def write_csv(path: Path, rows: list[list], header=("x1", "x2", "label")) -> Path:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


CSV_ROWS = [[i / 10, (i * 7 % 10) / 10, i % 2] for i in range(10)]


def test_every_source_has_a_spec_and_a_loader():
    tags = {variant.model_fields["name"].annotation.__args__[0] for variant in DatasetSpec.__origin__.__args__}
    assert tags == set(DATASETS) == set(LOADERS)


# --- built-ins ----------------------------------------------------------------------------------------------------


def test_sales_is_the_course_yogurt_data_in_course_order():
    rng = np.random.RandomState(23455)
    X = rng.rand(32, 2)
    Y_ = [[x1 + x2 + (rng.rand() / 10.0 - 0.05)] for (x1, x2) in X]

    data = load_dataset({"name": "sales", "validation_fraction": 0.25})

    assert (data.task, data.n_classes, data.input_shape) == ("regression", None, (2,))
    assert data.x_train.shape == (24, 2) and data.y_train.shape == (24, 1) and data.y_val.shape == (8, 1)
    assert data.y_train.dtype == np.float32 and data.x_test is None
    np.testing.assert_array_equal(np.concatenate([data.x_train, data.x_val]), np.float32(X))
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_val]), np.float32(Y_))


def test_iris_is_shuffled_once_with_the_fixed_seed_then_split_in_order():
    x, y = load_iris(return_X_y=True)
    order = np.random.RandomState(SHUFFLE_SEED).permutation(150)

    data = load_dataset({"name": "iris", "test_fraction": 0.2})

    assert (data.task, data.n_classes, data.n_features) == ("multiclass", 3, 4)
    assert [len(a) for a in parts(data)] == [96, 96, 24, 24, 30, 30]  # test: last 30; validation: last 20% of 120
    assert {a.dtype for a in parts(data)[1::2]} == {np.dtype(np.int32)} and data.y_train.ndim == 1
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_val, data.y_test]), y[order])
    np.testing.assert_array_equal(np.concatenate([data.x_train, data.x_val, data.x_test]), np.float32(x[order]))
    assert len(set(data.y_val)) == 3 and len(set(data.y_test)) == 3  # unshuffled, both would be all class 2
    assert load_dataset({"name": "iris", "test_fraction": 0.2}).content_hash == data.content_hash


def test_digits_scaled_to_unit_range_as_rows_or_images():
    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(SHUFFLE_SEED).permutation(len(x))
    rows = load_dataset({"name": "digits"})
    images = load_dataset({"name": "digits", "as_images": True})

    assert (rows.n_classes, rows.input_shape, images.input_shape) == (10, (64,), (8, 8, 1))
    assert rows.x_train.shape == (1438, 64) and images.x_train.shape == (1438, 8, 8, 1) and len(rows.x_val) == 359
    assert rows.x_train.min() == 0.0 and rows.x_train.max() == 1.0
    np.testing.assert_array_equal(images.x_train.reshape(-1, 64), rows.x_train)
    np.testing.assert_array_equal(np.concatenate([rows.y_train, rows.y_val]), y[order])
    assert set(np.unique(rows.y_val)) == set(range(10))
    assert images.content_hash != rows.content_hash


# --- csv, npz, hdf5 -----------------------------------------------------------------------------------------------


def test_csv_round_trip_with_features_defaulting_to_every_other_column(tmp_path):
    write_csv(tmp_path / "data.csv", CSV_ROWS)
    data = load_dataset({"name": "csv", "path": "data.csv", "target": "label", "task": "binary"}, tmp_path)

    assert (data.task, data.n_classes, data.input_shape) == ("binary", 2, (2,))
    np.testing.assert_array_equal(data.x_train, np.float32([r[:2] for r in CSV_ROWS[:8]]))
    np.testing.assert_array_equal(data.y_val, np.float32([[r[2]] for r in CSV_ROWS[8:]]))


def test_csv_chosen_features_multiclass_counted_and_regression(tmp_path):
    rows = [[i, 10 * i, i % 3] for i in range(10)]
    write_csv(tmp_path / "data.csv", rows)
    spec = {"name": "csv", "path": "data.csv", "target": "label", "task": "multiclass", "features": ["x2"]}
    data = load_dataset(spec, tmp_path)
    assert data.n_classes == 3 and data.y_train.dtype == np.int32
    np.testing.assert_array_equal(data.x_train[:, 0], [10 * i for i in range(8)])

    data = load_dataset({**spec, "task": "regression", "target": "x1", "features": ["x2", "label"]}, tmp_path)
    assert data.n_classes is None and data.y_train.shape == (8, 1) and data.y_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train[2], [20, 2])


def test_npz_with_its_own_test_set_split_or_validating(tmp_path):
    rng = np.random.RandomState(0)
    x, y = rng.randint(0, 256, (20, 3, 3)).astype(np.uint8), rng.randint(0, 4, 20)
    np.savez(tmp_path / "d.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    spec = {"name": "npz", "path": "d.npz", "task": "multiclass", "n_classes": 4, "scale": 255}

    data = load_dataset(spec, tmp_path)
    assert [len(a) for a in parts(data)] == [12, 12, 3, 3, 5, 5] and data.input_shape == (3, 3)
    np.testing.assert_allclose(data.x_test, x[15:] / 255, rtol=1e-6)
    np.testing.assert_array_equal(data.y_val, y[12:15])

    on_test = load_dataset({**spec, "validation": "test", "flatten": True}, tmp_path)
    assert on_test.x_test is None and len(on_test.x_train) == 15 and on_test.input_shape == (9,)
    np.testing.assert_array_equal(on_test.y_val, y[15:])


def test_npz_without_a_test_set_and_a_test_fraction(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.arange(20.0).reshape(10, 2), y_train=np.arange(10.0))
    data = load_dataset({"name": "npz", "path": "d.npz", "task": "regression", "test_fraction": 0.2}, tmp_path)
    assert [len(a) for a in parts(data)] == [6, 6, 2, 2, 2, 2]
    np.testing.assert_array_equal(data.y_test[:, 0], [8, 9])


def write_cat_files(folder: Path, n_train=6, n_test=4) -> None:
    """The cat-vs-non-cat layout: two files, uint8 (n, h, w, 3) images, labels stored as one row (1, n)."""
    rng = np.random.RandomState(1)
    for prefix, n in (("train", n_train), ("test", n_test)):
        with h5py.File(folder / f"{prefix}_catvnoncat.h5", "w") as f:
            f[f"{prefix}_set_x"] = rng.randint(0, 256, (n, 4, 4, 3)).astype(np.uint8)
            f[f"{prefix}_set_y"] = (np.arange(n) % 2).reshape(1, n)
            f["list_classes"] = np.array([b"non-cat", b"cat"])


def test_hdf5_cat_vs_non_cat_layout_works_out_of_the_box(tmp_path):
    write_cat_files(tmp_path)
    spec = {"name": "hdf5", "path": "train_catvnoncat.h5", "test_path": "test_catvnoncat.h5", "task": "binary",
            "scale": 255}
    data = load_dataset(spec, tmp_path)

    with h5py.File(tmp_path / "test_catvnoncat.h5") as f:
        x_test = f["test_set_x"][()]
    assert [len(a) for a in parts(data)] == [5, 5, 1, 1, 4, 4] and data.input_shape == (4, 4, 3)
    assert data.y_train.shape == (5, 1) and data.y_train[:, 0].tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_allclose(data.x_test, x_test / 255, rtol=1e-6)
    assert data.x_train.max() <= 1.0

    only_train = load_dataset({**spec, "test_path": None}, tmp_path)  # no test datasets in the train file: none
    assert only_train.x_test is None


def test_hdf5_renamed_datasets_in_one_file(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["a"], f["b"] = np.ones((4, 2)), np.array([0, 1, 2, 1])
        f["c"], f["d"] = np.zeros((2, 2)), np.array([2, 0])
    spec = {"name": "hdf5", "path": "d.h5", "task": "multiclass", "x_train": "a", "y_train": "b", "x_test": "c",
            "y_test": "d", "validation": "test"}
    data = load_dataset(spec, tmp_path)
    assert data.n_classes == 3 and data.y_val.tolist() == [2, 0] and len(data.x_train) == 4


def test_relative_paths_resolve_against_the_spec_folder_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "specs" / "data").mkdir(parents=True)
    write_csv(tmp_path / "specs" / "data" / "d.csv", CSV_ROWS)
    monkeypatch.chdir(tmp_path)
    section = {"name": "csv", "path": "data/d.csv", "target": "label", "task": "binary"}
    assert len(load_dataset(section, tmp_path / "specs").x_train) == 8
    with pytest.raises(OSError, match="data/d.csv: no such file"):
        load_dataset(section)  # the cwd has no data/d.csv


def test_the_hash_changes_when_one_cell_changes(tmp_path):
    section = {"name": "csv", "path": "d.csv", "target": "label", "task": "binary"}
    write_csv(tmp_path / "d.csv", CSV_ROWS)
    before = load_dataset(section, tmp_path).content_hash
    assert load_dataset(section, tmp_path).content_hash == before
    write_csv(tmp_path / "d.csv", [*CSV_ROWS[:9], [0.9, 0.31, 1]])  # one cell of the validation rows
    assert load_dataset(section, tmp_path).content_hash != before
    held_out = {**section, "test_fraction": 0.1}  # the last row is the test set: it counts too
    write_csv(tmp_path / "d.csv", CSV_ROWS)
    with_test = load_dataset(held_out, tmp_path).content_hash
    assert with_test != before
    write_csv(tmp_path / "d.csv", [*CSV_ROWS[:9], [0.9, 0.31, 1]])
    assert load_dataset(held_out, tmp_path).content_hash != with_test


def test_a_dumped_and_reloaded_section_gives_the_same_data(tmp_path):
    """What an executor gets is `spec.dataset.model_dump()`: it must mean what the spec meant."""
    write_cat_files(tmp_path)
    np.savez(tmp_path / "d.npz", x_train=np.ones((5, 2)), y_train=np.arange(5.0), x_test=np.ones((2, 2)),
             y_test=np.ones(2))
    for section in ({"name": "hdf5", "path": "train_catvnoncat.h5", "task": "binary"},
                    {"name": "npz", "path": "d.npz", "task": "regression", "validation": "test"},
                    {"name": "digits", "as_images": True, "test_fraction": 0.1}):
        spec = parse_spec({"name": "t", "dataset": section})
        again = load_dataset(spec.dataset.model_dump(), tmp_path)
        assert again.content_hash == load_dataset(section, tmp_path).content_hash, section


# --- the Keras cache ----------------------------------------------------------------------------------------------


def idx_gz(path: Path, values: np.ndarray) -> None:
    """The idx format: magic (0x0000, type 0x08 = ubyte, ndim), one big-endian int32 per dimension, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 8, values.ndim) + struct.pack(f">{values.ndim}I", *values.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + values.astype(np.uint8).tobytes())


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING opcodes), as the real cifar-10 batches were written by cPickle;
    Python 3 would write them through `_codecs.encode`, which no real batch contains (and Keras refuses)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes):
        size = len(obj)
        short = size < 256
        self.write((pickle.SHORT_BINSTRING + bytes([size]) if short else pickle.BINSTRING + struct.pack("<i", size)))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A pickled dict with bytes keys; data rows are the red, green then blue 32x32 planes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": b"test", b"labels": labels.tolist(), b"filenames": [b"x.png"] * len(labels),
             b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072)}
    with open(path, "wb") as file:
        Python2Pickler(file, protocol=2).dump(batch)


KERAS_IMAGES = np.random.RandomState(3).randint(0, 256, (12, 32, 32, 3)).astype(np.uint8)
KERAS_LABELS = np.arange(12) % 10


def write_keras_cache(home: Path, dataset: str, cifar_folder: str = "cifar-10-batches-py-target/cifar-10-batches-py"):
    folder = home / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    grey = KERAS_IMAGES[:, :28, :28, 0]
    if dataset == "mnist":
        np.savez(folder / "mnist.npz", x_train=grey[:10], y_train=KERAS_LABELS[:10].astype(np.uint8),
                 x_test=grey[10:], y_test=KERAS_LABELS[10:].astype(np.uint8))
    elif dataset == "fashion_mnist":
        for prefix, rows in (("train", slice(0, 10)), ("t10k", slice(10, 12))):
            idx_gz(folder / "fashion-mnist" / f"{prefix}-labels-idx1-ubyte.gz", KERAS_LABELS[rows])
            idx_gz(folder / "fashion-mnist" / f"{prefix}-images-idx3-ubyte.gz", grey[rows])
    else:
        for i in range(5):
            rows = slice(2 * i, 2 * i + 2)
            cifar_batch(folder / cifar_folder / f"data_batch_{i + 1}", KERAS_IMAGES[rows], KERAS_LABELS[rows])
        cifar_batch(folder / cifar_folder / "test_batch", KERAS_IMAGES[10:], KERAS_LABELS[10:])


@pytest.mark.parametrize("dataset, cifar_folder", [("mnist", ""), ("fashion_mnist", ""),
                                                   ("cifar10", "cifar-10-batches-py-target/cifar-10-batches-py"),
                                                   ("cifar10", "cifar-10-batches-py")])
def test_keras_datasets_come_from_the_local_cache(dataset, cifar_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    write_keras_cache(tmp_path, dataset, cifar_folder)
    data = load_dataset({"name": "keras", "dataset": dataset, "validation": "test"})

    images = KERAS_IMAGES if dataset == "cifar10" else KERAS_IMAGES[:, :28, :28, :1]
    assert (data.task, data.n_classes, data.input_shape) == ("multiclass", 10, images.shape[1:])
    np.testing.assert_allclose(data.x_train, images[:10] / 255, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, KERAS_LABELS[:10])
    np.testing.assert_array_equal(data.y_val, KERAS_LABELS[10:])
    assert data.y_train.dtype == np.int32 and data.x_test is None

    flat = load_dataset({"name": "keras", "dataset": dataset, "flatten": True})
    assert flat.input_shape == (int(np.prod(images.shape[1:])),) and len(flat.x_train) == 8 and len(flat.x_test) == 2


@pytest.mark.parametrize("dataset, expected", [("mnist", "datasets/mnist.npz"),
                                               ("fashion_mnist", "fashion-mnist/train-labels-idx1-ubyte.gz"),
                                               ("cifar10", "cifar-10-batches-py/data_batch_1")])
def test_a_keras_dataset_missing_from_the_cache_is_never_downloaded(dataset, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(OSError) as caught:
        load_dataset({"name": "keras", "dataset": dataset})
    message = str(caught.value)
    assert expected in message and "never downloads" in message and f"keras.datasets.{dataset}" in message
    assert "\n" not in message and not (tmp_path / "datasets").exists()


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    write_keras_cache(tmp_path, "cifar10")
    evil = tmp_path / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py" / "data_batch_3"
    evil.write_bytes(pickle.dumps({b"data": print}))  # a global outside numpy: builtins.print
    with pytest.raises(ValueError, match="data_batch_3: cannot read it as a cifar-10 batch .*builtins.print"):
        load_dataset({"name": "keras", "dataset": "cifar10"})


# --- bad data: one line naming the file, the column or row, and the problem ---------------------------------------

BINARY = {"name": "csv", "path": "data.csv", "target": "label", "task": "binary"}
BAD_ROWS = {  # case -> (rows of data.csv, spec section, expected message)
    "non-numeric cell": ([*CSV_ROWS[:6], [0.6, "abc", 0], *CSV_ROWS[7:]], BINARY,
                         "data.csv: column 'x2', row 7: not a number ('abc')"),
    "NaN cell": ([*CSV_ROWS[:3], ["nan", 0.1, 1], *CSV_ROWS[4:]], BINARY,
                 "data.csv: column 'x1', row 4: not a finite number ('nan')"),
    "empty cell": ([*CSV_ROWS[:2], [0.2, "", 1], *CSV_ROWS[3:]], BINARY, "data.csv: column 'x2', row 3: empty cell"),
    "ragged row": ([*CSV_ROWS[:4], [0.4, 1], *CSV_ROWS[5:]], BINARY,
                   "data.csv: row 5: 2 cells, but the header has 3 columns"),
    "missing target": (CSV_ROWS, {**BINARY, "target": "y"}, "data.csv: no column 'y'; the columns are ['x1', 'x2', "),
    "missing feature": (CSV_ROWS, {**BINARY, "features": ["x1", "x3"]}, "data.csv: no column 'x3'; the columns"),
    "binary label 2": ([*CSV_ROWS[:8], [0.8, 0.1, 2], CSV_ROWS[9]], BINARY,
                       "data.csv: column 'label', row 9: label 2 is not 0 or 1"),
    "class out of range": ([[0, 0, i % 4] for i in range(10)], {**BINARY, "task": "multiclass", "n_classes": 3},
                           "data.csv: column 'label', row 4: label 3 is outside 0..2 (n_classes 3)"),
    "fractional class": ([[0, 0, 1.5 if i == 5 else 1] for i in range(10)], {**BINARY, "task": "multiclass"},
                         "data.csv: column 'label', row 6: label 1.5 is not a whole class number"),
    "empty split": (CSV_ROWS[:2], BINARY, "data.csv: `validation_fraction` 0.2 leaves an empty split"),
    "no data rows": ([], BINARY, "data.csv: no data rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_csv_data_is_one_line_naming_file_column_and_row(case, tmp_path):
    rows, section, expected = BAD_ROWS[case]
    write_csv(tmp_path / "data.csv", rows)
    with pytest.raises(ValueError) as caught:
        load_dataset(section, tmp_path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def bad_npz(path: Path, case: str) -> None:
    x, y = np.ones((6, 2)), np.array([0, 1, 0, 1, 0, 1])
    if case == "rows differ":
        np.savez(path, x_train=x, y_train=y[:5])
    elif case == "NaN feature":
        x[4, 1] = np.nan
        np.savez(path, x_train=x, y_train=y)
    elif case == "half a test set":
        np.savez(path, x_train=x, y_train=y, x_test=x)
    elif case == "label out of range":
        np.savez(path, x_train=x, y_train=np.array([0, 1, 0, 1, 5, 1]))
    elif case == "test samples differ":
        np.savez(path, x_train=x, y_train=y, x_test=np.ones((2, 3)), y_test=y[:2])
    elif case == "not an npz":
        path.write_bytes(b"x1,x2\n1,2\n")
    elif case == "test_fraction with a test set":
        np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    elif case == "validation on a missing test set":
        np.savez(path, x_train=x, y_train=y)


BAD_NPZ = {
    "rows differ": ({}, "d.npz: array 'y_train': 5 labels for 6 rows of features"),
    "NaN feature": ({}, "d.npz: array 'x_train', index (4, 1): not a finite number (nan)"),
    "half a test set": ({}, "d.npz: no array 'y_test' (it holds ['x_test', 'x_train', 'y_train'])"),
    "label out of range": ({}, "d.npz: array 'y_train', index 4: label 5 is not 0 or 1"),
    "test samples differ": ({}, "d.npz: array 'x_test': samples of shape (3,), unlike the training samples' (2,)"),
    "not an npz": ({}, "d.npz: cannot read it as a numpy .npz archive"),
    "test_fraction with a test set": ({"test_fraction": 0.2}, "d.npz: has its own test set"),
    "validation on a missing test set": ({"validation": "test"}, "d.npz: `validation: test` needs the file's own"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_data_is_one_line_naming_file_array_and_index(case, tmp_path):
    extra, expected = BAD_NPZ[case]
    bad_npz(tmp_path / "d.npz", case)
    with pytest.raises(ValueError) as caught:
        load_dataset({"name": "npz", "path": "d.npz", "task": "binary", **extra}, tmp_path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_bad_hdf5_names_the_missing_dataset_and_what_is_there(tmp_path):
    write_cat_files(tmp_path)
    spec = {"name": "hdf5", "path": "train_catvnoncat.h5", "task": "binary"}
    with pytest.raises(ValueError, match=r"^train_catvnoncat.h5: no dataset 'x' \(it holds \['list_classes', "
                                         r"'train_set_x', 'train_set_y'\]\)$"):
        load_dataset({**spec, "x_train": "x"}, tmp_path)
    with pytest.raises(ValueError, match="^train_catvnoncat.h5: no dataset 'test_set_x'"):
        load_dataset({**spec, "x_test": "test_set_x"}, tmp_path)  # a test set named in the spec must exist
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="^junk.h5: cannot read it as an HDF5 file"):
        load_dataset({**spec, "path": "junk.h5"}, tmp_path)


def test_a_missing_file_is_an_os_error_naming_it(tmp_path):
    for section in (BINARY, {"name": "npz", "path": "data.npz", "task": "binary"},
                    {"name": "hdf5", "path": "train.h5", "task": "binary"}):
        with pytest.raises(OSError, match=rf"^{section['path']}: no such file \(looked for .*{section['path']}\)$"):
            load_dataset(section, tmp_path)


# --- through the real CLI: exit 2, one line, nothing written ------------------------------------------------------

SPEC = """\
name: csv-data
dataset: {name: csv, path: data/points.csv, target: label, task: binary}
epochs: 2
trials: 1
"""


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("case, expected", [
    ("non-numeric cell", "data/points.csv: column 'x2', row 7: not a number ('abc')"),
    ("missing file", "data/points.csv: no such file"),
])
def test_bad_data_stops_validate_and_launch_before_anything_is_written(case, expected, workspace, tmp_path):
    (tmp_path / "data").mkdir()
    if case == "non-numeric cell":
        write_csv(tmp_path / "data" / "points.csv", BAD_ROWS["non-numeric cell"][0])
    (tmp_path / "spec.yaml").write_text(SPEC)
    before = snapshot(workspace)
    for command in (["validate", str(tmp_path / "spec.yaml")],
                    ["launch", str(tmp_path / "spec.yaml"), "--workspace", str(workspace)]):
        result = run(*command)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
    assert snapshot(workspace) == before


def test_good_csv_data_validates_through_the_cli(tmp_path):
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "points.csv", CSV_ROWS)
    (tmp_path / "spec.yaml").write_text(SPEC)
    result = run("validate", str(tmp_path / "spec.yaml"))
    assert result.exit_code == 0, result.output
    assert "8 training, 2 validation samples" in result.output
