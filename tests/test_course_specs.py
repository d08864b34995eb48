"""Every shipped spec loads, validates with its data, and says what the course's experiment was."""

from pathlib import Path

import pytest

from fitgap.studies.api import validate
from fitgap.sweeps.space import grid

SPECS = Path(__file__).parent.parent / "sweeps" / "specs"
COURSE = sorted((SPECS / "course").glob("*.yaml"))


def test_the_course_experiments_are_all_there():
    assert [p.stem for p in COURSE] == ["digits-cnn", "digits-mlp", "dot-decay", "dot-l2", "iris-optimizers", "sales"]


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SPECS)))
def test_every_shipped_spec_validates_with_its_data(path):
    spec, data = validate(path)
    assert spec.name and len(data.x_train) > 0 and len(data.x_val) > 0  # the demo trains on few points, on purpose
    assert path.read_text().startswith("#")  # each says what it reproduces, and how it differs from the course


def test_the_dot_l2_study_is_the_courses_comparison():
    spec, _ = validate(SPECS / "course" / "dot-l2.yaml")
    assert grid(spec) == {"regularizer": ["none", "l2"]} and spec.repeats == 1 and spec.trials == 10
    assert sorted(e["regularizer"] for e in spec.enqueue) == ["l2"] * 5 + ["none"] * 5  # five trainings per arm
    assert spec.params["regularization_weight"] == 0.015  # the course's 0.03 on tf.nn.l2_loss = sum(w**2) / 2
    assert (spec.model.hidden, spec.epochs, spec.batch_size, spec.params["learning_rate"]) == ([11], 400, 32, 0.01)
    assert spec.params["loss"] == "mse"


def test_the_sales_study_has_mse_and_both_sides_of_the_cost_profit_loss():
    spec, data = validate(SPECS / "course" / "sales.yaml")
    assert data.task == "regression" and spec.model.hidden == []
    assert spec.enqueue == [{"loss": "mse"}, {"loss": "asymmetric", "cost": 1.0, "profit": 99.0},
                            {"loss": "asymmetric", "cost": 99.0, "profit": 1.0}]


def test_the_optimizer_study_compares_the_five_on_iris_at_the_courses_settings():
    spec, data = validate(SPECS / "course" / "iris-optimizers.yaml")
    assert grid(spec) == {"optimizer": ["sgd", "sgdm", "adagrad", "rmsprop", "adam"]}
    assert (spec.params["learning_rate"], spec.epochs, spec.batch_size, spec.params["loss"]) == (0.1, 500, 32, "mse")
    assert (data.task, len(data.x_train), len(data.x_val)) == ("multiclass", 120, 30)


def test_the_digits_cnn_regularizes_and_augments():
    spec, data = validate(SPECS / "course" / "digits-cnn.yaml")
    assert spec.model.kind == "cnn" and spec.params["regularizer"] == "l2"
    assert spec.model.augment.crop > 0 and data.x_train.shape[1:] == (8, 8, 1) and data.x_test is not None
