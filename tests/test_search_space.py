"""The search space without TensorFlow: built-in conditions, what fits each task, and what a trial's params hold."""

from __future__ import annotations

import sys

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from fitgap.training.inputs import model_inputs, standardizer
from fitgap.sweeps.space import grid, make_sampler, suggest, trial_params
from fitgap.sweeps.reading import load_spec
from fitgap.sweeps.spec import SpecError, check_builder, check_input_shape, parse_spec
from fitgap.sweeps.vocabulary import CONDITIONS, HYPERPARAMETERS, LOSSES, LOSSES_BY_TASK

from tiny import dataset

DATASET = {"binary": {"name": "dot"}, "multiclass": {"name": "iris"}, "regression": {"name": "sales"}}
OBJECTIVE = {"binary": "val_bce", "multiclass": "val_ce", "regression": "val_mse"}


def spec_with(task="binary", **fields):
    return parse_spec({"name": "t", "dataset": DATASET[task], "objective": [{"metric": OBJECTIVE[task]}], **fields})


def refused(expected: str, **fields) -> str:
    with pytest.raises(SpecError) as caught:
        spec_with(**fields)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    return message


def sample(spec, n=200, seed=0):
    """(params, Optuna params) of `n` trials drawn by a RandomSampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append((trial_params(spec, suggest(trial, spec)), dict(trial.params)))
        study.tell(trial, 0.0)
    return drawn


# ---- built-in conditions ----------------------------------------------------------------------------------------------

PARENT_CHOICES = {"activation": ["relu", "leaky_relu"], "loss": ["mse", "asymmetric"],
                  "regularizer": ["none", "l1", "l2", "l1_l2"],
                  "optimizer": ["sgd", "sgdm", "adagrad", "rmsprop", "adam"]}
LOW_HIGH = {"regularization_weight": (1e-4, 1e-2), "cost": (1.0, 9.0), "profit": (1.0, 9.0)}
CHOICES = {"momentum_form": ["keras", "course"]}  # the conditional str hyperparameters; the others are floats


def dimension(name: str) -> dict:
    if name in CHOICES:
        return {"type": "categorical", "choices": CHOICES[name]}
    low, high = LOW_HIGH.get(name, (0.1, 0.5))
    return {"type": "float", "low": low, "high": high}


def fixed_value(name: str):
    return CHOICES[name][-1] if name in CHOICES else LOW_HIGH.get(name, (0.1, 0.5))[1]


def weight_for(name: str) -> dict:
    """l1_ratio's regularizers need a weight too (the default 0 trains without a penalty)."""
    return {"regularization_weight": 0.01} if name == "l1_ratio" else {}


def conditional_search(name: str, when: list | None) -> dict:
    parent, _ = CONDITIONS[name]
    dim = {**dimension(name), **({"when": {parent: when}} if when is not None else {})}
    return {parent: {"type": "categorical", "choices": PARENT_CHOICES[parent]}, name: dim}


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_a_conditional_dimension_needs_its_when_and_exists_only_where_it_holds(name):
    parent, allowed = CONDITIONS[name]
    task = "regression" if parent == "loss" else "binary"
    message = refused(f"`search.{name}` exists only when {parent} is one of {list(allowed)}", task=task,
                      search=conditional_search(name, None))
    assert "fitgap does not add the condition" in message
    other = next(c for c in PARENT_CHOICES[parent] if c not in allowed)
    refused(f"`search.{name}` exists only when", task=task, search=conditional_search(name, [*allowed, other]))

    spec = spec_with(task, search=conditional_search(name, list(allowed)), params=weight_for(name))
    seen = set()
    for params, optuna_params in sample(spec, n=60):
        holds = params[parent] in allowed
        assert (name in params) == holds == (name in optuna_params)
        seen.add(holds)
    assert seen == {True, False}


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_a_conditional_hyperparameter_under_a_fixed_parent_that_excludes_it_is_refused(name):
    parent, allowed = CONDITIONS[name]
    task = "regression" if parent == "loss" else "binary"
    other = next(c for c in PARENT_CHOICES[parent] if c not in allowed)
    refused(f"`search.{name}` is used only when {parent} is one of {list(allowed)}, but {parent} is {other!r}",
            task=task, params={parent: other}, search={name: dimension(name)})
    refused(f"`params.{name}` is used only when", task=task, params={parent: other, name: fixed_value(name)})
    spec_with(task, params={parent: allowed[0], name: fixed_value(name), **weight_for(name)})  # a parent allowing it


