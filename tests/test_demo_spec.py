"""The demo spec (`sweeps/specs/demo.yaml`) validates and is the controlled comparison its comment says; running it
is `make demo`, not a test."""

from collections import Counter
from pathlib import Path

from fitgap.studies.api import validate

from conftest import ROOT, fitgap

DEMO = ROOT / "sweeps" / "specs" / "demo.yaml"


def test_fitgap_validate_accepts_the_demo_and_writes_nothing(tmp_path: Path):
    result = fitgap("validate", str(DEMO), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study 'dot-demo'" in result.stdout and "60 training, 240 validation samples" in result.stdout
    assert not any(tmp_path.iterdir())


def test_the_demo_compares_regularizers_with_everything_else_fixed():
    spec, _ = validate(DEMO)
    assert set(spec.search) == {"regularizer", "regularization_weight"}  # the only things that vary
    arms = Counter((e["regularizer"], e.get("regularization_weight")) for e in spec.enqueue)
    assert arms[("none", None)] == 5 and len(arms) == 7 and set(arms.values()) == {5}  # five seeds per arm
    assert spec.trials == len(spec.enqueue)  # every trial is one of the arms, none sampled
    assert spec.repeats == 1  # one training per trial: each seed is a row of its own
