"""The spec language: what loads, what is refused (one line naming the field and the value), and the defaults."""

from pathlib import Path

import optuna
import pytest

from fitgap.sweeps.space import grid, make_sampler, suggest, trial_params
from fitgap.sweeps.reading import load_spec
from fitgap.sweeps.spec import SpecError, changed_field, parse_spec
from fitgap.sweeps.vocabulary import DEFAULT_LOSS, HYPERPARAMETERS

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
        spec_with(objective=[{"metric": "loss_gap"}], search={"loss": {"type": "categorical", "choices": ["mse"]}})


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
    assert (defaults["momentum_form"], defaults["initial_accumulator"]) == ("keras", 0.1)  # Keras's, not the course's
    assert (defaults["use_bias"], defaults["shuffle"]) == (True, True)
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


def test_when_must_name_a_searched_or_fixed_dimension():
    with pytest.raises(SpecError, match="neither searched nor fixed"):
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


# ---- hostile input: what validation must refuse at load, in one bounded line ---------------------------------------

DOT = {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
       "decay_rate": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.1},
       "decay_steps": {"type": "int", "low": 1, "high": 9, "step": 2},
       "activation": {"type": "categorical", "choices": ["sigmoid", "tanh", "relu", "leaky_relu"]},
       "regularizer": {"type": "categorical", "choices": ["none", "l1", "l2"]},
       "regularization_weight": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True,
                                 "when": {"regularizer": ["l1", "l2"]}}}


def refused(expected: str, **fields) -> str:
    with pytest.raises(SpecError) as caught:
        spec_with(**fields)
    message = str(caught.value)
    assert expected in message and "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("entry, expected", [
    ({"activation": "elu"}, "`enqueue[0].activation` must be one of ['sigmoid', 'tanh', 'relu', 'leaky_relu'], "
                            "but got 'elu'"),
    ({"learning_rate": 0.9}, "`enqueue[0].learning_rate` must be a number in [0.001, 0.5], but got 0.9"),
    ({"learning_rate": 1e-4}, "but got 0.0001"),
    ({"decay_rate": 0.55}, "must be a number in [0.5, 1.0] on steps of 0.1, but got 0.55"),
    ({"decay_steps": 4}, "must be an integer in [1, 9] on steps of 2, but got 4"),
    ({"decay_steps": 3.0}, "must be an integer, but got 3.0"),
    ({"decay_steps": True}, "but got True"),
    ({"learning_rate": "0.1"}, "must be a float, but got '0.1'"),
    ({"momentum": 0.5}, "only searched names can be enqueued, but got 'momentum'"),
    ({"regularizer": "none", "regularization_weight": 0.01},
     "`enqueue[0].regularization_weight`: regularization_weight exists only when regularizer is one of ['l1', 'l2'], "
     "but enqueue[0].regularizer is 'none'"),
])
def test_an_enqueued_value_must_be_one_its_dimension_takes(entry, expected):
    refused(expected, search=DOT, enqueue=[entry])


def test_enqueued_values_inside_their_dimensions_load():
    spec = spec_with(search=DOT, enqueue=[{"activation": "tanh", "learning_rate": 0.5, "decay_rate": 0.7,
                                           "decay_steps": 5, "regularizer": "l2", "regularization_weight": 0.01},
                                          {"regularization_weight": 0.01}])  # its regularizer is sampled
    assert len(spec.enqueue) == 2


@pytest.mark.parametrize("dim, expected", [
    ({"type": "float", "low": 0.001, "high": float("inf")}, "`search.learning_rate.high`: Input should be a finite"),
    ({"type": "float", "low": 0.001, "high": float("nan")}, "but got nan"),
    ({"type": "float", "low": float("-inf"), "high": 0.5}, "but got -inf"),
    ({"type": "float", "low": 0.0, "high": 0.5, "log": True}, "`low > 0` must hold for log=true"),
    ({"type": "float", "low": -1.0, "high": 0.5, "log": True}, "`low > 0` must hold for log=true"),
    ({"type": "float", "low": 0.1, "high": 0.5, "step": 0.3}, "`high - low` must be a multiple of `step` (e.g. "
                                                             "high=0.4)"),
])
def test_a_dimension_needs_finite_bounds_that_fit_its_scale_and_step(dim, expected):
    refused(expected, search={"learning_rate": dim})


def test_fixed_values_are_finite_and_integers_are_integers():
    refused("`params.learning_rate` must be a finite number, but got inf", params={"learning_rate": float("inf")})
    refused("`params.learning_rate` must be a finite number", params={"learning_rate": 1e308 * 10})
    refused("`params.learning_rate`: 1000000000000000000000000000000000000", params={"learning_rate": 10 ** 400})
    refused("`params.decay_steps` must be an integer, but got 2.0", params={"decay_steps": 2.0})
    refused("`trial_timeout`: Input should be a finite number", trial_timeout=float("inf"))


