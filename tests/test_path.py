"""`fitgap path`: a controlled regularization path from one trial — its spec, bad input, and a real run end to end."""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from fitgap.studies.api import create
from fitgap.studies.cli import main
from fitgap.studies.path import log_grid, path_spec
from fitgap.studies.stores import Stores
from fitgap.studies.study import open_storage, stored_spec
from fitgap.sweeps.space import trial_params
from fitgap.sweeps.spec import changed_field, parse_spec
from fitgap.tracking.results import ResultsDB

from conftest import fitgap, snapshot

PARENT = """\
name: par
dataset: {name: dot}
epochs: 20
objective: [{metric: val_accuracy}]
trials: 3
seed: 3
params: {activation: tanh}
search:
  learning_rate: {type: float, low: 0.01, high: 0.3, log: true}
  hidden: {type: categorical, choices: [[4], [3, 3]]}
  regularizer: {type: categorical, choices: [none, l2]}
  regularization_weight: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, when: {regularizer: [l2]}}
"""
QUICK = ("--plots", "none", "--save-models", "none")  # seconds saved; the report says which plots it lacks


def run(*args):
    return CliRunner().invoke(main, list(args))


# ---------------------------------------------------------------- the spec


def test_weights_are_a_log_grid_with_both_ends():
    weights = log_grid("1e-5:1e-1:9")
    assert len(weights) == 9 and weights[0] == 1e-5 and weights[-1] == 1e-1
    assert all(b / a == pytest.approx(math.sqrt(10)) for a, b in zip(weights, weights[1:]))
    assert log_grid("0.01:1:1") == [0.01]


def test_the_path_fixes_what_the_trial_trained_with_and_varies_only_the_regularization():
    parent = parse_spec({
        "name": "mix", "dataset": {"name": "dot"}, "objective": [{"metric": "val_accuracy"}],
        "pruner": {"type": "median"}, "enqueue": [{"optimizer": "sgdm"}],
        "params": {"momentum": 0.5, "dropout": 0.1, "l1_ratio": 0.2},
        "search": {"optimizer": {"type": "categorical", "choices": ["sgd", "sgdm"]},
                   "hidden": {"type": "categorical", "choices": [[4], [3, 3]]},
                   "epochs": {"type": "int", "low": 5, "high": 9},
                   "regularizer": {"type": "categorical", "choices": ["none", "l1_l2"]},
                   "regularization_weight": {"type": "float", "low": 1e-4, "high": 1e-2,
                                             "when": {"regularizer": ["l1_l2"]}}}})
    dists = {"optimizer": optuna.distributions.CategoricalDistribution(["sgd", "sgdm"]),
             "hidden": optuna.distributions.CategoricalDistribution(["[4]", "[3, 3]"]),
             "epochs": optuna.distributions.IntDistribution(5, 9),
             "regularizer": optuna.distributions.CategoricalDistribution(["none", "l1_l2"]),
             "regularization_weight": optuna.distributions.FloatDistribution(1e-4, 1e-2)}
    trial = optuna.trial.create_trial(params={"optimizer": "sgd", "hidden": "[3, 3]", "epochs": 7,
                                              "regularizer": "l1_l2", "regularization_weight": 0.003},
                                      distributions=dists, value=0.9)
    trial.number = 4
    spec = path_spec(parent, trial, ["l1", "l1_l2"], [1e-4, 1e-2], 3)

    assert spec.name == "mix-path-4" and spec.trials == 5 and spec.repeats == 3 and spec.pruner is None
    # momentum is fixed in the parent but did not exist in this sgd trial; the regularization is the path's
    assert spec.params == {"optimizer": "sgd", "dropout": 0.1}
    assert spec.epochs == 7 and spec.model.hidden == [3, 3]
    assert spec.enqueue == [{"regularizer": "none"}, {"regularizer": "l1", "regularization_weight": 1e-4},
                            {"regularizer": "l1", "regularization_weight": 1e-2},
                            {"regularizer": "l1_l2", "regularization_weight": 1e-4},
                            {"regularizer": "l1_l2", "regularization_weight": 1e-2}]
    trained = trial_params(spec, spec.enqueue[3])
    assert trained["l1_ratio"] == 0.5 and trained["hidden"] == [3, 3] and "momentum" not in trained


