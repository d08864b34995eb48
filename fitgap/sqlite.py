"""The embedded stores' SQLite settings, for every engine a process opens: `tune(wal_files)` before the first
connection, naming the databases to keep in WAL mode (Optuna's and MLflow's).

SQLite's default journal syncs the disk at every commit, ~1.5 ms here, and a trial costs Optuna and MLflow some
twenty commits. In WAL mode with `synchronous=NORMAL` a commit is ~15 µs: a crash of any process loses nothing
committed, and the file stays sound after a power cut, which may only lose the last transactions (the trials of
the last second, retried by the next launch). WAL needs the stores on a local disk, not on a network file system.
It is opt-in (`FITGAP_SQLITE_JOURNAL=wal`): under WAL the fault tests of a full disk and of simultaneous launches
on a fresh workspace failed (MLflow's migrations), which is not solved yet. The results database (one commit a
trial) keeps SQLite's rollback journal: `fitgap query` reads it read-only, which could not remove WAL's files.

While a connection is open SQLite keeps two files beside a WAL database (`-wal`, `-shm`), and removes them when
the last one closes: `release()` disposes the engines (each CLI command calls it as it ends; so does the exit), so
that a command leaves the workspace as it found it.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import weakref
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

_wal: set[str] = set()  # resolved paths of the databases kept in WAL mode
_engines: weakref.WeakSet = weakref.WeakSet()  # those that opened a connection, disposed by `release`
_tuned = False


def tune(wal_files=()) -> None:
    """Set `synchronous=NORMAL` on every SQLite connection, and WAL mode on `wal_files` (paths; None is skipped)."""
    global _tuned
    if os.environ.get("FITGAP_SQLITE_JOURNAL", "delete").lower() != "wal":  # opt-in: see the README
        return
    _wal.update(str(Path(f).resolve()) for f in wal_files if f)
    if not _tuned:
        event.listen(Engine, "connect", _pragmas)
        event.listen(Engine, "engine_connect", lambda connection: _engines.add(connection.engine))
        atexit.register(release)
        _tuned = True


def release() -> None:
    """Close every pooled connection of the engines this process opened (they reconnect when used again)."""
    for engine in list(_engines):
        engine.dispose()


def _pragmas(connection, _record) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        path = cursor.execute("PRAGMA database_list").fetchone()[2]
        if path and str(Path(path).resolve()) in _wal:
            cursor.execute("PRAGMA journal_mode=WAL")  # kept in the file: a no-op once it is WAL
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError:
        pass  # a read-only connection reads the file as it is
    finally:
        cursor.close()