@pytest.mark.parametrize("fields, expected", [
    ({"trials": True}, "`trials`: Input should be a valid integer, but got True"),
    ({"epochs": "5"}, "`epochs`: Input should be a valid integer, but got '5'"),
    ({"seed": 1.0}, "`seed`"),
    ({"search": {"decay_steps": {"type": "int", "low": True, "high": 5}}}, "`search.decay_steps.low`"),
    ({"search": {"decay_rate": {"type": "float", "low": "0.5", "high": 1.0}}}, "`search.decay_rate.low`"),
    ({"dataset": {"name": "dot", "validation_fraction": "0.2"}}, "`dataset.validation_fraction`"),
    ({"pruner": {"type": "median", "n_startup_trials": True}}, "`pruner.n_startup_trials`"),
])
def test_types_are_strict_a_bool_is_not_an_int_and_a_string_is_not_a_number(fields, expected):
    refused(expected, **fields)


def test_the_study_name_is_bounded_to_work_as_a_file_name_and_an_experiment_name():
    assert spec_with(name="a" * 100).name == "a" * 100
    refused("`name`: String should have at most 100 characters, but got 'aaaa", name="a" * 300)


def test_a_when_value_its_parent_never_takes_is_refused():
    refused("`search.regularization_weight.when.regularizer` lists 'l1_l2', which regularizer never takes (must be "
            "one of ['none', 'l1', 'l2'])",
            search={**DOT, "regularization_weight": {**DOT["regularization_weight"],
                                                     "when": {"regularizer": ["l2", "l1_l2"]}}})
    refused("`search.learning_rate.when.optimizer` lists 'sgd', which optimizer never takes (it is 'adam' in every "
            "trial)", params={"optimizer": "adam"},
            search={"learning_rate": {"type": "float", "low": 0.01, "high": 0.1, "when": {"optimizer": ["sgd"]}}})
    refused("which decay_steps never takes (must be an integer in [1, 9] on steps of 2)",
            search={**DOT, "decay_rate": {**DOT["decay_rate"], "when": {"decay_steps": [4]}}})
    refused("which loss never takes (must be one of ['mse'])",  # asymmetric does not fit a binary task
            search={"loss": {"type": "categorical", "choices": ["mse", "asymmetric"]},
                    "cost": {"type": "float", "low": 1.0, "high": 2.0, "when": {"loss": ["asymmetric"]}}})
    refused("`search.regularization_weight.when.regularizer`: List should have at least 1 item",
            search={**DOT, "regularization_weight": {**DOT["regularization_weight"], "when": {"regularizer": []}}})


def test_a_regularizer_needs_a_weight():
    needs = "needs a `regularization_weight` (its default 0 trains without a penalty)"
    refused(f"`params.regularizer` 'l2' {needs}", params={"regularizer": "l2"})
    refused(f"`search.regularizer.choices` 'l2' {needs}",  # and so does an enqueued l2
            search={"regularizer": {"type": "categorical", "choices": ["none", "l2"]}}, enqueue=[{"regularizer": "l2"}])
    refused(f"`search.regularizer.choices` 'l1' {needs}",
            search={**DOT, "regularization_weight": {**DOT["regularization_weight"], "when": {"regularizer": ["l2"]}}})
    spec_with(params={"regularizer": "l2", "regularization_weight": 0.01})
    spec_with(params={"regularizer": "l2"}, search={"regularization_weight": DOT["regularization_weight"] | {"when": None}})
    spec_with(params={"regularization_weight": 0.01}, search={"regularizer": DOT["regularizer"]})
    spec_with(search=DOT)


def sorted_keys(value):
    """What `yaml.safe_dump` does to a spec by default."""
    return {k: sorted_keys(value[k]) for k in sorted(value)} if isinstance(value, dict) else value


def test_dimensions_may_be_listed_in_any_order_and_are_suggested_parents_first():
    listed = spec_with(search=DOT, enqueue=[{"regularizer": "l2", "regularization_weight": 0.01}])
    resorted = spec_with(**sorted_keys({"search": DOT, "enqueue": [{"regularizer": "l2",
                                                                    "regularization_weight": 0.01}]}))
    assert list(listed.search) == list(DOT)  # already parents first: the order as written
    assert list(resorted.search) == ["activation", "decay_rate", "decay_steps", "learning_rate", "regularizer",
                                     "regularization_weight"]
    assert changed_field(listed.model_dump(mode="json"), resorted.model_dump(mode="json")) is None
    for spec in (listed, resorted):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        orders = set()
        for _ in range(30):
            trial = study.ask()
            sampled = suggest(trial, spec)
            assert ("regularization_weight" in sampled) == (sampled["regularizer"] != "none")
            orders.add(tuple(sampled))
            study.tell(trial, 0.0)
        assert all(list(order) == [n for n in spec.search if n in order] for order in orders)


