"""Several machines: two `fitgap worker` processes on one study, with Optuna and the results on the real PostgreSQL
and MLflow behind a real `mlflow server` process. (CI starts the PostgreSQL server; these tests fail without it.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid

import optuna
import psycopg
import pytest

from fitgap.tracking.results import ResultsDB

from conftest import mlflow_server

from conftest import fitgap

pytestmark = pytest.mark.tensorflow

SERVER = os.environ.get("FITGAP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
SECRET = "s3cret-pw"  # trust auth ignores it: it is here to prove that no output or tag ever shows it


@pytest.fixture(scope="module")
def databases():
    names = {role: f"fitgap_{role}_{uuid.uuid4().hex[:8]}" for role in ("optuna", "results", "mlflow")}
    admin = SERVER.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names.values():
            connection.execute(f'CREATE DATABASE "{name}"')
    with_password = SERVER.replace("postgres@", f"postgres:{SECRET}@")
    yield {role: f"{with_password}/{name}" for role, name in names.items()}
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names.values():
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tracking_server(databases, tmp_path_factory):
    with mlflow_server(databases["mlflow"], tmp_path_factory.mktemp("artifacts")) as url:
        yield url


def test_two_workers_share_one_study_and_lose_nothing(databases, tracking_server, tmp_path):
    spec = tmp_path / "shared.yaml"
    # One trial at a time per worker (keras): a fused worker would take the whole budget as one batch.
    spec.write_text("name: shared\ndataset: {name: dot}\nmodel: {hidden: [4]}\nepochs: 60\ntrials: 6\nexecutor: keras\n"
                    "objective: [{metric: val_accuracy}]\nseed: 5\n"
                    "search:\n  learning_rate: {type: float, low: 0.01, high: 0.3, log: true}\n")
    stores = ["--storage", databases["optuna"], "--results-url", databases["results"],
              "--tracking-uri", tracking_server]
    created = fitgap("create", str(spec), *stores, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    workers = [subprocess.Popen([sys.executable, "-m", "fitgap.studies.cli", "worker", "shared", "--cpu-slots", "1",
                                 *stores], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=databases["optuna"]).get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert len({t.params["learning_rate"] for t in trials}) == 6  # no duplicate parameter sets
    best = max(t.value for t in trials)
    kept = {int(p.stem.removeprefix("trial-")) for p in (tmp_path / "fitgap-data/models/shared").glob("*.keras")}
    assert kept and {trials[n].value for n in kept} == {best}, "both workers cut the shared folder to the best model"
    assert all("trial" in err for _, err in outputs), "both workers ran trials"
    rows = ResultsDB(databases["results"]).trials("shared")
    assert [r["number"] for r in rows] == list(range(6)) and {r["state"] for r in rows} == {"COMPLETE"}

    def call(path, body):
        request = urllib.request.Request(tracking_server + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    experiment = json.loads(urllib.request.urlopen(
        f"{tracking_server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=shared").read())["experiment"]
    runs = call("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    children = [r for r in runs if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
    assert sorted(r["info"]["status"] for r in children) == ["FINISHED"] * 6
    everything = json.dumps(runs) + created.stdout + created.stderr + "".join(out + err for out, err in outputs)
    assert SECRET not in everything
