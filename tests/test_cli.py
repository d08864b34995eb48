"""The command line: every bad input is one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from fitgap.studies.cli import main

from conftest import snapshot

GOOD = """\
name: cli
dataset: {name: dot}
epochs: 3
trials: 2
objective: [{metric: val_accuracy}]
search:
  learning_rate: {type: float, low: 1.0e-3, high: 0.3, log: true}
  loss: {type: categorical, choices: [mse, binary_crossentropy]}
"""

BAD_SPECS = {
    "unknown key": GOOD + "colour: blue\n",
    "invalid yaml": GOOD + "search: [\n",
    "wrong type": GOOD.replace("epochs: 3", "epochs: three"),
    "low >= high": GOOD.replace("low: 1.0e-3, high: 0.3", "low: 0.3, high: 0.3"),
    "log with low <= 0": GOOD.replace("low: 1.0e-3", "low: 0.0"),
    "unknown activation": GOOD + "  activation: {type: categorical, choices: [relu, swish2]}\n",
    "unknown loss": GOOD.replace("choices: [mse,", "choices: [hinge,"),
    "unknown regularizer": GOOD + "params: {regularizer: l3}\n",
    "unknown sampler": GOOD + "sampler: annealing\n",
    "unknown dataset": GOOD.replace("name: dot", "name: dots"),
    "epochs <= 0": GOOD.replace("epochs: 3", "epochs: 0"),
    "trials <= 0": GOOD.replace("trials: 2", "trials: 0"),
    "loss-dependent objective": GOOD.replace("metric: val_accuracy", "metric: val_loss"),
    "not a mapping": "- just\n- a list\n",
}
EXPECTED = {
    "unknown key": "colour", "invalid yaml": "invalid YAML", "wrong type": "'three'", "low >= high": "low=0.3",
    "log with low <= 0": "low=0.0", "unknown activation": "'swish2'", "unknown loss": "'hinge'",
    "unknown regularizer": "'l3'", "unknown sampler": "'annealing'", "unknown dataset": "'dots'",
    "epochs <= 0": "`epochs`", "trials <= 0": "`trials`", "loss-dependent objective": "val_accuracy",
    "not a mapping": "mapping",
}


def run(*args):
    return CliRunner().invoke(main, list(args))


def assert_refused(result, expected: str):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(case, workspace, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BAD_SPECS[case])
    before = snapshot(workspace)
    for command in (["launch", str(spec), "--workspace", str(workspace)], ["validate", str(spec)]):
        assert_refused(run(*command), EXPECTED[case])
    assert snapshot(workspace) == before


def test_missing_spec_file(workspace, tmp_path):
    before = snapshot(workspace)
    assert_refused(run("launch", str(tmp_path / "missing.yaml"), "--workspace", str(workspace)), "missing.yaml")
    assert snapshot(workspace) == before


def test_bad_trials_option_is_a_usage_error(workspace, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    result = run("launch", str(spec), "--trials", "0", "--workspace", str(workspace))
    assert result.exit_code == 2 and "--trials" in result.stderr
    assert not (workspace / "logs").exists()


@pytest.mark.parametrize("command", ["status", "best"])
def test_unknown_study_exits_2_listing_known_ones(command, workspace):
    before = snapshot(workspace)
    assert_refused(run(command, "nope", "--workspace", str(workspace)), "unknown study 'nope'; known: none")
    assert snapshot(workspace) == before


def test_unknown_study_in_a_missing_workspace_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    assert_refused(run("status", "nope", "--workspace", str(missing)), "unknown study 'nope'")
    assert not missing.exists()


def test_studies_on_an_empty_workspace(workspace):
    result = run("studies", "--workspace", str(workspace))
    assert result.exit_code == 0 and "no studies" in result.output


def test_validate_reports_the_data(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("metric: val_accuracy", "metric: val_bce"))
    result = run("validate", str(spec))
    assert result.exit_code == 0
    assert "240 training, 60 validation samples" in result.output
    assert not (tmp_path / "fitgap-data").exists()


def test_every_command_has_help_text():
    for name, command in main.commands.items():
        result = run(name, "--help")
        assert result.exit_code == 0, name
        assert command.help and command.help.split()[0] in result.output, name
        assert "--help" in result.output


def test_the_coordinator_side_never_imports_the_tensorflow_side():
    """Every module of studies, tracking, sweeps and data imports without TensorFlow, Keras or fitgap.training."""
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import fitgap.data, fitgap.studies, fitgap.sweeps, fitgap.tracking
        for package in (fitgap.studies, fitgap.tracking, fitgap.sweeps, fitgap.data):
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{module.name}")
        loaded = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") or m.startswith("fitgap.training")]
        print(len([m for m in sys.modules if m.startswith("fitgap.")]), loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) > 30 and loaded.strip() == "[]", result.stderr


@pytest.mark.parametrize("error, code", [("UsageError", 2), ("RunError", 1)])
def test_fitgaps_errors_are_one_line_with_the_exit_code_of_their_family(monkeypatch, tmp_path, error, code):
    import fitgap.errors
    import fitgap.studies.api

    def stopped(*args, **kwargs):
        raise getattr(fitgap.errors, error)("the tracking process exited (code 1)")

    monkeypatch.setattr(fitgap.studies.api, "launch", stopped)
    result = CliRunner().invoke(main, ["launch", str(tmp_path / "spec.yaml")])
    assert result.exit_code == code
    assert result.stderr == "fitgap: error: the tracking process exited (code 1)\n"


# ---- hostile input through the real CLI: one line, exit 2, nothing written -------------------------------------------

HOSTILE_SPECS = {
    "enqueued choice outside the dimension": (GOOD + "  activation: {type: categorical, choices: [sigmoid, relu]}\n"
                                              "enqueue: [{activation: elu}]\n",
                                              "`enqueue[0].activation` must be one of ['sigmoid', 'relu'], but got 'elu'"),
    "enqueued number outside the dimension": (GOOD + "enqueue: [{learning_rate: 0.9}]\n",
                                              "`enqueue[0].learning_rate` must be a number in [0.001, 0.3]"),
    "infinite bound": (GOOD.replace("high: 0.3", "high: .inf"), "`search.learning_rate.high`"),
    "an integer beyond 64 bits": (GOOD.replace("epochs: 3", "epochs: " + "9" * 25),
                                  "`epochs`: 9999999999999999999999999 is larger than the stores hold"),
    "an enqueued integer beyond 64 bits": (GOOD + "enqueue: [{batch_size: 100000000000000000000}]\n",
                                           "`enqueue[0].batch_size`: 100000000000000000000 is larger"),
    "a name too long for a file": (GOOD.replace("name: cli", "name: " + "n" * 300), "at most 100 characters"),
    "a grid of 1e9 points": (GOOD.replace("log: true}", "step: 1.0e-9}").replace("low: 1.0e-3", "low: 0.1")
                             .replace("high: 0.3", "high: 1.1") + "sampler: grid\n", "the grid has 2,000,000,002 points"),
    "duplicate key": (GOOD + "epochs: 4\n", "duplicate key 'epochs' (first at line 3)"),
    "nested 20,000 deep": ("name: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than 32 levels"),
    "dead when": (GOOD + "  regularizer: {type: categorical, choices: [none, l2]}\n  regularization_weight: {type: float, "
                  "low: 0.001, high: 0.1, when: {regularizer: [l1]}}\n", "lists 'l1', which regularizer never takes"),
    "a regularizer without a weight": (GOOD + "params: {regularizer: l2}\n", "needs a `regularization_weight`"),
    "trials: true": (GOOD.replace("trials: 2", "trials: true"), "`trials`: Input should be a valid integer"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_hostile_specs_are_refused_by_validate_and_launch_before_anything_is_written(case, workspace, tmp_path):
    text, expected = HOSTILE_SPECS[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    before = snapshot(workspace)
    for command in (["validate", str(spec)], ["launch", str(spec), "--workspace", str(workspace)]):
        assert_refused(run(*command), expected)
    assert snapshot(workspace) == before


def test_a_spec_that_is_not_utf8_or_is_huge_is_one_short_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(GOOD.encode().replace(b"name: cli", b"name: cl\xe9"))
    assert_refused(run("validate", str(spec)), "a spec is UTF-8 text, but byte 9 is 0xe9")
    spec.write_text(GOOD.replace("name: cli\n", "") + "params: {junk: '" + "x" * 5_000_000 + "'}\n")
    result = run("validate", str(spec))
    assert_refused(result, "`name`: a required field is missing")
    assert len(result.stderr) < 300


@pytest.mark.parametrize("args, expected", [
    (["launch", "{tmp}"], "fitgap: error: Invalid value for 'SPEC': File '{tmp}' is a directory."),
    (["validate", "{tmp}"], "Invalid value for 'SPEC'"),
    (["launch", "spec.yaml", "--trials", "0"], "Invalid value for '--trials': 0 is not in the range x>=1."),
    (["report", "study", "--out", "{tmp}/file"], "Invalid value for '--out': Directory '{tmp}/file' is a file."),
    (["query", "study", "--limit", "0"], "Invalid value for '--limit': 0 is not in the range x>=1."),
    (["best", "study", "--top", "many"], "Invalid value for '--top': 'many'"),
    (["status", "study", "--bogus"], "No such option '--bogus'"),
    (["--bogus"], "No such option '--bogus'"),
    (["launhc"], "No such command 'launhc'"),
    (["status"], "Missing argument 'STUDY'"),
    (["query", "study", "--format"], "Option '--format' requires an argument"),
])
def test_clicks_usage_errors_are_one_line_naming_the_option_and_value(args, expected, tmp_path):
    (tmp_path / "file").write_text("")
    result = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_refused(result, expected.replace("{tmp}", str(tmp_path)))
    assert result.stderr.startswith("fitgap: error: ")


def test_ui_refuses_a_missing_workspace_an_unknown_study_and_a_busy_port_before_writing_anything(workspace, tmp_path):
    import socket

    missing = tmp_path / "typo"
    assert_refused(run("ui", "--workspace", str(missing)), f"no MLflow store at {missing / 'mlflow.db'}")
    assert not missing.exists()
    before = snapshot(workspace)
    assert_refused(run("ui", "nosuch", "--workspace", str(workspace)), "unknown study 'nosuch'")
    with socket.socket() as other:  # another server already on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = str(other.getsockname()[1])
        assert_refused(run("ui", "--workspace", str(workspace), "--port", port), f"`--port`: {port} on 127.0.0.1 is "
                       "already in use")
    assert_refused(run("ui", "--workspace", str(workspace), "--port", "99999"), "Invalid value for '--port': 99999")
    assert snapshot(workspace) == before


UNREACHABLE = "postgresql+psycopg://fitgap:SECRET@127.0.0.1:1/fitgap"  # nothing listens on port 1


@pytest.mark.parametrize("option, url, expected", [
    ("--storage", UNREACHABLE, "`--storage`: cannot reach postgresql+psycopg://fitgap:***@127.0.0.1:1/fitgap"),
    ("--storage", "bogus://x", "`--storage`: cannot reach bogus://x: Can't load plugin"),
    ("--storage", "::not a url::",
     "`--storage`: not a database URL or an Optuna journal file (.journal, .log): ::not a url::"),
    ("--results-url", UNREACHABLE, "`--results-url`: cannot reach postgresql+psycopg://fitgap:***@127.0.0.1:1"),
    ("--tracking-uri", UNREACHABLE, "`--tracking-uri`: cannot reach postgresql+psycopg://fitgap:***@127.0.0.1:1"),
    ("--tracking-uri", "bogus://x", "`--tracking-uri`: bogus://x is not a tracking URI fitgap takes"),
    ("--tracking-uri", "http://u:SECRET@127.0.0.1:9/", "`--tracking-uri`: cannot reach the MLflow server at "
                                                      "http://u:***@127.0.0.1:9/"),
])
def test_every_store_is_reached_before_anything_is_created(option, url, expected, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    workspace = tmp_path / "ws"
    for command in (["launch", str(spec)], ["create", str(spec)]):
        result = run(*command, "--workspace", str(workspace), option, url)
        assert_refused(result, expected)
        assert "SECRET" not in result.stderr and not workspace.exists()


def test_help_is_still_clicks_own():
    for args in (["--help"], ["launch", "--help"], ["query", "-h"]):
        result = run(*args)
        assert result.exit_code == 0 and result.output.startswith("Usage: ") and "Options:" in result.output
    result = run()  # no command: the help, as click shows it
    assert result.exit_code == 2 and "Commands:" in result.stderr + result.output


def make_study(storage_url: str, name: str) -> None:
    import optuna

    study = optuna.create_study(storage=storage_url, study_name=name)
    study.set_user_attr("fitgap.trials", 7)
    study.set_user_attr("fitgap.spec", {"objective": [{"metric": "val_loss"}]})


def test_status_and_stop_find_a_study_in_a_storage_outside_the_workspace(tmp_path):
    """A PostgreSQL (here: another SQLite file) storage beside the workspace's default results URL, whose file does
    not exist: the study is in the storage, and that is all `status` and `stop` need."""
    storage = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    make_study(storage, "remote")
    workspace = tmp_path / "ws"
    stores = ["--storage", storage, "--workspace", str(workspace)]
    result = run("status", "remote", *stores)
    assert result.exit_code == 0 and "of a budget of 7" in result.output, result.output
    result = run("stop", "remote", *stores)
    assert result.exit_code == 0 and "stop requested" in result.output, result.output
    assert "remote\t" in run("studies", *stores).output
    assert_refused(run("status", "nope", *stores), "unknown study 'nope'; known: remote")
    assert not workspace.exists()


def test_delete_refuses_an_unknown_study_before_asking(workspace, tmp_path):
    before = snapshot(workspace)
    result = CliRunner().invoke(main, ["delete", "nosuch", "--workspace", str(workspace)], input="y\n")
    assert_refused(result, "unknown study 'nosuch'")
    assert "Delete study" not in result.output
    assert snapshot(workspace) == before
    missing = tmp_path / "nowhere"
    assert_refused(run("delete", "nosuch", "--workspace", str(missing)), "unknown study 'nosuch': no studies yet")
    assert not missing.exists()


def test_a_declined_confirmation_is_clicks_aborted_not_a_traceback(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(storage, "kept")
    result = CliRunner().invoke(main, ["delete", "kept", "--storage", storage, "--workspace", str(tmp_path / "ws")],
                                input="n\n")
    assert result.exit_code == 1 and "Aborted!" in result.output and "Traceback" not in result.output
    assert "kept\t" in run("studies", "--storage", storage, "--workspace", str(tmp_path / "ws")).output


def test_ui_waits_while_a_launch_holds_the_store_creation_lock(workspace):
    """A launch creating the stores holds `creation_lock` while MLflow migrates; `fitgap ui` started meanwhile
    waits for it instead of migrating the same database at the same time."""
    import socket
    import time

    from fitgap.studies.stores import Stores

    def waiting_on_a_lock(pid: int) -> bool:  # /proc/locks marks a blocked waiter with "->"
        return any(line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(pid)
                   for line in open("/proc/locks").read().splitlines())

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    with Stores.resolve(workspace=workspace).creation_lock():
        ui = subprocess.Popen([sys.executable, "-m", "fitgap.studies.cli", "ui", "--workspace", str(workspace),
                               "--port", port], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 60
            while not waiting_on_a_lock(ui.pid) and ui.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            assert waiting_on_a_lock(ui.pid), ui.stderr.read() if ui.poll() is not None else "not waiting"
        except BaseException:
            ui.kill()
            raise
    try:
        line = ui.stdout.readline()  # once the lock is free, it serves
        assert line.startswith(f"MLflow UI at http://127.0.0.1:{port}"), (line, ui.stderr.read() if ui.poll() else "")
    finally:
        ui.terminate()
        ui.wait(timeout=30)


@pytest.mark.parametrize("label", [0, 1])
def test_a_classification_csv_whose_labels_are_all_one_class_is_refused(label, tmp_path):
    (tmp_path / "points.csv").write_text("x1,x2,label\n" + "".join(f"{i},{i * 2},{label}\n" for i in range(10)))
    spec = tmp_path / "spec.yaml"
    for task in ("binary", "multiclass"):
        spec.write_text(f"name: one-class\ndataset: {{name: csv, path: points.csv, target: label, task: {task}}}\n"
                        f"objective: [{{metric: val_accuracy}}]\n")
        assert_refused(run("validate", str(spec)), f"points.csv: every label is {label}; a classification needs at "
                                                   "least two classes")
