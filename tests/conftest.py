"""Shared fixtures: a template workspace (creating MLflow's store costs seconds, copying it milliseconds)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_finish(session):
    """Once the test modules are imported: tests that train in this process get the garbage collector the executor
    process has after importing TensorFlow (`fitgap.training.process._freeze_imported_objects`)."""
    if "tensorflow" in sys.modules:
        from fitgap.training.process import _freeze_imported_objects

        _freeze_imported_objects()


@pytest.fixture(scope="session")
def template_workspace(tmp_path_factory) -> Path:
    from fitgap.studies.stores import Stores
    from fitgap.studies.study import open_storage
    from fitgap.tracking.mlflow_sink import MlflowSink
    from fitgap.tracking.results import ResultsDB

    workspace = tmp_path_factory.mktemp("template") / "ws"
    stores = Stores.resolve(workspace=workspace)
    workspace.mkdir()
    open_storage(stores.storage)
    MlflowSink(stores.tracking_uri).client.search_experiments()
    ResultsDB(stores.results_url).close()
    return workspace


@pytest.fixture
def workspace(template_workspace, tmp_path) -> Path:
    """A fresh workspace with all three stores created and empty."""
    target = tmp_path / "ws"
    shutil.copytree(template_workspace, target)
    return target


def fitgap(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real `fitgap` command in a process of its own."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FITGAP_", "MLFLOW_"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "fitgap.studies.cli", *args], cwd=cwd or ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def journal_storage(workspace: Path):
    """A workspace's Optuna storage as the README tells users to open it, with Optuna's own classes."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(workspace / "optuna.journal")))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: equal snapshots mean nothing was written.
    This process's own store connections are closed first, so that its WAL databases are at rest (their logs
    folded back in, as when the last connection of any process closes)."""
    from fitgap import sqlite

    sqlite.release()
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path):
    """A real `mlflow server` on a free port, on `backend_store_uri`: yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the MLflow server did not start"
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
