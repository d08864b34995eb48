"""`fitgap report`, `fitgap rerun` and `--save-models`: pure report rules on synthetic results, then one small real
study (TensorFlow executors, SQLite stores) whose report, plots, MLflow artifacts, models and rerun are checked, and
the HTML report rendered by headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from fitgap.studies.api import Rerun, create, launch, report, rerun
from fitgap.studies.stores import Stores
from fitgap.studies.study import open_storage
from fitgap.sweeps.spec import parse_spec
from fitgap.tracking.diagnosis import VERDICTS
from fitgap.tracking.records import EpochRecord, TrialRecord
from fitgap.tracking.report import build_report, to_markdown, write_report
from fitgap.tracking.results import ResultsDB

from conftest import fitgap

CHROMIUM = shutil.which("chromium")  # Debian's package


# ---------------------------------------------------------------- synthetic results (no TensorFlow)


def trial(number, regularizer="none", weight=None, gap=0.1, value=0.5, loss="binary_crossentropy", bce_gap=None,
          values=None, params_total=17):
    """A COMPLETE binary trial whose curves are flat: its gap (val_loss - loss) and bce gap are as given."""
    bce_gap = gap if bce_gap is None else bce_gap
    metrics = {"loss": 0.3, "val_loss": 0.3 + gap, "loss_gap": gap, "bce": 0.3, "val_bce": 0.3 + bce_gap,
               "fit_gap": bce_gap,
               "accuracy": 0.95, "val_accuracy": 0.93, "accuracy_gap": 0.02, "lr": 0.01, "reg_loss": 0.0}
    params = {"regularizer": regularizer, "loss": loss, "activation": "relu", "optimizer": "sgd"}
    if weight is not None:
        params["regularization_weight"] = weight
    return TrialRecord(study="s", number=number, state="COMPLETE", params=params,
                       values=tuple(values) if values else (value,), best_epoch=9,
                       epochs=tuple(EpochRecord(number, i, metrics) for i in range(10)),
                       complexity={"params_total": params_total, "params_trainable": params_total, "macs": 12},
                       seed=number, device="cpu", slot=0, started_at=0.0, finished_at=1.0)


def document(tmp_path, records, spec=None, optuna_study=None):
    with ResultsDB(f"sqlite:///{tmp_path / 'results.db'}") as db:
        for record in records:
            db.write_trial(record)
        return build_report("s", db.trials("s"), lambda n: db.epochs("s", n), spec or {}, optuna_study)


SPEC = {"objective": [{"metric": "val_bce", "direction": "minimize"}], "dataset": {"name": "dot"}}


def answer(text: str) -> list[str]:
    """The report's opening answer, line by line."""
    section = text.split("## The answer")[1].split("\n## ")[0]
    return [line[2:] for line in section.strip().splitlines() if line.startswith("- ")]


def test_the_report_opens_with_the_answer_in_at_most_five_lines(tmp_path):
    records = [trial(i, kind, 0.01 if kind != "none" else None, gap=0.1) for i, kind in
               enumerate(["none", "l1", "l2", "l1_l2"] * 2)]
    text = to_markdown(document(tmp_path, records, SPEC))
    assert text.index("## The answer") < text.index("## The study") < text.index("## The best trial")
    assert 1 < len(answer(text)) <= 5


def test_a_controlled_comparison_gives_the_difference_and_its_interval(tmp_path):
    records = [trial(i, "none", gap=0.10 + 0.01 * i, value=0.4 + 0.01 * (i - 2) ** 2) for i in range(5)]
    records += [trial(5 + i, "l2", 0.015, gap=0.02 + 0.01 * i, value=0.3 + 0.01 * (i - 2) ** 2) for i in range(5)]
    lines = answer(to_markdown(document(tmp_path, records, SPEC)))
    assert lines[0] == "**Controlled**: only the regularizer and its weight vary; 5 seeds per point."
    # Welch: the gaps' sd is 0.0158 on each side, so the difference's se is 0.01 on 8 df (t = 2.306)
    from scipy.stats import ttest_ind

    p_gap = ttest_ind([0.02, 0.03, 0.04, 0.05, 0.06], [0.10, 0.11, 0.12, 0.13, 0.14], equal_var=False).pvalue
    assert lines[1].startswith("L2 at weight 0.015 (5 vs 5 seeds): fit gap 0.12 → 0.04, lower by 0.08 (95 % CI "
                               f"0.0569 to 0.103, p = {p_gap:.2g}); val_bce 0.42 → 0.32, better by 0.1 (95 % CI")


