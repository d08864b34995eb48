"""Datasets and the per-epoch schedule: pure numpy, no TensorFlow."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fitgap.data.datasets import content_hash, load_dataset
from fitgap.training.steps import batch_order, epoch_learning_rate

ROOT = Path(__file__).resolve().parents[1]

# The dot dataset's hash, pinned: a different value means stored trials no longer describe the same data.
DOT_HASH = "d5d6163cede5ea447cbcb989566914b44201f4f883f3ae1e2d6c4b084ef0bac9"


def test_dot_is_the_course_dataset_split_in_order():
    rng = np.random.RandomState(2)
    X = rng.randn(300, 2)
    Y_ = [int(x0 * x0 + x1 * x1 < 2) for (x0, x1) in X]  # the course's own labelling

    data = load_dataset({"name": "dot", "validation_fraction": 0.2})

    assert (data.name, data.task) == ("dot", "binary")
    assert data.x_train.shape == (240, 2) and data.x_val.shape == (60, 2)
    assert data.y_train.shape == (240, 1) and data.y_val.shape == (60, 1)
    assert {a.dtype for a in (data.x_train, data.y_train, data.x_val, data.y_val)} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(np.concatenate([data.x_train, data.x_val]), X.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_val])[:, 0], Y_)


def test_split_size_follows_validation_fraction():
    data = load_dataset({"name": "dot", "validation_fraction": 0.25})
    assert (len(data.x_train), len(data.x_val)) == (225, 75)


def test_a_split_that_would_be_empty_is_an_error():
    with pytest.raises(ValueError, match="empty split"):
        load_dataset({"name": "dot", "validation_fraction": 0.001})


def test_unknown_dataset_is_named_in_the_error():
    with pytest.raises(ValueError, match="'moons'"):
        load_dataset({"name": "moons"})


def test_hash_is_pinned_and_the_same_on_every_load():
    assert load_dataset({"name": "dot", "validation_fraction": 0.2}).content_hash == DOT_HASH
    assert load_dataset({"name": "dot"}).content_hash == DOT_HASH  # 0.2 is the default


def test_hash_changes_with_values_split_shape_and_dtype():
    data = load_dataset({"name": "dot", "validation_fraction": 0.2})
    arrays = [data.x_train, data.y_train, data.x_val, data.y_val]
    assert content_hash(*arrays) == data.content_hash

    changed = data.x_train.copy()
    changed[7, 1] += 1e-3
    assert content_hash(changed, *arrays[1:]) != DOT_HASH
    assert load_dataset({"name": "dot", "validation_fraction": 0.3}).content_hash != DOT_HASH
    assert content_hash(data.x_train.reshape(2, 240), *arrays[1:]) != DOT_HASH  # same bytes, other shape
    assert content_hash(data.x_train.view(np.int32), *arrays[1:]) != DOT_HASH  # same bytes, other dtype


def test_dataset_arrays_are_read_only():
    data = load_dataset({"name": "dot"})
    with pytest.raises(ValueError):
        data.x_train[0, 0] = 5.0


def test_learning_rate_decays_per_epoch_from_the_initial_rate():
    params = {"learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 2, "staircase": False}
    expected = [0.1, 0.1 * 0.5**0.5, 0.05, 0.1 * 0.5**1.5, 0.025]
    assert [epoch_learning_rate(params, e, 1) for e in range(5)] == pytest.approx(expected, rel=1e-12)


def test_staircase_decays_in_whole_steps():
    params = {"learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 2, "staircase": True}
    expected = [0.1, 0.1, 0.05, 0.05, 0.025]
    assert [epoch_learning_rate(params, e, 1) for e in range(5)] == pytest.approx(expected, rel=1e-12)


def test_missing_schedule_params_fall_back_to_defaults():
    # learning_rate 0.01 and decay_rate 1.0 (no decay) are the vocabulary's defaults
    assert epoch_learning_rate({}, 0, 1) == epoch_learning_rate({}, 50, 1) == pytest.approx(0.01)
    assert epoch_learning_rate({"learning_rate": 0.2, "decay_rate": 0.9}, 3, 1) == pytest.approx(0.2 * 0.9**3)


def test_batch_order_is_a_permutation_fixed_by_seed_and_epoch():
    order = batch_order(seed=7, epoch=0, n=240)
    np.testing.assert_array_equal(np.sort(order), np.arange(240))
    np.testing.assert_array_equal(order, batch_order(seed=7, epoch=0, n=240))
    assert not np.array_equal(order, batch_order(seed=7, epoch=1, n=240))
    assert not np.array_equal(order, batch_order(seed=8, epoch=0, n=240))
    assert not np.array_equal(order, np.arange(240))


def test_datasets_and_schedule_do_not_import_tensorflow():
    code = (
        "import sys, fitgap.data.datasets, fitgap.training.steps; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
