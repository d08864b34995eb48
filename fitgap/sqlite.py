"""The embedded stores' SQLite settings: Optuna's and MLflow's databases in WAL mode (`use_wal`, once they exist),
and `synchronous=NORMAL` on every connection to a WAL database (`tune`, before a process opens its first store).

SQLite's default journal syncs the disk at every commit, ~1.5 ms here, and a trial costs Optuna and MLflow some
twenty commits. In WAL mode with `synchronous=NORMAL` a commit is ~15 µs: a crash of any process loses nothing
committed, and the file stays sound after a power cut, which may only lose the last transactions (the trials of
the last second, retried by the next launch). WAL needs the stores on a local disk, not on a network file system:
`FITGAP_SQLITE_JOURNAL=delete` keeps (or puts back) SQLite's rollback journal.

WAL is switched on only after a store is created and migrated, under the workspace's creation lock: MLflow's
migrations, run on a fresh WAL file while another launch opened it, failed ("expected to match one row when
updating" alembic's version). The mode is kept in the file, so every later connection, of any process (the
tracking process, `fitgap ui`, optuna-dashboard), uses it. The results database (one commit a trial) keeps the
rollback journal: `fitgap query` reads it read-only, which could not remove WAL's files.

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

from fitgap.errors import UsageError

_engines: weakref.WeakSet = weakref.WeakSet()  # those that opened a connection, disposed by `release`
_tuned = False


JOURNAL_MODES = ("wal", "delete")


def journal_mode() -> str:
    """FITGAP_SQLITE_JOURNAL, checked: a launch checks it before anything is written."""
    mode = os.environ.get("FITGAP_SQLITE_JOURNAL", "wal")
    if mode not in JOURNAL_MODES:
        raise UsageError(f"FITGAP_SQLITE_JOURNAL must be one of {list(JOURNAL_MODES)}, but got {mode!r}")
    return mode


def use_wal(*paths: Path | None) -> None:
    """Put these existing databases in the journal mode of `journal_mode()` (None is skipped), and have this
    process's connections reopened with the settings of that mode. Call it with no other connection to them in a
    transaction (under the creation lock); a database that is busy stays as it is."""
    for path in filter(None, paths):
        if not path.exists():
            continue
        connection = sqlite3.connect(path, timeout=5)
        try:
            connection.execute(f"PRAGMA journal_mode={journal_mode()}")
        except sqlite3.DatabaseError:
            pass  # busy, or read-only: the default journal is as sound, only slower
        finally:
            connection.close()
    release()  # connections opened before are on the rollback journal's synchronous=FULL: they reconnect


def tune() -> None:
    """Set `synchronous=NORMAL` on this process's SQLite connections to WAL databases, and track its engines."""
    global _tuned
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
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":  # rollback journals keep FULL
            cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError:
        pass  # a read-only connection reads the file as it is
    finally:
        cursor.close()
