"""The command line: every bad input is one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from studies.cli import main

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
