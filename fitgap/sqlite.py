"""The embedded stores' SQLite settings, for every engine a process opens (Optuna's, MLflow's, the results
database's): `tune()` once per process, before the first connection.

SQLite's default journal syncs the disk at every commit, ~1.5 ms here, and a trial costs Optuna, MLflow and the
results database some twenty commits. In WAL mode with `synchronous=NORMAL` a commit is ~15 µs: a crash of any
process loses nothing committed, and the file stays sound after a power cut, which may only lose the last
transactions (the trials of the last second, retried by the next launch). WAL needs the stores on a local disk,
not on a network file system; `FITGAP_SQLITE_JOURNAL=delete` keeps SQLite's default.
"""

from __future__ import annotations

import os
import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

_tuned = False


def tune() -> None:
    global _tuned
    if _tuned or os.environ.get("FITGAP_SQLITE_JOURNAL", "wal").lower() != "wal":
        return
    event.listen(Engine, "connect", _pragmas)
    _tuned = True


def _pragmas(connection, _record) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # kept in the file: a no-op once it is WAL
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError:
        pass  # a read-only connection (`fitgap query`) reads the file as it is
    finally:
        cursor.close()
