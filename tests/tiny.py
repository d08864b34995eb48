"""Tiny datasets and a trial runner for the real-TensorFlow tests: built in memory, to the `Dataset` contract."""

from __future__ import annotations

import numpy as np

from fitgap.data.datasets import Dataset


def dataset(task, x_train, y_train, x_val, y_val, x_test=None, y_test=None, n_classes=None, name="tiny") -> Dataset:
    return Dataset(name=name, task=task, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                   content_hash="tiny", x_test=x_test, y_test=y_test, n_classes=n_classes)


def sales(with_test: bool = False) -> Dataset:
    """The course's yogurt sales, by the course's own code: 32 points, y = x1 + x2 + noise in [-0.05, 0.05)."""
    rdm = np.random.RandomState(23455)
    x = rdm.rand(32, 2)
    y_ = [[x1 + x2 + (rdm.rand() / 10.0 - 0.05)] for (x1, x2) in x]
    x, y = x.astype(np.float32), np.array(y_, dtype=np.float32)
    test = (x[24:], y[24:]) if with_test else (None, None)
    return dataset("regression", x[:24], y[:24], x[24:], y[24:], *test, name="sales")


def blobs(n_classes: int = 3, n: int = 150, seed: int = 0, with_test: bool = False) -> Dataset:
    """Gaussian blobs in 4-D, labels int32 0..n_classes-1: a multiclass task a 4-C network learns in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n).astype(np.int32)
    centres = rng.normal(0, 3, size=(n_classes, 4))
    x = (centres[labels] + rng.normal(0, 1, size=(n, 4))).astype(np.float32)
    cut = int(n * 0.8)
    test = (x[cut:], labels[cut:]) if with_test else (None, None)
    return dataset("multiclass", x[:cut], labels[:cut], x[cut:], labels[cut:], *test, n_classes=n_classes,
                   name="blobs")


def images(n: int = 96, seed: int = 0) -> Dataset:
    """6x6x1 images, class 0 brighter in the left half, class 1 in the right half (plus noise); int32 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n).astype(np.int32)
    x = rng.normal(0, 0.3, size=(n, 6, 6, 1))
    x[labels == 0, :, :3] += 1.0
    x[labels == 1, :, 3:] += 1.0
    x = x.astype(np.float32)
    cut = int(n * 0.75)
    return dataset("multiclass", x[:cut], labels[:cut], x[cut:], labels[cut:], n_classes=2, name="images")
