"""The tracking process (`python -m tracking.writer`): it writes finished trials to MLflow and the results database
while the coordinator goes on asking, dispatching and telling.

A trial's MLflow writes cost ~95 ms of CPU (a log_batch of ~1,000 epoch points goes through MLflow's ORM store),
more than all the rest the coordinator does for it. In a process of their own they overlap with the coordinator's
work on a second core instead of adding to it. The coordinator tells Optuna only once this process says a trial is
written, so a trial COMPLETE in Optuna always has its MLflow run and results row, whichever process dies.

The wire: pickled objects. On stdin, the stores (tracking URI, artifact root, results URL: on the pipe, not the
command line, since a URL may hold a password), then (`TrialRecord`, whether to plot it) pairs; on stdout, for each
record, ``(number, None)`` once written or ``(number, error)``. End of input: the pending plots are rendered, then
the process exits.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from tracking.mlflow_sink import MlflowSink, feed_pipe
from tracking.records import TrialRecord


@dataclass(frozen=True)
class Written:
    """Event: the tracking process has written trial `number` (or failed to, with `error`)."""

    number: int
    error: str | None = None


@dataclass(frozen=True)
class WriterDied:
    returncode: int


class TrackingWriter:
    """The coordinator's handle on the tracking process. Its events go to `events` as (this handle, `Written` or
    `WriterDied`), beside the executors'."""

    def __init__(self, events: queue.Queue, tracking_uri: str, artifact_root: Path | None, results_url: str):
        self.process = subprocess.Popen([sys.executable, "-m", "tracking.writer"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
        self._events = events
        self._pending: queue.Queue = queue.Queue()  # written to the pipe by a thread: a record can exceed its buffer
        # A broken pipe needs no word from the feeder: the reader reports the process's exit.
        threading.Thread(target=feed_pipe, args=(self._pending, self.process), daemon=True,
                         name="fitgap-tracking-feed").start()
        threading.Thread(target=self._read, daemon=True, name="fitgap-tracking-read").start()
        self._pending.put(pickle.dumps((tracking_uri, artifact_root, results_url)))

    def write(self, record: TrialRecord, plot: bool) -> None:
        self._pending.put(pickle.dumps((record, plot), protocol=pickle.HIGHEST_PROTOCOL))

    def _read(self) -> None:
        while True:
            try:
                number, error = pickle.load(self.process.stdout)
            except EOFError:
                break
            except pickle.UnpicklingError:
                self.process.kill()  # its answers cannot be read any more
                break
            self._events.put((self, Written(number, error)))
        self._events.put((self, WriterDied(self.process.wait())))

    def close(self, timeout: float | None = 300) -> None:
        """End the process once it has written what it got (and rendered the pending plots)."""
        self._pending.put(None)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    from tracking.results import ResultsDB

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's: it records the interrupted trials
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run" line per trial
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the real stdout is the answers'; anything a library prints goes to stderr
    tracking_uri, artifact_root, results_url = pickle.load(stdin)
    sink, results = MlflowSink(tracking_uri, artifact_root), ResultsDB(results_url)
    while True:
        try:
            record, plot = pickle.load(stdin)
        except EOFError:
            break
        try:
            sink.finish_trial(record, plot)
            results.write_trial(record)
            answer = (record.number, None)
        except Exception as e:
            traceback.print_exc()
            answer = (record.number, f"{type(e).__name__}: {e}")
        try:
            pickle.dump(answer, stdout)
            stdout.flush()
        except BrokenPipeError:
            break  # the coordinator is gone
    sink.flush(timeout=300)
    results.close()


if __name__ == "__main__":
    main()