def test_a_fixed_conditional_value_goes_only_where_its_searched_parent_allows_it():
    spec = spec_with(params={"momentum": 0.5}, search={"optimizer": {"type": "categorical", "choices": ["sgd", "sgdm"]}})
    for params, _ in sample(spec, n=30):
        assert params.get("momentum") == (0.5 if params["optimizer"] == "sgdm" else None)


def test_defaulted_conditional_hyperparameters_are_absent_where_they_do_not_apply():
    params = trial_params(spec_with(), {})
    for name in CONDITIONS:  # relu, binary_crossentropy, no regularizer, sgd: none of them applies
        assert name not in params
    params = trial_params(spec_with(params={"activation": "leaky_relu", "optimizer": "adam", "regularizer": "l1_l2",
                                            "regularization_weight": 0.01}), {})
    assert (params["leaky_alpha"], params["beta_1"], params["beta_2"], params["l1_ratio"]) == (0.2, 0.9, 0.999, 0.5)
    assert "momentum" not in params and "rho" not in params


def test_the_courses_forms_are_options_and_keras_forms_stay_the_defaults():
    params = trial_params(spec_with(), {})
    assert (params["use_bias"], params["shuffle"]) == (True, True)  # in every trial: they are not conditional
    sgdm = trial_params(spec_with(params={"optimizer": "sgdm"}), {})
    adagrad = trial_params(spec_with(params={"optimizer": "adagrad"}), {})
    assert (sgdm["momentum_form"], adagrad["initial_accumulator"]) == ("keras", 0.1)  # Keras's SGD and Adagrad
    course = {"optimizer": "adagrad", "initial_accumulator": 0.0, "use_bias": False, "shuffle": False}
    assert trial_params(spec_with(params=course), {}).items() >= course.items()
    refused("`params.momentum_form`", params={"optimizer": "sgdm", "momentum_form": "nesterov"})
    refused("`params.initial_accumulator`", params={"optimizer": "adagrad", "initial_accumulator": -0.1})
    refused("`params.shuffle`", params={"shuffle": "no"})


# ---- what fits the task -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, loss",
    [("binary", "softmax_cross_entropy"),  # a softmax over one output unit is always 1
     ("binary", "sparse_categorical_crossentropy"), ("binary", "asymmetric"),
     ("multiclass", "binary_crossentropy"), ("multiclass", "huber"),
     ("regression", "binary_crossentropy"), ("regression", "categorical_crossentropy")],
)
def test_a_fixed_loss_that_cannot_fit_the_task_is_refused_at_load(task, loss):
    refused(f"`params.loss` {loss!r} does not fit the {task} task of dataset {DATASET[task]['name']!r}; valid there: "
            f"{list(LOSSES_BY_TASK[task])}", task=task, params={"loss": loss})
    refused(f"`enqueue[0].loss` {loss!r} does not fit", task=task, enqueue=[{"loss": loss}],
            search={"loss": {"type": "categorical", "choices": list(LOSSES)}})


@pytest.mark.parametrize("task", sorted(LOSSES_BY_TASK))
def test_a_searched_loss_never_samples_what_does_not_fit_the_task(task):
    spec = spec_with(task, search={"loss": {"type": "categorical", "choices": list(LOSSES)}})
    losses = {params["loss"] for params, _ in sample(spec, n=150)}
    assert losses == set(LOSSES_BY_TASK[task])
    study = optuna.create_study()
    trial = study.ask()
    suggest(trial, spec)
    assert trial.distributions["loss"].choices == tuple(c for c in LOSSES if c in LOSSES_BY_TASK[task])


def test_a_searched_loss_with_no_choice_for_the_task_is_a_load_error_and_defaults_follow_the_task():
    refused("`search.loss.choices`: none of ['binary_crossentropy', 'softmax_cross_entropy'] fits the regression task",
            task="regression", search={"loss": {"type": "categorical",
                                                "choices": ["binary_crossentropy", "softmax_cross_entropy"]}})
    assert trial_params(spec_with("regression"), {})["loss"] == "mse"
    assert trial_params(spec_with("multiclass"), {})["loss"] == "softmax_cross_entropy"
    assert trial_params(spec_with("binary"), {})["loss"] == "binary_crossentropy"


