"""Points, params, tags and a run's end written straight into MLflow's tables (`tracking.mlflow_tables`) read back,
through MLflow's own client and its tracking server's REST API (what the UI calls), exactly as the same written by
`log_batch` and `set_terminated`."""

import math
import os
import uuid

import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from fitgap.tracking.mlflow_tables import RunTables

from conftest import mlflow_server


def points(first_epoch: int, epochs: int) -> list[Metric]:
    out = []
    for e in range(first_epoch, first_epoch + epochs):
        out += [Metric("loss", 1 / (e + 1), 1_700_000_000_000 + e, e),
                Metric("val_loss", 2 / (e + 1), 1_700_000_000_000, e)]
    out += [Metric("odd", math.nan, 1, first_epoch), Metric("big", math.inf, 1, first_epoch),
            Metric("small", -math.inf, 1, first_epoch), Metric("tie", float(first_epoch), 5, 3)]
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_database(request, tmp_path):
    """A fresh MLflow database: an SQLite file, or a database on the PostgreSQL server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlflow.db'}"
        return
    server = os.environ.get("FITGAP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
    name = f"fitgap_tables_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


PARAMS = [Param("learning_rate", "0.05"), Param("activation", "relu"), Param("hidden", "[11]")]
TAGS = [RunTag("fitgap.state", "COMPLETE"), RunTag("fitgap.verdict", "good fit"), RunTag("fitgap.verdict", "overfit")]
START, END = 1_700_000_000_000, 1_700_000_100_000


@pytest.fixture
def two_runs(tracking_database):
    """Two runs created alike (a tag that the end replaces): one by MLflow's client, one by `RunTables`, each then
    written the same way: live points, then the rest with the params, tags and end, as a trial is written."""
    uri = tracking_database
    client = MlflowClient(uri)
    experiment = client.create_experiment("tables")
    by_api = client.create_run(experiment, START, {"fitgap.state": "RUNNING"}, "t001 lr=0.05").info.run_id
    tables = RunTables.open(uri)
    assert tables is not None, "the installed MLflow's schema is not verified: check it and add its revision"
    created = tables.create_run(experiment, "t001 lr=0.05", {"fitgap.state": "RUNNING"}, START)
    by_tables = created.run_id
    assert created == client.get_run(by_tables).info  # what the coordinator keeps of it: id, artifact URI
    client.log_batch(by_api, metrics=points(0, 3))
    assert tables.write(by_tables, points(0, 3))
    client.log_batch(by_api, metrics=points(3, 4), params=PARAMS, tags=TAGS)
    client.set_terminated(by_api, "FINISHED", end_time=END)
    assert tables.finish(by_tables, points(3, 4), PARAMS, TAGS, "FINISHED", END)
    return uri, client, by_api, by_tables


def rows(uri: str, table: str, run_id: str) -> list[tuple]:
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = :r "
                                     "ORDER BY key, step, timestamp, value"), {"r": run_id}).all()
    engine.dispose()
    return [tuple(row) for row in found]


def test_the_rows_are_those_log_batch_writes(two_runs):
    uri, _, by_api, by_tables = two_runs
    for table in ("metrics", "latest_metrics"):
        assert rows(uri, table, by_tables) == rows(uri, table, by_api)
    assert len(rows(uri, "metrics", by_api)) == 2 * 7 + 8


def test_mlflow_s_client_reads_both_runs_alike(two_runs):
    _, client, by_api, by_tables = two_runs
    api, tables = client.get_run(by_api), client.get_run(by_tables)
    assert tables.data.params == api.data.params == {p.key: p.value for p in PARAMS}
    assert tables.data.tags == api.data.tags and tables.data.tags["fitgap.state"] == "COMPLETE"
    assert tables.data.tags["fitgap.verdict"] == "overfit" and tables.data.tags["mlflow.runName"] == "t001 lr=0.05"
    assert (tables.info.status, tables.info.end_time) == (api.info.status, api.info.end_time) == ("FINISHED", END)
    assert (tables.info.run_name, tables.info.user_id, tables.info.start_time) == \
        (api.info.run_name, api.info.user_id, api.info.start_time) == ("t001 lr=0.05", "unknown", START)
    assert tables.info.artifact_uri == api.info.artifact_uri.replace(by_api, by_tables)
    api, tables = client.get_run(by_api).data.metrics, client.get_run(by_tables).data.metrics
    assert {k: repr(v) for k, v in tables.items()} == {k: repr(v) for k, v in api.items()}  # nan != nan
    assert tables["loss"] == pytest.approx(1 / 7) and math.isnan(tables["odd"])
    for key in ("loss", "val_loss", "odd", "big", "tie"):
        history = [(m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(by_tables, key)]
        assert history == [(m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(by_api, key)]
    experiment = client.get_run(by_api).info.experiment_id
    ordered = client.search_runs([experiment], "metrics.loss < 1", order_by=["metrics.val_loss ASC"])
    assert {r.info.run_id for r in ordered} == {by_api, by_tables}
    found = client.search_runs([experiment], "params.activation = 'relu' and tags.`fitgap.verdict` = 'overfit' and "
                                             "attributes.status = 'FINISHED'")
    assert {r.info.run_id for r in found} == {by_api, by_tables}


def test_the_server_s_ui_endpoints_read_both_runs_alike(two_runs, tmp_path):
    uri, _, by_api, by_tables = two_runs

    def history(run_id):  # the UI's chart call
        answer = requests.get(f"{base}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                              params={"run_ids": run_id, "metric_key": "loss", "max_results": 320}, timeout=30)
        answer.raise_for_status()
        return [(m["step"], m["timestamp"], m["value"]) for m in answer.json()["metrics"]]

    def run(run_id):  # the run page's call, less the fields that differ by nature
        answer = requests.get(f"{base}/ajax-api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
        answer.raise_for_status()
        found = answer.json()["run"]
        for field in ("run_id", "run_uuid"):
            assert found["info"].pop(field) == run_id
        assert found["info"].pop("artifact_uri").endswith(f"/{run_id}/artifacts")
        found["data"]["tags"] = sorted(found["data"]["tags"], key=lambda t: t["key"])
        found["data"]["params"] = sorted(found["data"]["params"], key=lambda p: p["key"])
        found["data"]["metrics"] = sorted(found["data"]["metrics"], key=lambda m: m["key"])
        return found

    with mlflow_server(uri, tmp_path / "artifacts") as base:
        assert history(by_tables) == history(by_api) and len(history(by_api)) == 7
        assert run(by_tables) == run(by_api)


def test_a_changed_param_or_a_run_name_tag_is_left_to_mlflow_s_client_and_a_bad_key_is_mlflow_s_error(two_runs):
    uri, client, _, by_tables = two_runs
    tables = RunTables.open(uri)
    before = client.get_run(by_tables).data
    assert tables.finish(by_tables, points(9, 1), [Param("activation", "tanh")]) is False  # nothing written
    assert tables.finish(by_tables, points(9, 1), tags=[RunTag("mlflow.runName", "renamed")]) is False
    after = client.get_run(by_tables).data
    assert (after.params, after.tags, repr(after.metrics)) == (before.params, before.tags, repr(before.metrics))
    with pytest.raises(MlflowException, match="Invalid value"):
        tables.finish(by_tables, [], [Param("bad\nkey", "1")])
    assert tables.finish(by_tables, [], [Param("activation", "relu"), Param("width", "11")])  # same value: kept
    assert client.get_run(by_tables).data.params == {**before.params, "width": "11"}


def test_an_unverified_schema_an_inactive_run_or_experiment_falls_back_to_mlflow_s_client(two_runs):
    uri, client, by_api, _ = two_runs
    tables = RunTables.open(uri)
    experiment = client.get_run(by_api).info.experiment_id
    assert tables.create_run(experiment, "named twice", {"mlflow.runName": "other"}, START) is None
    client.delete_run(by_api)
    assert tables.write(by_api, points(9, 1)) is False  # log_batch then raises MLflow's error
    client.delete_experiment(experiment)
    assert tables.create_run(experiment, "t002", {}, START) is None  # create_run then raises MLflow's error
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'unknown'"))
    engine.dispose()
    assert RunTables.open(uri) is None
    assert RunTables.open("http://127.0.0.1:5000") is None and RunTables.open("./mlruns") is None
