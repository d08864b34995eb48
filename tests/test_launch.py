"""The whole path with real parts: a spec, a real `fitgap launch` process, TensorFlow executors, SQLite stores."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from fitgap.studies.stores import Stores
from fitgap.studies.study import open_storage
from fitgap.tracking.results import ResultsDB

from conftest import fitgap, journal_storage, snapshot

CHROMIUM = shutil.which("chromium")  # Debian's package (`make chromium`)

pytestmark = pytest.mark.tensorflow

SPEC = """\
name: e2e
dataset: {name: dot, validation_fraction: 0.2}
model: {kind: mlp, hidden: [4]}
epochs: 4
batch_size: 32
objective: [{metric: val_accuracy, direction: maximize}]
trials: 3
seed: 7
params: {activation: tanh, loss: binary_crossentropy, regularizer: l2, regularization_weight: 0.001}
search:
  learning_rate: {type: float, low: 1.0e-3, high: 0.3, log: true}
"""


@pytest.fixture(scope="module")
def launched(template_workspace, tmp_path_factory):
    """One 3-trial launch, then a resume to 5: the tests below read what they left in the stores."""
    root = tmp_path_factory.mktemp("e2e")
    workspace = root / "ws"
    shutil.copytree(template_workspace, workspace)
    spec = root / "e2e.yaml"
    spec.write_text(SPEC)
    first = fitgap("launch", str(spec), "--workspace", str(workspace))
    assert first.returncode == 0, first.stderr
    sidecars = sorted(p.name for p in workspace.glob("*.db-*"))  # before this process opens the stores
    stores = Stores.resolve(workspace=workspace)
    study = optuna.load_study(study_name="e2e", storage=journal_storage(workspace))  # as a user opens it
    first_trials = study.get_trials()
    first_results = ResultsDB(stores.results_url).trials("e2e")
    return {"root": root, "workspace": workspace, "spec": spec, "stores": stores, "first": first,
            "first_trials": first_trials, "first_results": first_results, "sidecars": sidecars}


def test_a_launch_in_a_log_says_what_it_starts_then_one_line_per_trial_with_the_objective_and_the_best(launched):
    lines = launched["first"].stderr.strip().splitlines()
    assert lines[0] == "study e2e: 0/3 trials done; starting 1 executor (importing TensorFlow)…", lines
    trials = [line for line in lines if " trial " in line]
    assert len(trials) == 3 and all(" COMPLETE val_accuracy=" in line and "best val_accuracy=" in line
                                    for line in trials), lines
    best = max(launched["first_trials"], key=lambda t: (t.value, -t.number))
    assert trials[-1].endswith(f"best val_accuracy={best.value:.4g} (trial {best.number})"), trials[-1]


def test_a_launch_on_a_terminal_shows_a_live_bar_with_the_best_elapsed_time_and_eta(template_workspace, tmp_path):
    import pty
    import select

    shutil.copytree(template_workspace, tmp_path / "ws")
    (tmp_path / "spec.yaml").write_text(SPEC.replace("name: e2e", "name: tty").replace("trials: 3", "trials: 2"))
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITGAP_", "MLFLOW_"))} | {"COLUMNS": "160"}
    launch = subprocess.Popen([sys.executable, "-m", "fitgap.studies.cli", "launch", str(tmp_path / "spec.yaml"),
                               "--workspace", str(tmp_path / "ws")], stdin=follower, stdout=follower,
                              stderr=follower, env=env)
    os.close(follower)
    screen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the process closed the terminal
            chunk = b""
        if not chunk:
            break
        screen += chunk
    assert launch.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert "starting executors…" in text and "ETA" in text and "2/2" in text, text[-3000:]
    assert "best val_accuracy=" in text and "last: trial 1 COMPLETE val_accuracy=" in text, text[-3000:]


def test_three_trial_launch_gives_three_complete_optuna_trials(launched):
    study = optuna.load_study(study_name="e2e", storage=open_storage(launched["stores"].storage))
    assert study.metric_names == ["val_accuracy"]  # what optuna-dashboard shows instead of "Objective 0"
    trials = launched["first_trials"]
    rows = {row["number"]: row for row in launched["first_results"]}
    for trial in trials:  # and what it shows of each trial: the diagnosis, as the results database has it
        diagnosis = trial.user_attrs["fitgap.diagnosis"]
        assert diagnosis["verdict"] == rows[trial.number]["verdict"]
        assert diagnosis["best_epoch"] == rows[trial.number]["best_epoch"]
        assert diagnosis["best_fit_gap"] == pytest.approx(rows[trial.number]["best_fit_gap"])
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(0.0 <= t.value <= 1.0 for t in trials)
    assert len({t.user_attrs["fitgap.seed"] for t in trials}) == 3
    assert "best: trial" in launched["first"].stdout and "3 COMPLETE" in launched["first"].stdout


def test_mlflow_runs_in_wal_mode_and_a_finished_launch_leaves_no_sidecar_files(launched):
    """WAL is switched on once the stores exist (`fitgap/sqlite.py`); results.db keeps the rollback journal, which
    `fitgap query`'s read-only connections need; Optuna's study is a journal file, not a database."""
    assert _journal_modes(launched["workspace"]) == {"mlflow.db": "wal", "results.db": "delete"}
    assert (launched["workspace"] / "optuna.journal").stat().st_size > 0
    assert launched["sidecars"] == []  # -wal and -shm go with the last connection


def test_fitgap_sqlite_journal_delete_puts_back_the_rollback_journal(tmp_path, monkeypatch):
    from fitgap import sqlite

    path = tmp_path / "store.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").connection.close()
    monkeypatch.setenv("FITGAP_SQLITE_JOURNAL", "delete")
    sqlite.use_wal(path, None, tmp_path / "missing.db")  # None and a missing file are skipped, never created
    assert _journal_modes(tmp_path) == {"store.db": "delete"}
    monkeypatch.delenv("FITGAP_SQLITE_JOURNAL")
    sqlite.use_wal(path)
    assert _journal_modes(tmp_path) == {"store.db": "wal"}


def test_the_launch_refuses_a_wrong_fitgap_sqlite_journal_before_writing(workspace):
    before = snapshot(workspace)
    result = fitgap("launch", "sweeps/specs/dot.yaml", "--workspace", str(workspace),
                    env={"FITGAP_SQLITE_JOURNAL": "WAL2"})
    assert (result.returncode, result.stderr) == (2, "fitgap: error: FITGAP_SQLITE_JOURNAL must be one of ['wal', "
                                                     "'delete'], but got 'WAL2'\n")
    assert snapshot(workspace) == before


def _journal_modes(folder: Path) -> dict[str, str]:
    modes = {}
    for path in sorted(folder.glob("*.db")):
        with contextlib.closing(sqlite3.connect(path)) as db:
            modes[path.name] = db.execute("PRAGMA journal_mode").fetchone()[0]
    return modes


def test_optuna_dashboard_shows_the_objectives_names_and_each_trials_diagnosis(launched):
    """Through optuna-dashboard's own API (its WSGI app on the study's storage), as its pages read it."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    app = wsgi(str(launched["workspace"] / "optuna.journal"))  # as `optuna-dashboard PATH` opens it

    def get(path):
        environ = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        return json.loads(b"".join(app(environ, lambda *args: None)))

    study_id = next(s["study_id"] for s in get("/api/studies")["study_summaries"] if s["study_name"] == "e2e")
    study = get(f"/api/studies/{study_id}")
    assert study["objective_names"] == ["val_accuracy"]
    assert sum(trial["state"] == "Complete" for trial in study["trials"]) >= 3
    for trial in study["trials"]:
        if trial["state"] == "Complete":
            attrs = {attr["key"]: attr["value"] for attr in trial["user_attrs"]}
            assert "fitgap.mlflow_run_id" in attrs
            assert {"verdict", "best_epoch", "best_fit_gap"} <= json.loads(attrs["fitgap.diagnosis"]).keys()