def test_a_cycle_of_whens_is_refused_naming_it():
    refused("`search`: the `when:` conditions form a cycle, activation -> optimizer -> activation",
            search={"activation": {"type": "categorical", "choices": ["relu", "tanh"], "when": {"optimizer": ["sgd"]}},
                    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"], "when": {"activation": ["relu"]}}})
    refused("a cycle, activation -> activation",
            search={"activation": {"type": "categorical", "choices": ["relu", "tanh"], "when": {"activation": ["relu"]}}})


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_reparses_from_its_stored_dump_to_the_same_spec(path):
    """What `studies.study.stored_spec` does when a worker joins or a study resumes (a JSON round trip through the
    storage, then `parse_spec`), for specs that search depth and width too."""
    from fitgap.studies.study import stored_spec

    spec = load_spec(path)
    study = optuna.create_study(directions=spec.directions)
    study.set_user_attr("fitgap.spec", spec.model_dump(mode="json", exclude={"trials"}))
    study.set_user_attr("fitgap.trials", spec.trials)
    again = stored_spec(study, spec.base_dir)
    assert again == spec and list(again.search) == list(spec.search)
    assert changed_field(study.user_attrs["fitgap.spec"], again.model_dump(mode="json", exclude={"trials"})) is None


def test_the_grid_is_counted_before_it_is_built():
    import time

    from fitgap.sweeps.space import MAX_GRID_POINTS

    huge = spec_with(sampler="grid", search={"decay_rate": {"type": "float", "low": 1.0, "high": 2.0, "step": 1e-9}})
    started = time.perf_counter()
    with pytest.raises(SpecError, match=r"`search`: the grid has 1,000,000,001 points .* more than the 1,000,000"):
        make_sampler(huge, seed=0)
    assert time.perf_counter() - started < 1 and MAX_GRID_POINTS == 1_000_000
    product = spec_with(sampler="grid", search={"decay_steps": {"type": "int", "low": 1, "high": 1001},
                                                "early_stopping": {"type": "int", "low": 0, "high": 1000}})
    with pytest.raises(SpecError, match="1,002,001 points"):
        grid(product)


def write(tmp_path, text: str | bytes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


LAUGHS = "".join(f"{a}: &{a} [{', '.join([f'*{p}' if p else 'lol'] * 9)}]\n"
                 for p, a in zip(["", *"abcdefgh"], "abcdefghi")) + "name: *i\ndataset: {name: dot}\n"


@pytest.mark.parametrize("text, expected", [
    ("name: t\ndataset: {name: dot}\nepochs: 3\nseed: 1\nepochs: 5\n",
     "invalid YAML at line 5, column 1: duplicate key 'epochs' (first at line 3)"),
    ("name: t\ndataset: {name: dot, name: iris}\n", "duplicate key 'name' (first at line 2)"),
    (b"name: t\xff\ndataset: {name: dot}\n", "a spec is UTF-8 text, but byte 8 is 0xff"),
    ("name: t\ndataset: {name: dot}\nparams: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than 32 levels"),
    ("name: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n", "nested deeper than 32 levels"),
    (LAUGHS, "YAML aliases repeat more than 10,000 values"),
    ("name: 2001-13-45\ndataset: {name: dot}\n", "invalid YAML: month must be in 1..12"),
    ("name: t\ndataset: {name: dot}\nepochs: " + "9" * 5000 + "\n", "invalid YAML: Exceeds the limit"),
    ("dataset: {name: dot}\nparams: {junk: '" + "x" * 5_000_000 + "'}\n", "`name`: a required field is missing"),
    ("name: t\ndataset: {name: dot}\nepochs: '" + "x" * 5_000_000 + "'\n", "but got 'xxxxxxxx"),
    ("name: t\ndataset: {name: dot}\nsearch: {" + "k" * 1_000 + ": {type: int, low: 1, high: 2}}\n",
     "`search`: unknown hyperparameter 'kkkk"),
])
def test_hostile_yaml_is_one_short_line(tmp_path, text, expected):
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message and "\n" not in message and len(message) < 700, message[:800]


def test_yaml_anchors_within_bounds_and_yaml_1_2_floats_load(tmp_path):
    spec = load_spec(write(tmp_path, "name: t\ndataset: {name: dot}\nsearch:\n"
                                     "  learning_rate: &rate {type: float, low: 1e-3, high: 5E-1, log: true}\n"
                                     "  leaky_alpha: {<<: *rate, when: {activation: [leaky_relu]}}\n"
                                     "  activation: {type: categorical, choices: [relu, leaky_relu]}\n"))
    assert spec.search["learning_rate"].low == 0.001 and spec.search["learning_rate"].high == 0.5
    assert list(spec.search) == ["learning_rate", "activation", "leaky_alpha"]