def test_grid_enumerates_only_the_fitting_choices_and_runs_to_its_end_under_ask_and_tell():
    spec = spec_with("regression", sampler="grid", trials=4,
                     search={"loss": {"type": "categorical", "choices": ["mse", "binary_crossentropy", "mae"]},
                             "hidden": {"type": "categorical", "choices": [[4], [8, 8]]}})
    assert grid(spec) == {"loss": ["mse", "mae"], "hidden": ["[4]", "[8, 8]"]}
    study = optuna.create_study(sampler=make_sampler(spec, seed=0))
    seen = set()
    for _ in range(4):  # Optuna's GridSampler would call study.stop() on the last tell, which raises outside optimize
        trial = study.ask()
        params = trial_params(spec, suggest(trial, spec))
        seen.add((params["loss"], tuple(params["hidden"])))
        study.tell(trial, 0.0)
    assert seen == {("mse", (4,)), ("mse", (8, 8)), ("mae", (4,)), ("mae", (8, 8))}


@pytest.mark.parametrize("sampler", ["random", "tpe", "qmc", "nsgaii"])
def test_two_coordinators_with_one_seed_draw_distinct_params_that_follow_the_trial_number(sampler):
    """Two workers that start together build the same seeded sampler: their draws must still differ, and a trial's
    draw must depend on its number (and the history), not on which coordinator asked it or how asks were batched."""
    spec = spec_with(sampler=sampler, search={"learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                                              "width": {"type": "int", "low": 1, "high": 512}})

    def draws(asker_of, batch=1):
        storage = optuna.storages.InMemoryStorage()
        optuna.create_study(storage=storage, study_name="s")
        studies = [optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(spec, seed=7))
                   for _ in range(2)]
        drawn = {}
        for first in range(0, 8, batch):  # asks several trials before suggesting (the coordinator suggests each first)
            asked = [studies[asker_of(n)].ask() for n in range(first, first + batch)]
            drawn |= {trial.number: tuple(sorted(suggest(trial, spec).items())) for trial in asked}
        return drawn

    alternating, one_coordinator, batched = draws(lambda n: n % 2), draws(lambda n: 0), draws(lambda n: 0, batch=4)
    assert len(set(alternating.values())) == 8
    assert alternating == one_coordinator == batched


@pytest.mark.parametrize(
    "task, metric, expected",
    [("regression", "val_accuracy", "'val_accuracy' is not measured for a regression task"),
     ("binary", "val_mse", "'val_mse' is not measured for a binary task"),
     ("multiclass", "val_bce", "'val_bce' is not measured for a multiclass task")],
)
def test_an_objective_the_task_does_not_measure_is_refused(task, metric, expected):
    refused(expected, task=task, objective=[{"metric": metric}])


@pytest.mark.parametrize("task, suggestion", [("binary", "val_bce or val_accuracy"),
                                              ("multiclass", "val_ce or val_accuracy"),
                                              ("regression", "val_mse or val_mae")])
def test_a_searched_loss_needs_an_objective_that_does_not_depend_on_it(task, suggestion):
    refused(f"use a loss-independent metric such as {suggestion}", task=task, objective=[{"metric": "loss_gap"}],
            search={"loss": {"type": "categorical", "choices": list(LOSSES_BY_TASK[task])}})


def test_early_stopping_needs_an_epoch_metric_first():
    refused("`early_stopping` watches the first objective, but 'params_total' is not measured per epoch",
            objective=[{"metric": "params_total"}, {"metric": "val_bce"}], params={"early_stopping": 3})
    spec_with(objective=[{"metric": "val_bce"}, {"metric": "params_total"}], params={"early_stopping": 3})


# ---- shape of training and model ----------------------------------------------------------------------------------------


def test_epochs_batch_size_and_hidden_can_be_searched_and_default_to_the_spec_level_fields():
    spec = spec_with(epochs=7, batch_size=16, model={"hidden": [3]},
                     search={"epochs": {"type": "int", "low": 2, "high": 4},
                             "hidden": {"type": "categorical", "choices": [[4], [8, 2]]}})
    drawn = sample(spec, n=20)
    assert {p["epochs"] for p, _ in drawn} == {2, 3, 4} and {p["batch_size"] for p, _ in drawn} == {16}
    assert {tuple(p["hidden"]) for p, _ in drawn} == {(4,), (8, 2)}
    assert {o["hidden"] for _, o in drawn} == {"[4]", "[8, 2]"}  # a JSON string to Optuna
    plain = trial_params(spec_with(epochs=7, batch_size=16, model={"hidden": [3]}), {})
    assert (plain["epochs"], plain["batch_size"], plain["hidden"]) == (7, 16, [3])


def test_shape_conflicts_are_refused():
    refused("`params.epochs`: set it at the spec level (`epochs:`)", params={"epochs": 5})
    refused("`params.hidden`: set it at the spec level (`model.hidden:`)", params={"hidden": [4]})
    refused("`depth` and `hidden` both set the hidden layers", model={"hidden": [4]}, params={"depth": 2})
    refused("`search.hidden.choices` must be a list of positive integers",
            search={"hidden": {"type": "categorical", "choices": [[4], [0]]}})
    refused("`enqueue[0].hidden`: a list of widths cannot be enqueued",
            search={"hidden": {"type": "categorical", "choices": [[4], [8]]}}, enqueue=[{"hidden": [4]}])


def test_depth_and_width_are_in_the_params_only_when_named():
    spec = spec_with(search={"depth": {"type": "int", "low": 0, "high": 3}}, params={"width": 6})
    for params, _ in sample(spec, n=20):
        assert params["hidden"] == [6] * params["depth"] and params["width"] == 6
    assert "depth" not in trial_params(spec_with(), {}) and "width" not in trial_params(spec_with(), {})


@pytest.mark.parametrize("value, ok", [(1, True), (3, True), (0, False), (-2, False), (1.5, False), ("two", False)])
def test_repeats_is_a_positive_integer_defaulting_to_1(value, ok):
    assert spec_with().repeats == 1
    if ok:
        assert spec_with(repeats=value).repeats == value
    else:
        refused("`repeats`", repeats=value)


def test_the_model_section_is_in_every_trials_params():
    spec = spec_with("multiclass", model={"kind": "cnn", "conv": [{"filters": 4}], "image_shape": [2, 2, 1],
                                          "augment": {"crop": 1}})
    params = trial_params(spec, {})
    assert params["model_kind"] == "cnn" and params["hidden"] == []
    assert params["conv"] == [{"filters": 4, "kernel": 3, "stride": 1, "padding": "same", "batch_norm": False,
                               "pool": "none", "pool_size": 2}]
    assert params["image_shape"] == [2, 2, 1] and params["augment"] == {"flip": "none", "crop": 1}
    assert trial_params(spec_with(), {})["model_kind"] == "mlp"  # kind: mlp by default
    refused("`model.conv.0.filterz`: unknown key", model={"kind": "cnn", "conv": [{"filters": 4, "filterz": 4}]})
    refused("`model.conv`", model={"kind": "cnn", "conv": []})
    refused("`model.builder`", model={"kind": "builder", "builder": "no colon here"})


# ---- builders ---------------------------------------------------------------------------------------------------------


BUILDER_SPEC = """\
name: built
dataset: {name: dot}
model: {kind: builder, builder: "my_builders:build", hidden: [4]}
epochs: 2
"""


def test_a_builder_spec_is_refused_unless_allowed(tmp_path, monkeypatch):
    from fitgap.studies.cli import main

    (tmp_path / "spec.yaml").write_text(BUILDER_SPEC)
    (tmp_path / "my_builders.py").write_text("raise SystemExit('imported')\n")  # never imported by validation
    spec = load_spec(tmp_path / "spec.yaml")
    with pytest.raises(SpecError, match="would import and run your code: pass --allow-builder") as caught:
        check_builder(spec, allow_builder=False)
    assert caught.value.exit_code == 2
    check_builder(spec, allow_builder=True)  # found in the spec's folder; not imported
    assert "my_builders" not in sys.modules

    runner = CliRunner()
    refused_run = runner.invoke(main, ["validate", str(tmp_path / "spec.yaml")])
    assert refused_run.exit_code == 2 and len(refused_run.stderr.strip().splitlines()) == 1
    assert "--allow-builder" in refused_run.stderr
    allowed = runner.invoke(main, ["validate", str(tmp_path / "spec.yaml"), "--allow-builder"])
    assert allowed.exit_code == 0, allowed.output
    launch = runner.invoke(main, ["launch", str(tmp_path / "spec.yaml"), "--workspace", str(tmp_path / "ws")])
    assert launch.exit_code == 2 and "--allow-builder" in launch.stderr and not (tmp_path / "ws").exists()

    # rerun runs a stored spec's builder (on shared storage, someone else's module name) only when allowed too
    from fitgap.studies.api import create, rerun

    create(tmp_path / "spec.yaml", allow_builder=True, workspace=tmp_path / "created")
    with pytest.raises(SpecError, match="would import and run your code: pass --allow-builder"):
        rerun("built", 0, data_dir=tmp_path, workspace=tmp_path / "created")
    with pytest.raises(SpecError, match="has no trial 0"):
        rerun("built", 0, data_dir=tmp_path, workspace=tmp_path / "created", allow_builder=True)
    assert "my_builders" not in sys.modules

    (tmp_path / "my_builders.py").unlink()
    with pytest.raises(SpecError, match="no module 'my_builders'"):
        check_builder(spec, allow_builder=True)


# ---- inputs -----------------------------------------------------------------------------------------------------------


def test_standardize_uses_the_training_split_statistics_only():
    rng = np.random.default_rng(0)
    x_train = rng.normal(5, 2, size=(200, 3)).astype(np.float32)
    x_train[:, 2] = 7.0  # constant in training: centred, not divided by 0
    x_val = rng.normal(-3, 10, size=(50, 3)).astype(np.float32)
    data = dataset("binary", x_train, np.zeros((200, 1), np.float32), x_val, np.zeros((50, 1), np.float32),
                   x_val[:10], np.zeros((10, 1), np.float32))
    train, val, test = model_inputs({"standardize": True}, data)
    np.testing.assert_allclose(train[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train[:, :2].std(0), 1, atol=1e-5)
    mean, std = standardizer(x_train)
    np.testing.assert_allclose(val, (x_val - mean) / std, rtol=1e-5)  # validation moved by the training statistics
    assert abs(val[:, 0].mean()) > 1  # ...so it is not centred itself
    np.testing.assert_allclose(test, val[:10], rtol=1e-6)
    assert std[2] == 1.0 and np.all(train[:, 2] == 0)
    untouched = model_inputs({}, data)
    assert untouched[0] is x_train and HYPERPARAMETERS["standardize"].default is False


def test_a_cnn_reshapes_rows_to_its_image_shape_or_says_why_it_cannot():
    rows = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    data = dataset("multiclass", rows, np.zeros(2, np.int32), rows, np.zeros(2, np.int32), n_classes=2)
    train, _, _ = model_inputs({"model_kind": "cnn", "image_shape": [2, 3, 2]}, data)
    assert train.shape == (2, 2, 3, 2) and train[1, 0, 0, 0] == 12
    with pytest.raises(ValueError, match=r"`model.image_shape` \[2, 2, 2\] holds 8 values"):
        model_inputs({"model_kind": "cnn", "image_shape": [2, 2, 2]}, data)
    with pytest.raises(ValueError, match="set `model.image_shape`"):
        model_inputs({"model_kind": "cnn"}, data)


def test_a_cnn_that_cannot_take_the_datas_samples_is_refused_before_any_trial():
    cnn = {"kind": "cnn", "conv": [{"filters": 4}]}
    check_input_shape(spec_with("multiclass", model=cnn), (8, 8, 1))
    check_input_shape(spec_with("multiclass", model={**cnn, "image_shape": [8, 8, 1]}), (64,))
    with pytest.raises(SpecError, match=r"^`model`: a cnn takes images .* set `model.image_shape`$"):
        check_input_shape(spec_with("multiclass", model=cnn), (64,))
    with pytest.raises(SpecError, match=r"`model.image_shape` \[4, 4, 1\] holds 16 values"):
        check_input_shape(spec_with("multiclass", model={**cnn, "image_shape": [4, 4, 1]}), (64,))
    check_input_shape(spec_with("multiclass"), (64,))  # an mlp takes any shape (images are flattened)
