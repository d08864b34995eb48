"""Where a study lives: the Optuna storage, the MLflow store and the results database.

By default all three are SQLite files in one workspace folder; each can point elsewhere (PostgreSQL, an MLflow
tracking server). Credentials in URLs are never printed: use `tracking.results.redact`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tracking.results import redact

DEFAULT_WORKSPACE = "fitgap-data"


class StoreError(Exception):
    """A store cannot be opened, or holds no such study."""

    exit_code = 2


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
        """The local SQLite files that don't exist yet: reading commands must not create them."""
        return [url for url in (self.storage, self.results_url) if _sqlite_path(url) and not _sqlite_path(url).exists()]

    def describe(self) -> str:
        return f"storage {redact(self.storage)}, tracking {redact(self.tracking_uri)}, results {redact(self.results_url)}"


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None
