"""Tracking side: the tracking process (`fitgap.tracking.writer`), which writes trials to MLflow and the results
database while the coordinator goes on asking, dispatching and telling: running trials' new epochs as they come,
finished trials whole.

A trial's MLflow writes (a `log_batch` of its epoch points through MLflow's ORM store) cost more CPU than all the rest
the coordinator does for it (`bench/overhead.py`). In a process of their own they overlap with the coordinator's
work on a second core instead of adding to it. The coordinator tells Optuna only once this process says a trial is
written, so a trial COMPLETE in Optuna always has its MLflow run and results row, whichever process dies.

Messages (`fitgap.channel`): in, the stores (tracking URI, artifact root, results URL: on the pipe, not the command
line, since a URL may hold a password), then (`TrialRecord`, whether to plot it) pairs and `LiveRecord`s (a running
trial's new points for MLflow, its RUNNING results row); out, a `Written` per `TrialRecord`, and one with the
error for a `LiveRecord` it could not write. End of input: the pending plots are rendered, then the process exits;
so it does after the first write that failed (the coordinator stops the launch on it). Its stderr, and its plotter's,
go to the workspace's `logs/tracking.log`.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from fitgap.channel import Child, child_ends, receive, send
from fitgap.errors import one_line, scrub
from fitgap.tracking.mlflow_sink import MlflowSink
from fitgap.tracking.records import LiveRecord, TrialRecord


@dataclass(frozen=True)
class Written:
    """Event: the tracking process has written trial `number` (or failed to, with `error`)."""

    number: int
    error: str | None = None
    attributes: dict | None = None  # what Optuna keeps of the diagnosis, for optuna-dashboard (`Diagnosis.attributes`)


@dataclass(frozen=True)
class WriterDied:
    returncode: int


class TrackingWriter:
    """The coordinator's handle on the tracking process. Its events go to `events` as (this handle, `Written` or
    `WriterDied`), beside the executors'."""

    def __init__(self, events: queue.Queue, tracking_uri: str, artifact_root: Path | None, results_url: str,
                 log_path: Path):
        self.log_path = log_path  # its stderr and its plotter's: MLflow's error logs, tracebacks
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.child = Child("fitgap.tracking.writer", lambda message: events.put((self, message)),
                               lambda code: events.put((self, WriterDied(code))), stderr=log, name="fitgap-tracking")
        self.child.send((tracking_uri, artifact_root, results_url))  # on the pipe: a URL may hold a password

    def write(self, record: TrialRecord, plot: bool) -> None:
        self.child.send((record, plot))

    def write_live(self, live: LiveRecord) -> None:
        """A running trial's new epochs: no answer unless the write fails."""
        self.child.send(live)

    def close(self, timeout: float | None = 300) -> None:
        """End the process once it has written what it got (and rendered the pending plots)."""
        self.child.close_input()
        self.child.wait(timeout)


def main() -> None:
    from fitgap import sqlite
    from fitgap.tracking.diagnosis import diagnose_trial
    from fitgap.tracking.results import ResultsDB
    from fitgap.tracking.writer import Written  # by its importable name: this module runs as __main__

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's: it records the interrupted trials
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run" line per trial
    inbox, answers = child_ends()  # anything a library prints goes to stderr
    tracking_uri, artifact_root, results_url = receive(inbox)
    sqlite.tune()
    sink, results = MlflowSink(tracking_uri, artifact_root), ResultsDB(results_url)
    while (message := receive(inbox)) is not None:
        try:
            if isinstance(message, LiveRecord):
                sink.log_live(message)
                results.write_running(message)
                continue
            record, plot = message
            diagnosis = diagnose_trial(record)  # once: MLflow's tags and the results row agree
            sink.finish_trial(record, plot, diagnosis)  # the points not logged live
            results.write_trial(record, diagnosis)  # replaces the RUNNING row, if any
            answer = Written(record.number, attributes=diagnosis.attributes())
        except Exception as e:  # the coordinator stops the launch with this message: the traceback is for the log
            print(scrub(traceback.format_exc()), file=sys.stderr)
            answer = Written(message.number if isinstance(message, LiveRecord) else message[0].number, one_line(e))
        try:
            send(answers, answer)
        except BrokenPipeError:
            break  # the coordinator is gone
        if answer.error:
            break  # the launch stops on it: the records queued behind it (a full disk fails them all) stay unwritten
    sink.flush(timeout=300)
    results.close()


if __name__ == "__main__":
    main()