def test_no_direction_is_claimed_for_a_difference_within_its_interval(tmp_path):
    records = [trial(i, "none", gap=g, value=v) for i, (g, v) in enumerate([(0.10, 0.4), (0.14, 0.5), (0.12, 0.3)])]
    records += [trial(3 + i, "l2", 0.01, gap=g, value=v) for i, (g, v) in enumerate([(0.11, 0.5), (0.13, 0.3),
                                                                                     (0.09, 0.4)])]
    [design, line] = answer(to_markdown(document(tmp_path, records, SPEC)))
    assert "no clear difference" in line and "no clear change" in line
    assert not re.search(r"lower|higher|better|costs", line)
    assert "%" not in line.replace("95 %", "")  # no percentages of values that cross zero


def test_an_observational_study_says_so_and_names_the_controlled_follow_up(tmp_path):
    records = [trial(i, "none" if i % 2 else "l2", None if i % 2 else 10 ** -(1 + i % 3), gap=0.1 + 0.01 * i)
               for i in range(8)]
    records = [dataclasses.replace(r, params={**r.params, "learning_rate": 0.01 * (1 + r.number)}) for r in records]
    lines = answer(to_markdown(document(tmp_path, records, SPEC)))
    assert lines[0].startswith("**Observational**: learning_rate varies between trials too")
    assert "`fitgap path s`" in lines[0]
    assert lines[1].startswith("L2 (4 trials, weights 0.001 to 0.1) vs none (4):")


def test_one_seed_per_point_is_never_called_seed_spread(tmp_path):
    records = [trial(0, "none", gap=0.3), trial(1, "l2", 0.01, gap=0.1)]
    lines = answer(to_markdown(document(tmp_path, records, SPEC)))
    assert lines[0] == "**Controlled**: only the regularizer and its weight vary; one seed per point (no seed spread measured)."
    assert "no interval: one observation" in lines[1] and "lower" not in lines[1]


def path_records(base_gap=0.3):
    """A controlled path: none and l2 at three weights, three seeds each (separate trials); the gap falls with the
    weight, and val_accuracy rises up to 1e-3 then drops."""
    records, number = [], 0
    points = [("none", None, base_gap, 0.85), ("l2", 1e-4, 0.25, 0.86), ("l2", 1e-3, 0.1, 0.9),
              ("l2", 1e-2, 0.02, 0.7)]
    for kind, weight, gap, accuracy in points:
        for seed in range(3):
            jitter = 0.005 * (seed - 1)
            records.append(trial(number, kind, weight, gap=gap + jitter, value=accuracy + jitter))
            number += 1
    return records


ACCURACY = {"objective": [{"metric": "val_accuracy", "direction": "maximize"}], "dataset": {"name": "dot"}}


def test_a_controlled_path_names_the_weight_that_best_trades_gap_against_the_objective(tmp_path):
    doc = document(tmp_path, path_records(), ACCURACY)
    text = to_markdown(doc)
    lines = answer(text)
    assert lines[0] == "**Controlled**: only the regularizer and its weight vary; 3 seeds per point."
    assert lines[1].startswith("L2 at weight 0.001, the best trade of 3 weights (3 vs 3 seeds): fit gap 0.3 → 0.1, "
                               "lower by 0.2")
    assert "val_accuracy 0.85 → 0.9, better by 0.05" in lines[1]
    assert "## The regularization path" in text and "L2: the best trade is weight 0.001" in text
    assert {"path_gap.png", "path_objective.png", "path_curves.png"} <= set(doc.images)
    assert "## Regularization\n" not in text  # the observational sections give way to the path