# ---------------------------------------------------------------- bad input


def test_a_multi_objective_study_needs_a_trial_and_an_empty_one_has_none_to_start_from(workspace):
    spec = {"name": "two", "dataset": {"name": "dot"},
            "objective": [{"metric": "val_accuracy"}, {"metric": "params_total"}],
            "search": {"learning_rate": {"type": "float", "low": 0.01, "high": 0.1}}}
    create(spec, workspace=workspace)
    create({**spec, "name": "empty", "objective": [{"metric": "val_accuracy"}]}, workspace=workspace)
    before = snapshot(workspace)
    for study, expected in (("two", "`--trial`: study 'two' has 2 objectives"),
                            ("empty", "`--trial`: study 'empty' has no COMPLETE trial")):
        result = run("path", study, "--workspace", str(workspace))
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"fitgap: error: {expected}"), lines
    assert snapshot(workspace) == before


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def traced(template_workspace, tmp_path_factory):
    """A 3-trial parent on the course's 2-D points, one failed trial added, then its path (2 weights, 2 repeats) and,
    at the same time in a workspace of its own, the same path written by hand: its generated spec as YAML."""
    root = tmp_path_factory.mktemp("path")
    workspace, by_hand = root / "ws", root / "by-hand"
    for folder in (workspace, by_hand):
        shutil.copytree(template_workspace, folder)
    (root / "par.yaml").write_text(PARENT)
    launched = fitgap("launch", str(root / "par.yaml"), "--workspace", str(workspace), *QUICK)
    assert launched.returncode == 0, launched.stderr
    stores = Stores.resolve(workspace=workspace)
    parent = optuna.load_study(study_name="par", storage=open_storage(stores.storage))
    parent.tell(parent.ask(), state=optuna.trial.TrialState.FAIL)  # trial 3: no path starts from it
    best = max(parent.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: (t.value, -t.number))
    spec = path_spec(stored_spec(parent, root), best, ["l1", "l2"], log_grid("1e-3:1e-1:2"), 2)
    (root / "path.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    with ThreadPoolExecutor() as pool:  # both at once: each process keeps about one core busy
        launch = pool.submit(fitgap, "launch", str(root / "path.yaml"), "--workspace", str(by_hand), *QUICK)
        traced = fitgap("path", "par", "--weights", "1e-3:1e-1:2", "--repeats", "2", "--workspace", str(workspace),
                        *QUICK)
    return {"workspace": workspace, "stores": stores, "best": best, "result": traced, "spec": spec,
            "name": f"par-path-{best.number}", "by_hand": launch.result(),
            "by_hand_stores": Stores.resolve(workspace=by_hand)}


def test_the_path_trains_the_baseline_once_and_each_regularizer_at_each_weight_with_the_trials_settings(traced):
    assert traced["result"].returncode == 0, traced["result"].stderr
    best, name = traced["best"], traced["name"]
    study = optuna.load_study(study_name=name, storage=open_storage(traced["stores"].storage))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert [(t.params["regularizer"], t.params.get("regularization_weight")) for t in trials] == [
        ("none", None), ("l1", 1e-3), ("l1", 1e-1), ("l2", 1e-3), ("l2", 1e-1)]
    assert study.user_attrs["fitgap.trials"] == 5
    rows = ResultsDB(traced["stores"].results_url).trials(name)
    assert len(rows) == 5
    for row in rows:
        assert row["learning_rate"] == best.params["learning_rate"]
        assert json.loads(row["hidden"]) == json.loads(best.params["hidden"])  # both JSON: a list choice
        assert row["activation"] == "tanh" and row["epochs"] == 20
        assert row["repeats"] == 2 and row["executor"] == "fused", row["executor_reason"]


def test_the_path_is_linked_to_its_trial_in_optuna_mlflow_and_the_results_database(traced):
    best, name, stores = traced["best"], traced["name"], traced["stores"]
    study = optuna.load_study(study_name=name, storage=open_storage(stores.storage))
    assert study.user_attrs["fitgap.parent"] == {"study": "par", "trial": best.number}
    client = MlflowClient(stores.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.`fitgap.role` = 'study'")[0]
    assert run.data.tags["fitgap.parent_study"] == "par"
    assert run.data.tags["fitgap.parent_trial"] == str(best.number)
    assert run.data.tags["fitgap.parent_run_id"] == best.user_attrs["fitgap.mlflow_run_id"]
    link = ResultsDB(stores.results_url).parent_of(name)
    assert (link["parent_study"], link["parent_trial"], link["kind"]) == ("par", best.number, "path")


def test_the_path_writes_its_report_and_prints_its_answer_and_where_it_is(traced):
    lines = traced["result"].stdout.strip().splitlines()
    assert any(line.startswith("answer: Controlled") for line in lines), lines  # only the regularization varies
    assert lines[-1].startswith(f"report of {traced['name']}: ")
    report = lines[-1].split(": ", 1)[1]
    assert report.endswith("report.md") and traced["name"] in open(report).read()


@pytest.mark.parametrize("args, expected", [
    (["nosuch"], "unknown study 'nosuch'"),
    (["par", "--trial", "99"], "`--trial` 99: study 'par' has no such trial"),
    (["par", "--trial", "3"], "`--trial` 3: trial 3 of study 'par' is FAIL"),
    (["par", "--regularizers", "l1,l3"], "`--regularizers` 'l1,l3'"),
    (["par", "--regularizers", "none"], "`--regularizers` 'none'"),
    (["par", "--regularizers", "l2,l2"], "`--regularizers` 'l2,l2'"),
    (["par", "--weights", "1e-5:1e-1"], "`--weights` '1e-5:1e-1'"),
    (["par", "--weights", "0:1e-1:3"], "`--weights` '0:1e-1:3'"),
    (["par", "--weights", "1e-1:1e-5:3"], "`--weights` '1e-1:1e-5:3'"),
    (["par", "--weights", "1e-5:1e-1:0"], "`--weights` '1e-5:1e-1:0'"),
    (["par", "--weights", "1e-5:inf:3"], "`--weights` '1e-5:inf:3'"),
    (["par", "--weights", "1e-5:1e-1:2.5"], "`--weights` '1e-5:1e-1:2.5'"),
    (["par", "--repeats", "0"], "'--repeats': 0"),
    (["par", "--name", "par"], "`--name` 'par': a study of that name exists with another spec"),
])
def test_bad_input_is_one_line_naming_the_option_exit_2_and_nothing_written(traced, args, expected):
    before = snapshot(traced["workspace"])
    result = run("path", *args, "--workspace", str(traced["workspace"]))
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr
    assert snapshot(traced["workspace"]) == before


def test_the_path_spec_as_yaml_launches_the_same_trials(traced):
    """The same path written by hand: the generated spec as a YAML file, launched in a workspace of its own."""
    assert traced["by_hand"].returncode == 0, traced["by_hand"].stderr
    path = optuna.load_study(study_name=traced["name"], storage=open_storage(traced["stores"].storage))
    assert changed_field(path.user_attrs["fitgap.spec"], traced["spec"].model_dump(mode="json", exclude={"trials"})) \
        is None
    by_hand = optuna.load_study(study_name=traced["name"], storage=open_storage(traced["by_hand_stores"].storage))
    assert [t.params for t in by_hand.get_trials()] == [t.params for t in path.get_trials()]
    assert [t.state.name for t in by_hand.get_trials()] == ["COMPLETE"] * 5
