"""Coordinator side: where a study lives — the Optuna storage, the MLflow store and the results database.

By default all three are SQLite files in one workspace folder; each can point elsewhere (PostgreSQL, an MLflow
tracking server). Credentials in URLs are never printed: use `tracking.results.redact`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from fitgap.errors import UsageError
from fitgap.tracking.results import redact, sqlite_path

DEFAULT_WORKSPACE = "fitgap-data"


class StoreError(UsageError):
    """A store cannot be opened, or holds no such study."""


@dataclass(frozen=True)
class Stores:
    workspace: Path
    storage: str  # Optuna RDB URL
    tracking_uri: str  # MLflow
    results_url: str  # SQLAlchemy URL of the results database

    @classmethod
    def resolve(cls, workspace=None, storage=None, tracking_uri=None, results_url=None) -> "Stores":
        """Options win over FITGAP_* variables (the CLI reads those), which win over the workspace defaults."""
        ws = Path(workspace or os.environ.get("FITGAP_WORKSPACE") or DEFAULT_WORKSPACE).absolute()
        return cls(
            workspace=ws,
            storage=storage or f"sqlite:///{ws / 'optuna.db'}",
            tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ws / 'mlflow.db'}",
            results_url=results_url or f"sqlite:///{ws / 'results.db'}",
        )

    @property
    def artifact_root(self) -> Path | None:
        """Artifacts of local MLflow stores go in the workspace (MLflow would use the current directory)."""
        return self.workspace / "artifacts" if self.tracking_uri.startswith(("sqlite:", "file:", "/")) else None

    def missing(self) -> list[str]:
        """The Optuna storage when it is a local SQLite file that doesn't exist yet: then there are no studies, and
        reading commands must not create it. Only the storage counts: studies live there, and a results database
        that is missing (say the workspace's default beside a PostgreSQL storage) says nothing about them."""
        path = sqlite_path(self.storage)
        return [self.storage] if path and not path.exists() else []

    @property
    def exclusive(self) -> bool:
        """Whether a coordinator holding `coordinator_lock` is the only one alive for these stores (SQLite)."""
        return sqlite_path(self.storage) is not None

    @contextlib.contextmanager
    def coordinator_lock(self):
        """One coordinator per SQLite workspace: SQLite is no store for several writing processes (Optuna's FAQ;
        MLflow fails with "database is locked"). A second launch is refused at once; server-grade stores are shared
        freely."""
        if not sqlite_path(self.storage):
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

    def describe(self) -> str:
        return f"storage {redact(self.storage)}, tracking {redact(self.tracking_uri)}, results {redact(self.results_url)}"