def test_a_path_whose_baseline_does_not_overfit_says_none_helps_and_why(tmp_path):
    records = [r for r in path_records(base_gap=0.02)]
    lines = answer(to_markdown(document(tmp_path, records, ACCURACY)))
    assert lines[1].startswith("L2 at weight 0.01, the lowest fit gap of 3 weights (3 vs 3 seeds): fit gap 0.02 → 0.02")
    assert lines[1].endswith("No weight helps here: the unregularized model hardly overfits here (fit gap 0.02): "
                             "there is little to fix.")


def test_a_trend_is_worded_by_what_it_shows(tmp_path):
    weights_and_gaps = [(1e-4, 0.2), (1e-3, 0.15), (1e-2, 0.1), (1e-1, 0.05), (1e-5, 0.25)]
    records = [trial(i, "l2", w, gap=g) for i, (w, g) in enumerate(weights_and_gaps)]
    records = [dataclasses.replace(r, params={**r.params, "learning_rate": 0.01 * (1 + r.number)}) for r in records]
    text = to_markdown(document(tmp_path, records, SPEC))
    assert "l2: the fit gap falls strongly as log weight grows (Spearman ρ = -1.00, n = 5, p = " in text
    assert "| l2 | [1e-4, 1e-3) | 1 | 0.2 |" in text and "| l2 | [1e-1, 1e0) | 1 | 0.05 |" in text
    from fitgap.tracking.analysis import trend_text

    flat = trend_text(pd.Series([1, 2, 3, 4, 5]), pd.Series([0.2, 0.1, 0.3, 0.15, 0.2]), "log weight", "the gap")
    assert flat.startswith("no clear trend of the gap with log weight (Spearman ρ = +0.10")


def test_the_fit_gap_is_the_same_whatever_the_loss(tmp_path):
    # Each trial's own gap says mse overfits less; on cross-entropy, the fit gap, it is the other way round.
    records = [trial(0, gap=0.5, bce_gap=0.01, loss="binary_crossentropy"), trial(1, gap=0.6, bce_gap=0.02),
               trial(2, gap=0.01, bce_gap=0.3, loss="mse"), trial(3, gap=0.02, bce_gap=0.4, loss="mse")]
    text = to_markdown(document(tmp_path, records, SPEC))
    assert "fit gap at the best epoch (val_bce - bce)" in text
    assert "| binary_crossentropy | 2 | 0.015 |" in text and "| mse | 2 | 0.35 |" in text


def test_the_best_score_carries_its_interval_and_the_trials_it_is_not_told_apart_from(tmp_path):
    records = [dataclasses.replace(trial(i, value=v), val_size=60, test_metrics={"test_accuracy": 0.8})
               for i, v in enumerate([0.95, 0.9, 0.93, 0.6])]
    text = to_markdown(document(tmp_path, records, ACCURACY))
    best = text.split("## The best trial")[1].split("\n## ")[0]
    assert "Trial 0: val_accuracy 0.95" in best
    assert "val_accuracy 0.95, 95 % interval 0.863 to 0.9829 on 60 validation rows: 2 other trials within it" in best
    assert "a small validation set (60 rows)" in best and "test_accuracy 0.8" in best


def test_an_empty_study_gets_a_report_that_says_what_is_missing(tmp_path):
    doc = build_report("s", [], lambda n: [], SPEC)
    text = to_markdown(doc)
    assert "## What is missing" in text and "no COMPLETE trial yet" in text
    assert "parameter importances: no Optuna study was given" in text
    path = write_report(doc, tmp_path / "out", "html")
    assert "What is missing" in path.read_text()


def test_a_multi_objective_report_shows_the_pareto_front_not_a_best_trial(tmp_path):
    spec = {**SPEC, "objective": [{"metric": "val_bce", "direction": "minimize"},
                                  {"metric": "params_total", "direction": "minimize"}]}
    points = [(0.30, 10), (0.20, 50), (0.35, 40), (0.10, 200)]  # (0.35, 40) is beaten by (0.30, 10)
    records = [trial(i, values=v, params_total=v[1]) for i, v in enumerate(points)]
    doc = document(tmp_path, records, spec)
    text = to_markdown(doc)
    assert "## Pareto front" in text and "Best trial per regularizer type" not in text
    assert "3 of 4 complete trials are on the front" in text
    table = text.split("## Pareto front")[1]
    assert re.findall(r"^\| (\d) \| ([\d.]+) \| (\d+) \|", table, re.M) == [("3", "0.1", "200"), ("1", "0.2", "50"),
                                                                          ("0", "0.3", "10")]
    assert "pareto_front.png" in doc.images


