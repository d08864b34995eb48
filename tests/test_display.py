"""What a launch shows (`studies/display.py`): on a terminal a rich bar that says what is training, elsewhere one line
per finished trial; and `fitgap status`'s lines on running trials. A rich Console on a StringIO stands in for the
terminal."""

from __future__ import annotations

import io

from rich.console import Console

from fitgap.studies.api import Running, Summary
from fitgap.studies.display import Progress, elapsed, running_lines
from fitgap.sweeps.spec import parse_spec
from fitgap.tracking.records import TrialRecord

SPEC = parse_spec({"name": "shown", "dataset": {"name": "dot"}, "epochs": 100, "trials": 10,
                   "objective": [{"metric": "val_accuracy"}]})


def record(number: int, value: float) -> TrialRecord:
    return TrialRecord("shown", number, "COMPLETE", {}, (value,), 99, (), {}, 0, "cpu", 0, 100.0, 102.5,
                       wait_s=4.0)


def screen(out: io.StringIO, progress: Progress) -> str:
    progress.bar.refresh()
    return out.getvalue()


def test_on_a_terminal_the_bar_says_what_is_training_and_counts_members_as_they_are_written():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=200))
    progress.SHOW_EVERY_S = 3600  # only the first epoch record and each written trial redraw the status
    progress.start(SPEC, 1, 0, 10)
    for number in range(4):  # a fused batch of 4 at its 37th epoch; one member behind
        progress.epoch(number, 36 if number else 20, 100)
    assert "1 running, epoch 21/100" in screen(out, progress)  # throttled: the three others not drawn yet
    progress(record(0, 0.9), 1, 10)
    text = screen(out, progress)
    assert "3 running, epoch 37/100  |  best val_accuracy=0.9 (trial 0)  last: trial 0 COMPLETE" in text, text
    assert "1/10" in text
    progress(record(1, 0.95), 2, 10)
    assert "2 running, epoch 37/100  |  best val_accuracy=0.95 (trial 1)" in screen(out, progress)
    progress.done()


def test_elsewhere_one_line_per_finished_trial_with_its_own_time_and_nothing_per_epoch(capsys):
    progress = Progress(Console(file=io.StringIO(), force_terminal=False))
    progress.start(SPEC, 2, 0, 10)
    progress.epoch(0, 5, 100)
    progress(record(0, 0.9), 1, 10)
    assert capsys.readouterr().err.splitlines() == [
        "study shown: 0/10 trials done; starting 2 executors (importing TensorFlow)…",
        "1/10  trial 0 COMPLETE val_accuracy=0.9 (2.5 s)  |  best val_accuracy=0.9 (trial 0)",  # the wait apart
    ]


def test_status_lists_running_trials_with_their_epoch_objective_gap_and_time():
    summary = Summary("shown", 10, {"RUNNING": 2}, [], ["val_accuracy"], running=[
        Running(3, 41, 100, 0.883333, 0.0123, 75.4), Running(4, None, 100, None, None, 2.2)])
    assert running_lines(summary) == [
        "running: 2",
        "  trial 3  epoch 41/100  val_accuracy=0.8833  gap=0.0123  for 1 min 15 s",
        "  trial 4  epoch -/100  no epoch written yet  (asked 2 s ago)",
    ]
    assert running_lines(Summary("shown", 10, {}, [], ["val_accuracy"])) == []
    assert (elapsed(59.4), elapsed(3600 + 125)) == ("59 s", "1 h 02 min")