def test_mlflow_has_a_parent_run_and_nested_trial_runs_with_curves(launched):
    first = {t.user_attrs["fitgap.mlflow_run_id"]: t for t in launched["first_trials"]}
    client = MlflowClient(tracking_uri=launched["stores"].tracking_uri)
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location.startswith(launched["workspace"].as_uri())
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("fitgap.role") == "study"]
    assert len(parents) == 1
    assert parents[0].data.tags["fitgap.dataset_hash"]
    assert "tensorflow" in " ".join(parents[0].data.tags)
    # The study's run shows the fixed params and, once a launch closed it, the summary: its chart view has something
    assert parents[0].data.params["activation"] == "tanh" and parents[0].data.params["regularizer"] == "l2"
    assert parents[0].data.metrics["trials_complete"] >= 3 and 0 <= parents[0].data.metrics["best_val_accuracy"] <= 1
    for run_id, trial in first.items():
        run = client.get_run(run_id)
        assert run.info.run_name == f"t{trial.number:03d} lr={trial.params['learning_rate']:.2g}"
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)  # what Optuna was told
        last = max(client.get_metric_history(run_id, "val_accuracy"), key=lambda m: m.step)
        assert run.data.metrics["final_val_accuracy"] == pytest.approx(last.value)
        assert "objective_0" not in run.data.metrics and "best_fit_gap" in run.data.metrics
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
        assert float(run.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert run.data.params["activation"] == "tanh"
        assert int(run.data.params["params_total"]) == 2 * 4 + 4 + 4 + 1
        assert run.data.metrics["macs"] == 2 * 4 + 4
        for metric in ("loss", "val_loss", "bce", "val_bce", "accuracy", "val_accuracy", "loss_gap", "fit_gap", "accuracy_gap",
                       "reg_loss", "lr"):
            history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
            assert [m.step for m in history] == [0, 1, 2, 3], metric
            assert [m.timestamp for m in history] == sorted(m.timestamp for m in history)  # when each epoch ended


def test_results_database_has_one_row_per_trial_with_its_epochs(launched):
    rows = launched["first_results"]
    assert [r["number"] for r in rows] == [0, 1, 2]
    results = ResultsDB(launched["stores"].results_url)
    for row, trial in zip(rows, launched["first_trials"]):
        assert row["state"] == "COMPLETE"
        assert row["value"] == pytest.approx(trial.value)
        assert row["learning_rate"] == pytest.approx(trial.params["learning_rate"])
        assert row["regularizer"] == "l2" and row["params_total"] == 17 and row["macs"] == 12
        epochs = results.epochs("e2e", row["number"])
        assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
        assert row["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs) == trial.value
        assert all(e["reg_loss"] > 0 for e in epochs)  # measured apart from the data loss
        ended = [e["ended_at"] for e in epochs]  # stamped by the trial core as each epoch ended
        assert ended == sorted(ended) and row["started_at"] <= ended[0] <= ended[-1] <= row["finished_at"]
        assert row["duration_s"] == pytest.approx(row["finished_at"] - row["started_at"]) and row["wait_s"] >= 0
        assert results.params("e2e", row["number"])["regularization_weight"] == 0.001
        # auto's choice, and the executor's XLA measurement, made in this batch (which way it goes depends on
        # the machine)
        assert row["executor"] == "fused" and re.fullmatch(
            r"auto: fused, up to \d+ per batch; (no XLA|XLA from its epoch 2) \(this trial measured: (no )?XLA: "
            r"an epoch "
            r"(took .* ms with, .* ms without|takes .* ms without)\)", row["executor_reason"]), row["executor_reason"]


def test_resume_runs_to_the_new_budget_without_replaying_suggestions(launched):
    resumed = fitgap("launch", str(launched["spec"]), "--workspace", str(launched["workspace"]), "--trials", "5")
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="e2e", storage=open_storage(launched["stores"].storage))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    rates = [t.params["learning_rate"] for t in trials]
    assert len(set(rates)) == 5, rates  # a replayed sampler would repeat the first launch's suggestions
    assert study.user_attrs["fitgap.trials"] == 5
    assert len(ResultsDB(launched["stores"].results_url).trials("e2e")) == 5
    best = fitgap("best", "e2e", "--top", "2", "--json", "--workspace", str(launched["workspace"]))
    top = json.loads(best.stdout)
    assert len(top) == 2 and top[0]["values"][0] >= top[1]["values"][0]
    assert top[0]["values"][0] == max(t.value for t in trials)


def test_by_default_only_a_new_best_trial_gets_its_plots(launched):
    """`--plots best`: a trial is plotted when no trial finished before it (in this launch or the first) matched its
    value; the others' runs say why they have no plots."""
    client = MlflowClient(tracking_uri=launched["stores"].tracking_uri)
    rows = sorted(ResultsDB(launched["stores"].results_url).trials("e2e"), key=lambda r: r["finished_at"])
    best_before = -1.0
    for row in rows:
        run_id = row["mlflow_run_id"]
        files = {a.path for a in client.list_artifacts(run_id)}
        new_best = row["value"] > best_before
        best_before = max(best_before, row["value"])
        assert client.get_run(run_id).data.tags["fitgap.plots"] == \
            ("rendered in the background" if new_best else "not rendered (--plots)"), row["number"]
        assert ("learning_curves.png" in files) == new_best, (row["number"], files)


def test_resuming_with_a_changed_spec_exits_2_naming_the_field(launched):
    changed = launched["root"] / "changed.yaml"
    changed.write_text(launched["spec"].read_text().replace("epochs: 4", "epochs: 5"))
    before = snapshot(launched["workspace"])
    result = fitgap("launch", str(changed), "--workspace", str(launched["workspace"]))
    assert result.returncode == 2
    assert "`epochs` changed" in result.stderr and "stored 4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(launched["workspace"]) == before


def test_reading_commands_never_import_tensorflow(launched):
    ws = str(launched["workspace"])
    script = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from fitgap.studies.cli import main
        for args in (["--help"], ["studies", "--workspace", {ws!r}], ["status", "e2e", "--workspace", {ws!r}],
                     ["best", "e2e", "--workspace", {ws!r}], ["validate", {str(launched["spec"])!r}]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, (args, result.output)
            assert "tensorflow" not in sys.modules, args
            assert "keras" not in sys.modules, args
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_fitgap_ui_serves_the_study_with_its_nested_runs(launched):
    """The real MLflow server, started lean by `fitgap ui`, checked through its REST API."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ui = subprocess.Popen([sys.executable, "-m", "fitgap.studies.cli", "ui", "e2e", "--port", str(port), "--workspace",
                           str(launched["workspace"]), "--host", "0.0.0.0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ui.stdout.readline()  # printed only once the server answers
        base = f"http://127.0.0.1:{port}"
        assert line.startswith(f"e2e: {base}/#/experiments/"), line
        assert line.rstrip().endswith("/runs?workflowType=machine_learning"), line
        # In a browser, the printed page is MLflow's model-training view of the runs, not its GenAI pages
        page = line.split(": ", 1)[1].strip()
        assert CHROMIUM, "chromium is not installed: run `make chromium`"
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--virtual-time-budget=15000", f"--user-data-dir={launched['root'] / 'profile'}",
                              "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
        assert "Model registry" in dom and ">Runs<" in dom and ">Judges<" not in dom, dom[-2000:]
        # The store's URL (a database password, on PostgreSQL) is not on the server's command line, which `ps` shows
        server = [p for p in Path("/proc").glob("[0-9]*") if _parent_pid(p) == ui.pid]
        assert len(server) == 1
        command_line = (server[0] / "cmdline").read_bytes().decode()
        assert "mlflow" in command_line and "mlflow.db" not in command_line, command_line

        def call(path, body=None):
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        experiment = call("/api/2.0/mlflow/experiments/get-by-name?experiment_name=e2e")["experiment"]
        assert experiment["experiment_id"] in line
        runs = call("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
        parent = next(run["info"]["run_id"] for run, t in zip(runs, tags) if t.get("fitgap.role") == "study")
        children = [run for run, t in zip(runs, tags) if t.get("mlflow.parentRunId") == parent]
        assert len(children) >= 3
        for child in children:
            params = {p["key"]: p["value"] for p in child["data"]["params"]}
            assert {"learning_rate", "activation", "params_total", "macs"} <= params.keys()
            history = call(f"/api/2.0/mlflow/metrics/get-history?run_id={child['info']['run_id']}"
                           "&metric_key=val_accuracy")["metrics"]
            assert sorted(m["step"] for m in history) == [0, 1, 2, 3]
    finally:
        ui.terminate()
        _, stderr = ui.communicate(timeout=30)
    with pytest.raises(ConnectionRefusedError):  # the server went with it: no orphan keeps the port
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert stderr.startswith("warning: serving on 0.0.0.0: the MLflow UI has no authentication"), stderr


def _parent_pid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


SHADOWS = {  # what a user's folder may hold: modules named like fitgap's folders, each failing if imported
    **{f"{name}.py": f"raise ImportError('the user\\'s {name}.py was imported')\n"
       for name in ("tracking", "studies", "training", "data")},
    "sweeps/__init__.py": "raise ImportError('the user\\'s sweeps/ was imported')\n",
}


def test_modules_named_like_fitgaps_folders_in_the_working_directory_or_on_the_path_change_nothing(tmp_path,
                                                                                                  template_workspace):
    """A user's `tracking.py` or `sweeps/` beside the spec, and a foreign top-level `sweeps` package on the path
    (W&B's sweep engine is on PyPI under that name): the launch, its executors and its tracking process run."""
    here, foreign = tmp_path / "project", tmp_path / "site"
    for folder in (here, foreign):
        for relative, text in SHADOWS.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
    (here / "spec.yaml").write_text(SPEC.replace("trials: 3", "trials: 1"))
    shutil.copytree(template_workspace, here / "ws")
    command = str(Path(sys.executable).with_name("fitgap"))  # the installed script, as a user runs it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITGAP_", "MLFLOW_"))} | {"PYTHONPATH": str(foreign)}
    for args in (["validate", "spec.yaml"], ["launch", "spec.yaml", "--workspace", "ws", "--cpu-slots", "1"]):
        result = subprocess.run([command, *args], cwd=here, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (args, result.stderr)
    assert "1 COMPLETE" in result.stdout
    assert "was imported" not in (here / "ws" / "logs" / "executor-0.log").read_text()


def test_provenance_is_the_commit_of_the_specs_repository_flagged_when_it_has_uncommitted_changes(tmp_path,
                                                                                                   monkeypatch):
    from fitgap.studies.study import _study_tags
    from fitgap.sweeps.reading import load_spec

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path / "repo"), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "e2e.yaml").write_text(SPEC)
    git("init", "-q")
    git("add", "e2e.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec")
    monkeypatch.chdir(tmp_path)  # not a repository: the working directory says nothing of the spec
    tags = _study_tags(load_spec(tmp_path / "repo" / "e2e.yaml"), "hash")
    assert tags["mlflow.source.git.commit"] == git("rev-parse", "HEAD") and tags["fitgap.spec.git.dirty"] == "false"
    (tmp_path / "repo" / "e2e.yaml").write_text(SPEC.replace("epochs: 4", "epochs: 5"))
    assert _study_tags(load_spec(tmp_path / "repo" / "e2e.yaml"), "hash")["fitgap.spec.git.dirty"] == "true"
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "e2e.yaml").write_text(SPEC)
    assert "mlflow.source.git.commit" not in _study_tags(load_spec(tmp_path / "alone" / "e2e.yaml"), "hash")
