"""SQLite tuned for what fitgap asks of it: many small transactions (Optuna writes each suggestion, heartbeat and
tell in a transaction of its own; MLflow and the results database a few per trial).

In its default rollback-journal mode SQLite syncs to disk at every commit (~0.85 ms on this project's CI disk, and
a trial makes ~40 commits). In WAL mode with synchronous=NORMAL a commit is an append to the log (~0.01 ms) and
readers (`fitgap ui`, `fitgap query`) no longer wait for writers. A process that dies, even by kill -9, loses
nothing committed; only a power cut can lose the last transactions. WAL needs a local disk (not NFS): the workspace
default is one.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine


def use_wal() -> None:
    """Every SQLite connection this process opens from now on, whichever engine opens it (Optuna's, MLflow's, the
    results database's): WAL journal, synchronous=NORMAL."""
    if not event.contains(Engine, "connect", _tune):
        event.listen(Engine, "connect", _tune)


def _tune(connection, _record) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent: a no-op once the file is in WAL mode
    except sqlite3.OperationalError:
        pass  # locked by another process at this instant: that one switches it, or the next connection will
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
