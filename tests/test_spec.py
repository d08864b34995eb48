"""The spec language: what loads, what is refused (one line naming the field and the value), and the defaults."""

from pathlib import Path

import optuna
import pytest

from sweeps.space import grid, make_sampler, suggest, trial_params
from sweeps.spec import SpecError, changed_field, load_spec, parse_spec
from sweeps.vocabulary import DEFAULT_LOSS, HYPERPARAMETERS

SPECS = Path(__file__).parent.parent / "sweeps" / "specs"
BASE = {"name": "t", "dataset": {"name": "dot"}}


def spec_with(**fields):
    return parse_spec({**BASE, **fields})


def test_shipped_dot_spec_loads_with_the_issue_search_space():
    spec = load_spec(SPECS / "dot.yaml")
    assert spec.name == "dot-regularization"
    assert set(spec.search) == {"learning_rate", "decay_rate", "decay_steps", "activation", "loss", "regularizer",
                                "regularization_weight"}
    assert spec.directions == ["maximize"] and spec.metrics == ["val_accuracy"]
    assert spec.search["learning_rate"].log is True


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"bogus": 1}, "`bogus`: unknown key"),
        ({"epochs": 0}, "`epochs`"),
        ({"trials": -1}, "`trials`"),
        ({"epochs": "many"}, "'many'"),
        ({"sampler": "bayes"}, "'bayes'"),
        ({"dataset": {"name": "mnist2"}}, "'mnist2'"),
        ({"search": {"learning_rate": {"type": "float", "low": 0.5, "high": 0.1}}}, "low=0.5"),
        ({"search": {"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "log=true"),
        ({"search": {"activation": {"type": "categorical", "choices": ["relu", "swishy"]}}}, "'swishy'"),
        ({"search": {"loss": {"type": "categorical", "choices": ["mse", "hinge"]}}}, "'hinge'"),
        ({"search": {"regularizer": {"type": "categorical", "choices": ["l3"]}}}, "'l3'"),
        ({"search": {"learning_rat": {"type": "float", "low": 0.1, "high": 0.2}}}, "learning_rat"),
        ({"search": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.2, "lgo": True}}}, "lgo"),
        ({"params": {"activation": "swishy"}}, "'swishy'"),
        ({"params": {"learning_rate": -1.0}}, "-1.0"),
        (
            {
                "search": {"loss": {"type": "categorical", "choices": ["mse", "binary_crossentropy"]}},
                "objective": [{"metric": "val_loss", "direction": "minimize"}],
            },
            "val_accuracy",
        ),
        ({"objective": [{"metric": "val_f1"}]}, "'val_f1'"),
        ({"enqueue": [{"learning_rate": 0.1}]}, "enqueue[0].learning_rate"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_field_and_value(fields, expected):
    with pytest.raises(SpecError) as caught:
        spec_with(**fields)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_loss_dependent_objective_is_rejected_only_when_the_loss_is_searched():
    spec = spec_with(objective=[{"metric": "val_loss"}])  # a fixed loss: fine
    assert spec.directions == ["minimize"]
    with pytest.raises(SpecError, match="loss-independent metric such as val_bce or val_accuracy"):
        spec_with(objective=[{"metric": "gap"}], search={"loss": {"type": "categorical", "choices": ["mse"]}})


def test_yaml_is_loaded_safely(tmp_path):
    spec = tmp_path / "evil.yaml"
    spec.write_text("name: !!python/object/apply:os.system ['echo pwned']\ndataset: {name: dot}\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(spec)


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="line 2"):
        load_spec(bad)


def test_defaults_table():
    """The README's defaults table, pinned."""
    defaults = {name: hp.default for name, hp in HYPERPARAMETERS.items()}
    assert defaults["optimizer"] == "sgd"
    assert defaults["leaky_alpha"] == 0.2
    assert defaults["decay_rate"] == 1.0 and defaults["staircase"] is False
    assert defaults["regularizer"] == "none"
    assert defaults["activation"] == "relu"
    assert defaults["loss"] == "binary_crossentropy"
    assert defaults["decay_unit"] == "epoch" and defaults["initializer"] == "he_normal"
    assert (defaults["cost"], defaults["profit"]) == (1.0, 99.0)  # the course's yogurt
    assert (defaults["regularization_weight"], defaults["l1_ratio"], defaults["dropout"]) == (0.0, 0.5, 0.0)
    assert (defaults["momentum"], defaults["rho"], defaults["beta_1"], defaults["beta_2"]) == (0.9, 0.9, 0.9, 0.999)
    assert (defaults["standardize"], defaults["early_stopping"]) == (False, 0)
    assert (defaults["depth"], defaults["width"]) == (1, 11)  # the course's one hidden layer of 11
    assert DEFAULT_LOSS == {"binary": "binary_crossentropy", "multiclass": "softmax_cross_entropy",
                            "regression": "mse"}
    spec = parse_spec(BASE)
    assert (spec.epochs, spec.batch_size, spec.model.hidden, spec.sampler) == (100, 32, [11], "tpe")
    assert (spec.model.kind, spec.repeats) == ("mlp", 1)
    assert spec.dataset.validation_fraction == 0.2
    assert spec.metrics == ["val_loss"] and spec.directions == ["minimize"]
    assert spec_with(objective=[{"metric": "val_accuracy"}]).directions == ["maximize"]


def test_params_are_defaults_then_fixed_then_sampled_and_conditional_ones_vanish():
    spec = spec_with(
        params={"activation": "tanh"},
        search={
            "regularizer": {"type": "categorical", "choices": ["none", "l2"]},
            "regularization_weight": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True,
                                      "when": {"regularizer": ["l2"]}},
        },
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = trial_params(spec, suggest(trial, spec))
        assert params["activation"] == "tanh" and params["optimizer"] == "sgd" and params["epochs"] == 100
        assert ("regularization_weight" in params) == (params["regularizer"] == "l2")
        assert ("regularization_weight" in trial.params) == (params["regularizer"] == "l2")
        seen.add(params["regularizer"])
        study.tell(trial, 0.0)
    assert seen == {"none", "l2"}


def test_when_must_name_an_earlier_dimension():
    with pytest.raises(SpecError, match="not searched or fixed before"):
        spec_with(search={"regularization_weight": {"type": "float", "low": 0.1, "high": 0.2,
                                                    "when": {"regularizer": ["l2"]}}})


def test_grid_sampler_needs_steps_and_enumerates_them():
    spec = spec_with(sampler="grid", search={"decay_steps": {"type": "int", "low": 1, "high": 3},
                                             "activation": {"type": "categorical", "choices": ["relu", "tanh"]}})
    assert grid(spec) == {"decay_steps": [1, 2, 3], "activation": ["relu", "tanh"]}
    bad = spec_with(sampler="grid", search={"learning_rate": {"type": "float", "low": 0.1, "high": 0.2}})
    with pytest.raises(SpecError, match="`search.learning_rate.step`"):
        make_sampler(bad, seed=0)


def test_changed_field_names_the_first_difference():
    a = spec_with(epochs=10).model_dump(mode="json")
    b = spec_with(epochs=20).model_dump(mode="json")
    assert changed_field(a, b) == ("epochs", 10, 20)
    assert changed_field(a, a) is None
    c = spec_with(epochs=10, model={"hidden": [4]}).model_dump(mode="json")
    assert changed_field(a, c) == ("model.hidden", [11], [4])