def test_importances_keep_conditional_parameters_and_list_those_left_out(tmp_path):
    """PED-ANOVA on a study whose regularization_weight exists only for l2 trials; l1_ratio never sampled."""
    study = optuna.create_study()
    kinds = optuna.distributions.CategoricalDistribution(["none", "l2"])
    weights = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    records = []
    for i in range(12):
        kind = "l2" if i % 3 else "none"
        params, dists = {"regularizer": kind}, {"regularizer": kinds}
        if kind == "l2":
            params["regularization_weight"], dists["regularization_weight"] = 10 ** -(1 + i % 4), weights
        value = 0.2 + 0.05 * (i % 4) if kind == "l2" else 0.6
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
        records.append(trial(i, kind, params.get("regularization_weight"), value=value))
    spec = {**SPEC, "search": {"regularizer": {}, "regularization_weight": {}, "l1_ratio": {}}}
    text = to_markdown(document(tmp_path, records, spec, study))
    rows = dict(re.findall(r"^\| (regularizer|regularization_weight) \| [\d.]+ \| (.+?) \|$", text, re.M))
    assert rows == {"regularizer": "12 of 12", "regularization_weight": "8 of 12 (conditional)"}
    assert "Left out: `l1_ratio` (never sampled in a complete trial)." in text


def test_the_course_l2_study_has_five_single_seed_trials_per_arm():
    """Medians and IQRs per arm need one value per training: enqueued trials, each its own seed, no repeats."""
    spec = yaml.safe_load((Path(__file__).parent.parent / "sweeps/specs/course/dot-l2.yaml").read_text())
    arms = [entry["regularizer"] for entry in spec["enqueue"]]
    assert sorted(arms) == ["l2"] * 5 + ["none"] * 5 and spec["trials"] == len(arms)
    assert spec.get("repeats", 1) == 1 and arms[:2] == ["none", "l2"]  # alternating: a cut-short run stays balanced


def test_the_rerun_comparison_sees_a_difference():
    stored = [{"epoch": 0, "loss": 0.5, "val_loss": 0.6}, {"epoch": 1, "loss": 0.4, "val_loss": 0.5}]
    same = Rerun("s", 0, [1], "COMPLETE", None, "COMPLETE", stored, [dict(e) for e in stored], 1e-5)
    assert same.matches and "curves match" in same.comparison()
    off = Rerun("s", 0, [1], "COMPLETE", None, "COMPLETE", stored, [stored[0], {**stored[1], "val_loss": 0.5001}],
                1e-5)
    assert not off.matches and off.differences()["val_loss"] == pytest.approx(1e-4) and "DIFFER" in off.comparison()
    assert not Rerun("s", 0, [1], "COMPLETE", None, "COMPLETE", stored, stored[:1], 1e-5).matches
    assert not Rerun("s", 0, [1], "PRUNED", "stopped", "COMPLETE", stored, stored, 1e-5).matches


def test_the_report_of_a_created_study_without_trials_and_of_an_unknown_one(workspace, tmp_path):
    spec = tmp_path / "empty.yaml"
    spec.write_text(SMALL_SPEC.replace("name: small", "name: empty"))
    create(spec, workspace=workspace)
    path = report("empty", tmp_path / "out", "md", workspace=workspace)
    assert "no COMPLETE trial yet" in path.read_text()
    result = fitgap("report", "nosuch", "--workspace", str(workspace))
    assert result.returncode == 2 and "unknown study 'nosuch'" in result.stderr and "empty" in result.stderr


# ---------------------------------------------------------------- a small real study


