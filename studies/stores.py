"""Coordinator side: where a study lives — the Optuna storage, the MLflow store and the results database.

By default they are files in one workspace folder: Optuna's journal (`studies.journal`), MLflow's and the results'
SQLite databases; each can point elsewhere (PostgreSQL, an MLflow tracking server). Credentials in URLs are never
printed: use `tracking.results.redact`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from fitgap import sqlite
from fitgap.errors import UsageError, scrub
from fitgap.studies import journal
from fitgap.tracking.results import error_line, redact, sqlite_path

# What `--tracking-uri` takes: MLflow's database stores (SQLAlchemy URLs), a tracking server, a local folder
TRACKING_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
REACH_TIMEOUT_S = 10

DEFAULT_WORKSPACE = "fitgap-data"


class StoreError(UsageError):
    """A store cannot be opened, or holds no such study."""


@dataclass(frozen=True)
class Stores:
    workspace: Path
    storage: str  # Optuna: an RDB URL, or the path of a journal file
    tracking_uri: str  # MLflow
    results_url: str  # SQLAlchemy URL of the results database

    @classmethod
    def resolve(cls, workspace=None, storage=None, tracking_uri=None, results_url=None) -> "Stores":
        """Options win over FITGAP_* variables (the CLI reads those), which win over the workspace defaults."""
        ws = Path(workspace or os.environ.get("FITGAP_WORKSPACE") or DEFAULT_WORKSPACE).absolute()
        earlier = ws / "optuna.db"  # the default of workspaces created before the journal
        stores = cls(
            workspace=ws,
            storage=storage or (f"sqlite:///{earlier}" if earlier.exists() else str(ws / "optuna.journal")),
            tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ws / 'mlflow.db'}",
            results_url=results_url or f"sqlite:///{ws / 'results.db'}",
        )
        sqlite.tune()  # before any store is opened
        return stores

    @property
    def artifact_root(self) -> Path | None:
        """Artifacts of local MLflow stores go in the workspace (MLflow would use the current directory)."""
        return self.workspace / "artifacts" if self.tracking_uri.startswith(("sqlite:", "file:", "/")) else None

    def check(self) -> None:
        """Reach every store that is not a local file, before anything is created anywhere: a wrong or unreachable
        URL is one line naming its option, and leaves nothing behind."""
        if journal_path(self.storage) is None:
            _reach_database("--storage", self.storage)
        _reach_database("--results-url", self.results_url)
        scheme = self.tracking_uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in self.tracking_uri else ""
        if scheme in ("http", "https"):
            _reach_server(self.tracking_uri)
        elif scheme in TRACKING_DATABASES:
            _reach_database("--tracking-uri", self.tracking_uri)
        elif scheme not in ("", "file"):
            raise StoreError(f"`--tracking-uri`: {redact(self.tracking_uri)} is not a tracking URI fitgap takes "
                             f"({', '.join(TRACKING_DATABASES)}, http(s) or file URLs, or a folder)")

    @property
    def storage_file(self) -> Path | None:
        """The Optuna storage's local file: a journal, or an SQLite database."""
        return journal_path(self.storage) or sqlite_path(self.storage)

    def missing(self) -> list[str]:
        """The Optuna storage when it is a local file that doesn't exist yet: then there are no studies, and reading
        commands must not create it. Only the storage counts: studies live there, and a results database that is
        missing (say the workspace's default beside a PostgreSQL storage) says nothing about them."""
        path = self.storage_file
        return [self.storage] if path and not path.exists() else []

    @property
    def exclusive(self) -> bool:
        """Whether a coordinator holding `coordinator_lock` is the only one alive for these stores (a local file)."""
        return self.storage_file is not None

    @contextlib.contextmanager
    def coordinator_lock(self):
        """One coordinator per workspace of local stores: SQLite is no store for several writing processes (Optuna's
        FAQ; MLflow fails with "database is locked"). A second launch is refused at once; server-grade stores are
        shared freely."""
        if not self.exclusive:
            yield
            return
        self.workspace.mkdir(parents=True, exist_ok=True)
        with open(self.workspace / ".coordinator.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise StoreError(
                    f"workspace {self.workspace} is in use by another fitgap coordinator (pid {holder}); SQLite takes "
                    "one writer: to run several coordinators, put the stores on PostgreSQL and an MLflow server "
                    "(README: Scaling out)") from None
            lock.truncate(0)
            lock.write(str(os.getpid()))
            lock.flush()
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def creation_lock(self):
        """Held (waiting for it) while the workspace's SQLite stores are created or migrated, by a launch and by
        `fitgap ui`: MLflow's migrations, run by two processes at once, leave its database half-migrated."""
        if not self.storage_file and not sqlite_path(self.tracking_uri):
            yield
            return
        self.workspace.mkdir(parents=True, exist_ok=True)
        folder = os.open(self.workspace, os.O_RDONLY)  # the folder itself is the lock: nothing is written
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # which unlocks it

    def describe(self) -> str:
        return f"storage {redact(self.storage)}, tracking {redact(self.tracking_uri)}, results {redact(self.results_url)}"


def journal_path(storage: str) -> Path | None:
    """The journal file a `--storage` value names (a path ending in .journal or .log), else None."""
    return Path(storage).absolute() if "://" not in storage and storage.endswith(journal.SUFFIXES) else None


def _reach_database(option: str, url: str) -> None:
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        journal_too = " or an Optuna journal file (.journal, .log)" if option == "--storage" else ""
        raise StoreError(f"`{option}`: not a database URL{journal_too}: {scrub(url)[:200]}") from None
    if sqlite_path(parsed) is not None or parsed.get_backend_name() == "sqlite":
        return  # a local file: created on first use
    connect = {"connect_timeout": REACH_TIMEOUT_S} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
    try:
        engine = create_engine(parsed, connect_args=connect)
        with engine.connect():
            pass
        engine.dispose()
    except (SQLAlchemyError, ImportError, ValueError, TypeError) as exc:  # no such dialect or driver, unreachable
        raise StoreError(f"`{option}`: cannot reach {redact(url)}: {scrub(error_line(exc))}") from None


def _reach_server(uri: str) -> None:
    import requests

    try:
        answer = requests.get(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_S)
    except requests.RequestException as exc:
        raise StoreError(f"`--tracking-uri`: cannot reach the MLflow server at {redact(uri)} "
                         f"({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise StoreError(f"`--tracking-uri`: the MLflow server at {redact(uri)} answered {answer.status_code} "
                         f"{answer.reason} to /health")
