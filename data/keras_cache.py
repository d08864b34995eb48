"""Data (numpy only): Keras datasets (mnist, fashion_mnist, cifar10) read from the files `keras.datasets.*.load_data()` caches, with
numpy, gzip and pickle only: no Keras import, and never a download (a missing file is an error saying how to get it).

The cache is `$KERAS_HOME/datasets`, else `~/.keras/datasets`, laid out as Keras itself writes it:
mnist.npz; fashion-mnist/{train,t10k}-{labels-idx1,images-idx3}-ubyte.gz; cifar-10's pickled batches
data_batch_1..5 and test_batch in cifar-10-batches-py-target/cifar-10-batches-py/ (Keras 3) or cifar-10-batches-py/
(Keras 2). Pixels are scaled to [0, 1]; grey images get a channel axis: (n, 28, 28, 1).
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from fitgap.data.readers import DataError, Rows, array_rows, pick, reading


def keras_cache(spec, base_dir: Path) -> Rows:
    """mnist, fashion_mnist or cifar10 from `$KERAS_HOME/datasets` (default `~/.keras/datasets`); never downloaded."""
    folder = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "datasets"
    (x, y), (x_test, y_test) = _KERAS_FILES[spec.dataset](folder, spec.dataset)
    where = f"keras dataset {spec.dataset!r}"
    train = [x[..., None] if x.ndim == 3 else x, y]  # grey images get their channel axis, as a CNN expects
    test = [x_test[..., None] if x_test.ndim == 3 else x_test, y_test]
    places = [f"{where}: {part}" for part in ("x_train", "y_train", "x_test", "y_test")]
    return array_rows(spec, train, test, places, where, scale=255)  # uint8 pixels -> [0, 1]


def _cached(folder: Path, relative: str, dataset: str) -> Path:
    path = folder / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found, and fitgap never downloads: fetch it once where there is network with "
            f"`python -c \"import keras; keras.datasets.{dataset}.load_data()\"` and copy ~/.keras/datasets/"
            f"{relative.split('/')[0]} into {folder} (or set KERAS_HOME to a folder whose datasets/ holds it)")
    return path


def _mnist(folder: Path, dataset: str):
    path = _cached(folder, "mnist.npz", dataset)
    with reading(str(path), "a numpy .npz archive"), np.load(path, allow_pickle=False) as archive:
        train = pick(archive, ["x_train", "y_train"], str(path), "array", required=True)
        return train, pick(archive, ["x_test", "y_test"], str(path), "array", required=True)


def _fashion_mnist(folder: Path, dataset: str):
    def idx(name: str, offset: int) -> np.ndarray:  # the idx format: a header, then one unsigned byte per value
        path = _cached(folder, f"fashion-mnist/{name}", dataset)
        with reading(str(path), "a gzipped idx file"), gzip.open(path, "rb") as file:
            return np.frombuffer(file.read(), np.uint8, offset=offset)

    pairs = []
    for prefix in ("train", "t10k"):
        y = idx(f"{prefix}-labels-idx1-ubyte.gz", 8)
        x = idx(f"{prefix}-images-idx3-ubyte.gz", 16)
        if x.size != len(y) * 28 * 28:
            raise DataError(f"{folder / 'fashion-mnist'}: {prefix} images hold {x.size} bytes, not 28*28 per label")
        pairs.append((x.reshape(len(y), 28, 28), y))
    return pairs


# Keras 3 extracts cifar-10 into cifar-10-batches-py-target/; Keras 2 (tf.keras) straight into datasets/.
_CIFAR_FOLDERS = ("cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py")


def _cifar10(folder: Path, dataset: str):
    inner = next((f for f in _CIFAR_FOLDERS if (folder / f / "data_batch_1").is_file()), _CIFAR_FOLDERS[0])
    batches = [_cifar_batch(_cached(folder, f"{inner}/{n}", dataset)) for n in
               [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]]
    x, y = (np.concatenate(parts) for parts in zip(*batches[:5]))
    return (x, y), batches[5]


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: rows of 3072 bytes (red, green, blue planes of 32x32) -> (n, 32, 32, 3) channels last."""
    with reading(str(path), "a cifar-10 batch"), open(path, "rb") as file:
        batch = _NumpyOnlyUnpickler(file, encoding="bytes").load()
        data, labels_ = np.asarray(batch[b"data"], np.uint8), np.asarray(batch[b"labels"], np.int64)
        return data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1), labels_


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """A pickle may run any code it names; a cifar batch only needs to rebuild numpy arrays (as Keras allows)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


_KERAS_FILES = {"mnist": _mnist, "fashion_mnist": _fashion_mnist, "cifar10": _cifar10}