SMALL_SPEC = """\
# Both arms, three L2 weights, two activations: enough for every section of the report.
name: small
dataset: {name: dot, validation_fraction: 0.2}
model: {kind: mlp, hidden: [6]}
epochs: 12
batch_size: 32
objective: [{metric: val_bce, direction: minimize}]
trials: 7
seed: 5
sampler: random
params: {loss: binary_crossentropy, optimizer: adam, learning_rate: 0.05}
search:
  regularizer: {type: categorical, choices: [none, l2]}
  regularization_weight: {type: float, low: 1.0e-4, high: 0.3, log: true, when: {regularizer: [l2]}}
  activation: {type: categorical, choices: [relu, tanh]}
enqueue:
  - {regularizer: none, activation: relu}
  - {regularizer: l2, regularization_weight: 0.0001, activation: relu}
  - {regularizer: none, activation: tanh}
  - {regularizer: l2, regularization_weight: 0.01, activation: tanh}
  - {regularizer: l2, regularization_weight: 0.3, activation: relu}
"""


@pytest.fixture(scope="module")
def small(template_workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    workspace = root / "ws"
    shutil.copytree(template_workspace, workspace)
    spec = root / "small.yaml"
    spec.write_text(SMALL_SPEC)
    summary = launch(spec, workspace=workspace, cpu_slots=1, save_models="best", plots="all")
    stores = Stores.resolve(workspace=workspace)
    return {"root": root, "workspace": workspace, "stores": stores, "summary": summary,
            "client": MlflowClient(tracking_uri=stores.tracking_uri)}


def is_png(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        return image.format == "PNG" and image.width > 100 and image.height > 100


@pytest.mark.tensorflow
def test_a_summary_prints_in_one_short_line_and_the_trials_come_as_one_dataframe(small):
    import fitgap

    summary = small["summary"]
    assert any(record.artifacts for record in summary.finished)  # plots and models: bytes not to be printed
    text = repr(summary)
    assert text.startswith("Summary(study='small': 7 COMPLETE of a budget of 7; best trial ") and len(text) < 200
    assert all("\\x" not in repr(record) and len(repr(record)) < 1500 for record in summary.finished)
    frame = fitgap.trials("small", order_by="number", workspace=small["workspace"])
    assert list(frame["number"]) == list(range(7)) and {"value", "verdict", "learning_rate"} <= set(frame.columns)


@pytest.mark.tensorflow
def test_each_trial_is_diagnosed_in_the_results_and_tagged_with_its_plots_in_mlflow(small):
    assert small["summary"].counts == {"COMPLETE": 7}
    with ResultsDB(small["stores"].results_url) as db:
        rows = db.trials("small")
    assert all(r["verdict"] in VERDICTS and r["executor"] == "fused" for r in rows)  # auto: an mlp fuses
    assert all(r["fit_measure"] == "val_bce - bce" and r["final_fit_gap"] is not None for r in rows)
    assert all(r["val_size"] == 60 and 0.5 < r["val_baseline"] < 0.8 for r in rows)  # the dot data's majority class
    client = small["client"]
    for row in rows:
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.tags["fitgap.verdict"] == row["verdict"]
        assert run.data.tags["fitgap.plots"] == "rendered in the background"
        assert run.data.tags.get("fitgap.overfit_epoch") == (None if row["overfit_epoch"] is None
                                                            else str(row["overfit_epoch"]))
        files = {a.path for a in client.list_artifacts(row["mlflow_run_id"])}
        assert {"learning_curves.png", "boundary.png", "boundary.npz", "complexity.csv"} <= files
        folder = client.download_artifacts(row["mlflow_run_id"], "learning_curves.png", str(small["root"]))
        assert is_png(Path(folder).read_bytes())


@pytest.mark.tensorflow
def test_the_report_has_the_tables_trends_importances_and_valid_plots(small):
    path = report("small", small["root"] / "md", "md", workspace=small["workspace"])
    text = path.read_text()
    assert "| regularizer | weight bin (log) | trials | median fit gap | fit gap IQR | median val_bce | overfit |" in text
    assert re.search(r"\| none \| — \| [1-5] \|", text) and re.search(r"\| l2 \| \[1e-1, 1e0\) \|", text)
    assert re.search(r"^- l2: (the fit gap (falls|rises) \w+ as log weight grows|no clear trend of the fit gap with log "
                     r"weight) \(Spearman ρ = [-+]\d\.\d\d, n = \d", text, re.M)
    assert re.search(r"^- \*\*Observational\*\*: activation varies between trials too", text, re.M)
    assert re.search(r"^- L2 \(\d trials, weights [\d.e-]+ to [\d.e-]+\) vs none \(\d\): fit gap ", text, re.M)
    assert re.search(r"\| regularization_weight \| [\d.]+ \| \d of 7 \(conditional\) \|", text)
    assert "| activation | " in text and "Left out: none" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"gap_vs_weight.png", "objective_vs_weight.png", "curves_best.png", "boundaries_best.png",
            "importances.png", "history.png"} <= set(images)
    assert "complexity_frontier.png" not in images  # one model size: nothing to compare
    assert all(is_png((path.parent / name).read_bytes()) for name in images)
    assert "What is missing" not in text or "decision boundaries" not in text


@pytest.mark.tensorflow
def test_the_report_is_logged_to_the_parent_run(small):
    path = report("small", small["root"] / "logged", "html", workspace=small["workspace"])
    client = small["client"]
    experiment = client.get_experiment_by_name("small")
    [parent] = client.search_runs([experiment.experiment_id], "tags.`fitgap.role` = 'study'")
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report.html", "gap_vs_weight.png", "history.png"} <= logged
    copy = client.download_artifacts(parent.info.run_id, "report/report.html", str(small["root"]))
    assert Path(copy).read_text() == path.read_text()


@pytest.mark.tensorflow
def test_save_models_best_keeps_only_the_best_model_which_loads_with_keras(small):
    import keras
    import numpy as np

    best = small["summary"].best[0]
    folder = small["workspace"] / "models" / "small"
    assert sorted(p.name for p in folder.iterdir()) == [f"trial-{best['number']}.keras"]
    model = keras.models.load_model(folder / f"trial-{best['number']}.keras")
    assert model.predict(np.zeros((3, 2), dtype="float32"), verbose=0).shape == (3, 1)
    client = small["client"]
    assert [a.path for a in client.list_artifacts(best["mlflow_run_id"], "model")] == [
        f"model/trial-{best['number']}.keras"]
    others = [t.user_attrs["fitgap.mlflow_run_id"] for t in optuna.load_study(
        study_name="small", storage=open_storage(small["stores"].storage)).trials if t.number != best["number"]]
    assert all(not client.list_artifacts(run_id, "model") for run_id in others)


@pytest.mark.tensorflow
def test_rerun_from_the_results_database_reproduces_the_stored_curves(small):
    result = rerun("small", 3, workspace=small["workspace"])
    assert result.state == "COMPLETE" and len(result.again) == len(result.stored) == 12
    assert set(result.differences()) >= {"loss", "val_loss", "bce", "val_bce", "accuracy", "val_accuracy", "lr"}
    assert max(result.differences().values()) <= 1e-6, result.comparison()
    assert result.matches and "curves match" in result.comparison()


@pytest.mark.tensorflow
def test_rerun_of_a_trial_with_repeats_retrains_each_repeat_and_matches_their_mean(workspace, tmp_path):
    spec = parse_spec({"name": "twice", "dataset": {"name": "dot"}, "model": {"hidden": [3]}, "epochs": 5,
                       "trials": 1, "repeats": 2, "executor": "keras", "objective": [{"metric": "val_bce"}]})
    launch(spec, workspace=workspace, cpu_slots=1, save_models="none", plots="none")
    result = rerun("twice", 0, workspace=workspace)
    assert len(result.seeds) == 2 and len(result.again) == len(result.stored) == 5
    assert result.matches, result.comparison()


@pytest.mark.tensorflow
def test_rerun_of_a_pruned_trial_stops_where_it_was_pruned_and_matches(workspace):
    spec = parse_spec({"name": "cut", "dataset": {"name": "dot"}, "model": {"hidden": [4]}, "epochs": 8, "trials": 3,
                       "executor": "keras", "objective": [{"metric": "val_accuracy"}],
                       "pruner": {"type": "median", "n_startup_trials": 2, "report_every": 2},
                       "search": {"learning_rate": {"type": "float", "low": 1e-6, "high": 0.5, "log": True}},
                       "enqueue": [{"learning_rate": 0.3}, {"learning_rate": 0.3}, {"learning_rate": 1e-6}]})
    launch(spec, workspace=workspace, cpu_slots=1, save_models="none", plots="none")
    with ResultsDB(Stores.resolve(workspace=workspace).results_url) as results:
        states = {row["number"]: row["state"] for row in results.trials("cut")}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    result = rerun("cut", 2, workspace=workspace)
    assert result.state == "PRUNED" and len(result.again) == len(result.stored) < 8
    assert result.matches, result.comparison()


@pytest.mark.tensorflow
def test_the_html_report_renders_in_headless_chromium_with_all_its_images(small, tmp_path):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: install it with `sudo apt-get install -y chromium` (Debian's package)")
    result = fitgap("report", "small", "--format", "html", "--out", str(tmp_path / "html"),
                    "--workspace", str(small["workspace"]))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "html" / "report.html").read_text()
    sources = re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", page)
    assert len(sources) >= 7 and all(is_png(base64.b64decode(s)) for s in sources)
    # A copy that tells, once loaded, how many of its images the browser decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>addEventListener('load', () => {const i = [...document.images];"
                                             " document.body.dataset.decoded = i.filter(x => x.complete && "
                                             "x.naturalWidth > 0).length + '/' + i.length;});</script></body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-decoded="{len(sources)}/{len(sources)}"' in dom.stdout
    for section in ("The answer", "The best trial", "Regularization", "Verdicts", "Parameter importances",
                    "Optimization history", "Best trial per regularizer type"):
        assert f">{section}</h2>" in dom.stdout.replace("&amp;", "&")


MULTI_SPEC = """\
# Validation loss against the course's space complexity.
name: multi
dataset: {name: dot, validation_fraction: 0.2}
model: {kind: mlp}
epochs: 5
batch_size: 32
objective: [{metric: val_bce, direction: minimize}, {metric: params_total, direction: minimize}]
trials: 5
seed: 1
sampler: nsgaii
params: {loss: binary_crossentropy, optimizer: adam, learning_rate: 0.05, depth: 1, regularization_weight: 0.01}
search:
  width: {type: int, low: 1, high: 32, log: true}
  regularizer: {type: categorical, choices: [none, l2]}
"""


@pytest.mark.tensorflow
def test_a_multi_objective_study_reports_its_pareto_front_and_keeps_its_models(workspace, tmp_path):
    spec = tmp_path / "multi.yaml"
    spec.write_text(MULTI_SPEC)
    summary = launch(spec, workspace=workspace, cpu_slots=1)
    front = sorted(t["number"] for t in summary.best)
    text = report("multi", tmp_path / "out", "md", workspace=workspace).read_text()
    assert "## Pareto front" in text and "Best trial per regularizer type" not in text
    table = text.split("## Pareto front")[1].split("##")[0]
    assert sorted(int(n) for n in re.findall(r"^\| (\d+) \| ", table, re.M)) == front
    assert sorted(p.name for p in (workspace / "models" / "multi").iterdir()) == [f"trial-{n}.keras" for n in front]
    stores = Stores.resolve(workspace=workspace)  # and with `--plots best`, each Pareto-optimal trial has its plots
    runs = {r["number"]: r["mlflow_run_id"] for r in ResultsDB(stores.results_url).trials("multi")}
    client = MlflowClient(tracking_uri=stores.tracking_uri)
    assert all("learning_curves.png" in {a.path for a in client.list_artifacts(runs[n])} for n in front)


def test_a_running_trial_is_counted_by_its_state_and_left_out_of_the_tables(tmp_path):
    from fitgap.tracking.records import LiveRecord

    with ResultsDB(f"sqlite:///{tmp_path / 'results.db'}") as db:
        for record in (trial(0, gap=0.1), trial(1, gap=0.2)):
            db.write_trial(record)
        running = trial(2, "l2", 0.01, gap=0.05)  # its epochs so far, written live
        db.write_running(LiveRecord("s", 2, "run", running.params, running.epochs[:3], 2, "cpu", 0, 0.0, 0.5,
                                    "keras"))
        text = to_markdown(build_report("s", db.trials("s"), lambda n: db.epochs("s", n), SPEC))
    assert "Study **s**: 2 COMPLETE, 1 RUNNING." in text
    assert "this study has only none" in text and "| l2 |" not in text  # only COMPLETE trials are compared
