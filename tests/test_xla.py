"""XLA per graph (`fitgap.training.xla.EpochFunction`): measured on the first call, blocked where it would not
reproduce the training, overridden by FITGAP_XLA. The timings are scripted where the choice is tested: a real
measurement on a toy graph would decide by the machine's load."""

import pytest

tf = pytest.importorskip("tensorflow")

from fitgap.errors import UsageError  # noqa: E402
from fitgap.studies.choice import xla_mode  # noqa: E402
from fitgap.training import xla  # noqa: E402

pytestmark = pytest.mark.tensorflow


def epoch_function(blocker=None):
    """An EpochFunction of a pure function, and the list of its traces (True = traced for XLA)."""
    traces = []

    def step(state, x):
        traces.append(tf.config.functions_run_eagerly())  # anything: one entry per trace
        updated = state * 0.5 + tf.reduce_sum(x)
        return updated, tf.stack([updated, updated * 2])

    return xla.EpochFunction(step, blocker), traces


ARGS = (tf.constant(1.0), tf.constant([1.0, 2.0]))


def script(monkeypatch, *seconds):
    """`_timed` runs the call and answers the given timings in turn: the warm plain epoch, then XLA's compiling call
    and its timed call."""
    answers = iter(seconds)
    monkeypatch.setattr(xla, "_timed", lambda call, args: (call(*args), next(answers)))


def epochs(function, count):
    state = ARGS[0]
    for _ in range(count):
        state, _ = function(state, ARGS[1])
    return float(state)


@pytest.mark.parametrize("plain_s, xla_s, chosen", [(0.010, 0.002, True), (0.010, 0.009, False)])
def test_xla_is_measured_in_a_trial_and_kept_from_its_next_epoch_only_when_faster_by_the_margin(
        monkeypatch, plain_s, xla_s, chosen):
    monkeypatch.delenv("FITGAP_XLA", raising=False)
    function, traces = epoch_function()
    script(monkeypatch, plain_s, 9.0, xla_s)
    assert epochs(function, 3) == 1 * 0.125 + 3 * 1.75  # three epochs of the same pure function, whatever the mode
    decision = (f"{'XLA' if chosen else 'no XLA'}: an epoch took {xla_s * 1000:.3g} ms with, "
                f"{plain_s * 1000:.3g} ms without")
    first = "XLA from its epoch 2" if chosen else "no XLA"  # epochs 0 and 1 without: the first traced, one timed
    assert function.xla is chosen and function.reason == f"{first} (this trial measured: {decision})"
    assert len(traces) == 2  # once plain, once for XLA
    function.start()  # the next trial: in the chosen mode from its first epoch
    assert epochs(function, 2) == pytest.approx(0.25 + 3 * 1.5) and function.reason == decision
    assert len(traces) == 2


def test_a_long_epoch_is_never_tried_under_xla(monkeypatch):
    monkeypatch.delenv("FITGAP_XLA", raising=False)
    function, traces = epoch_function()
    script(monkeypatch, xla.TRY_BELOW_S * 1.01)
    assert epochs(function, 3) == 0.125 + 3 * 1.75
    assert function.xla is False and function.reason == "no XLA (this trial measured: no XLA: an epoch takes " \
        f"{xla.TRY_BELOW_S * 1010:.3g} ms without)"
    assert len(traces) == 1  # nothing compiled for XLA, nothing computed twice


def test_a_one_epoch_trial_is_not_a_measurement(monkeypatch):
    monkeypatch.delenv("FITGAP_XLA", raising=False)
    monkeypatch.setattr(xla, "_timed", lambda call, args: pytest.fail("a graph's first call is not timed"))
    function, traces = epoch_function()
    assert epochs(function, 1) == 3.5
    assert (function.xla, function.reason, len(traces)) == (None, "no XLA (not measured yet)", 1)


@pytest.mark.parametrize("setting, blocker, reason", [
    ("on", "Conv2D layers", "no XLA: Conv2D layers"),
    ("auto", "Dropout layers", "no XLA: Dropout layers"),
    ("off", None, "no XLA: FITGAP_XLA=off"),
    ("on", None, "XLA: FITGAP_XLA=on"),
])
def test_blockers_and_fitgap_xla_decide_without_measuring(monkeypatch, setting, blocker, reason):
    monkeypatch.setenv("FITGAP_XLA", setting)
    monkeypatch.setattr(xla, "_timed", lambda call, args: pytest.fail("nothing is measured"))
    function, traces = epoch_function(blocker)
    assert epochs(function, 3) == pytest.approx(0.125 + 3 * 1.75)
    assert (function.xla, function.reason, len(traces)) == (reason.startswith("XLA"), reason, 1)


def test_a_wrong_fitgap_xla_is_the_users_error(monkeypatch):
    monkeypatch.setenv("FITGAP_XLA", "yes")
    with pytest.raises(UsageError, match=r"FITGAP_XLA must be one of \['auto', 'on', 'off'\], but got 'yes'"):
        xla_mode()


def test_the_launch_refuses_a_wrong_fitgap_xla_before_writing(workspace):
    from conftest import fitgap, snapshot

    before = snapshot(workspace)
    spec = "sweeps/specs/dot.yaml"
    result = fitgap("launch", spec, "--workspace", str(workspace), env={"FITGAP_XLA": "fast"})
    assert (result.returncode, result.stderr) == (2, "fitgap: error: FITGAP_XLA must be one of ['auto', 'on', "
                                                     "'off'], but got 'fast'\n")
    assert snapshot(workspace) == before
