"""Coordinator side: `fitgap ui` — the MLflow UI over a workspace's tracking store, one page per study.

Local stores are served by a real `mlflow server` child, started only once everything is known to be right (the
workspace exists, the study exists, the port is free), so that a mistake writes nothing. Its store URL travels in
its environment, never on its command line (which every local user can read in `ps`). The MLflow UI has no
authentication: serving beyond this machine is said plainly.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Callable

from fitgap.errors import RunError
from fitgap.studies.stores import StoreError, Stores
from fitgap.tracking.results import redact, sqlite_path

LOOPBACK = ("localhost",)


def serve(stores: Stores, study: str | None, host: str, port: int, workers: int, say: Callable[[str, bool], None]):
    """Print each study's runs page (say(line, to_stderr)) and serve them until Ctrl-C or SIGTERM."""
    stores.check()
    tracking_file = sqlite_path(stores.tracking_uri)
    if tracking_file is not None and not tracking_file.exists():  # opening it would create an empty store
        raise StoreError(f"no MLflow store at {tracking_file}: launch a study first, or pass the right --workspace")
    remote = stores.tracking_uri.startswith(("http:", "https:"))  # a tracking server serves them already
    if not remote and _answers(host, port):
        raise StoreError(f"`--port`: {port} on {host} is already in use by another server: pick a free port")
    with stores.creation_lock():  # a launch creating the store at this moment finishes first
        from fitgap.tracking.mlflow_sink import MlflowSink

        sink = MlflowSink(stores.tracking_uri, stores.artifact_root)
        names = [study] if study else [e.name for e in sink.client.search_experiments() if e.name != "Default"]
        pages = {name: sink.experiment(name, create=False) for name in names}
    if study and pages[study] is None:
        raise StoreError(f"unknown study {study!r}: no MLflow experiment of that name in {redact(stores.tracking_uri)}")
    if remote:
        for name, experiment_id in pages.items():
            say(f"{name}: {runs_page(redact(stores.tracking_uri), experiment_id)}", False)
        return
    if not _is_loopback(host):
        say(f"warning: serving on {host}: the MLflow UI has no authentication, so anyone who reaches this port can "
            "read, change and delete every run; put an authenticating proxy in front (README: Security)", True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers)]
    env = os.environ | {"MLFLOW_BACKEND_STORE_URI": stores.tracking_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = stores.workspace / "logs" / "mlflow-ui.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    base = f"http://{_url_host(host)}:{port}"
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # so that the server goes with us
    try:
        if not _wait_until_up(f"{base}/health", server):
            raise RunError(f"the MLflow server did not answer on {base}: see {log}")
        for name, experiment_id in pages.items():
            say(f"{name}: {runs_page(base, experiment_id)}", False)
        say(f"MLflow UI at {base} (Ctrl-C to stop)", False)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait()
        signal.signal(signal.SIGTERM, previous)


def runs_page(base: str, experiment_id: str) -> str:
    """The experiment's runs in MLflow's machine-learning mode: MLflow 3 opens on its GenAI pages otherwise."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK


def _url_host(host: str) -> str:
    """Where a browser on this machine reaches a server listening on `host`."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _answers(host: str, port: int) -> bool:
    """Whether something already listens there (then a new server would fail, or worse, the pages printed would
    open the other server's)."""
    try:
        with socket.create_connection((_url_host(host).strip("[]"), port), timeout=1):
            return True
    except OSError:
        return False


def _wait_until_up(url: str, server: subprocess.Popen, seconds: float = 60) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return server.poll() is None
        except OSError:
            time.sleep(0.3)
    return False
