"""The results database contract, run against real SQLite and real PostgreSQL (which must be reachable)."""

from __future__ import annotations

import json
import logging
import math
import os
import uuid

import pytest
import sqlalchemy as sa

from fitgap.sweeps.vocabulary import EPOCH_METRICS
from fitgap.tracking import results
from fitgap.tracking.records import EpochRecord, LiveRecord, TrialRecord
from fitgap.tracking.results import ResultsDB, ResultsError, redact

# The server the PostgreSQL tests use (trust auth); they fail, not skip, when it is down.
POSTGRES_ADMIN_URL = os.environ.get("FITGAP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_url():
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"fitgap_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {redact(POSTGRES_ADMIN_URL)}: {exc.orig}")
    yield sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(url):
    with ResultsDB(url) as db:
        yield db


@pytest.fixture
def raw(url):
    """A plain engine on the same database, to look at the tables behind the API."""
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def record(number=0, study="s", n_epochs=100, params=None, **changes) -> TrialRecord:
    epochs = tuple(
        EpochRecord(
            trial=number,
            epoch=i,
            metrics={
                **{m: 1.0 / (i + 1) + k / 7 for k, m in enumerate(EPOCH_METRICS)},
                "f1_score": 0.5,  # not a column: ignored
            },
            ended_at=1_700_000_001.0 + i / 8,
        )
        for i in range(n_epochs)
    )
    fields = dict(
        study=study,
        number=number,
        state="COMPLETE",
        params={"learning_rate": 0.05, "hidden": [11, 4], "staircase": True, "regularizer": "l2", "epochs": n_epochs}
        if params is None
        else params,
        values=(0.25, 0.9),
        best_epoch=n_epochs // 2 if n_epochs else None,
        epochs=epochs,
        complexity={"params_total": 45, "params_trainable": 45, "macs": 3_000_000_000},
        seed=7,
        device="cpu",
        slot=1,
        started_at=1_700_000_000.25,
        finished_at=1_700_000_012.75,
        mlflow_run_id="abc123",
    )
    return TrialRecord(**{**fields, **changes})


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


def test_round_trip_of_a_trial_with_100_epochs(db):
    rec = record(number=3)
    db.write_trial(rec)

    [row] = db.trials("s")
    assert (row["study"], row["number"], row["state"], row["reason"]) == ("s", 3, "COMPLETE", None)
    assert row["value"] == 0.25 and row["values_json"] == "[0.25, 0.9]"
    assert row["learning_rate"] == 0.05 and row["staircase"] is True and row["regularizer"] == "l2"
    assert row["hidden"] == "[11, 4]" and row["epochs"] == 100
    assert (row["params_total"], row["params_trainable"], row["macs"]) == (45, 45, 3_000_000_000)
    assert row["best_epoch"] == 50
    assert all(row[f"best_{m}"] == rec.best[m] and row[f"final_{m}"] == rec.final[m] for m in EPOCH_METRICS)
    assert (row["seed"], row["device"], row["slot"], row["mlflow_run_id"]) == (7, "cpu", 1, "abc123")
    assert (row["started_at"], row["finished_at"], row["duration_s"]) == (1_700_000_000.25, 1_700_000_012.75, 12.5)

    stored = db.epochs("s", 3)
    assert [e["epoch"] for e in stored] == list(range(100))
    assert stored == [{"epoch": e.epoch, **{m: e.metrics[m] for m in EPOCH_METRICS}, "ended_at": e.ended_at}
                      for e in rec.epochs]
    assert db.params("s", 3) == rec.params


def test_rewriting_a_trial_replaces_it(db, raw):
    db.write_trial(record(number=1, params={"learning_rate": 0.1, "momentum": 0.9}))
    db.write_trial(record(number=2))
    db.write_trial(record(number=1, n_epochs=5, state="PRUNED", reason="pruned", params={"learning_rate": 0.2}))

    assert [(r["number"], r["state"]) for r in db.trials("s")] == [(1, "PRUNED"), (2, "COMPLETE")]
    assert db.trials("s")[0]["learning_rate"] == 0.2
    assert db.params("s", 1) == {"learning_rate": 0.2}  # the old `momentum` row is gone
    assert len(db.epochs("s", 1)) == 5
    assert count(raw, "trials") == 2
    assert count(raw, "epochs") == 5 + 100
    assert count(raw, "trial_params") == 1 + len(record().params)


def test_a_param_without_a_column_is_only_in_trial_params(db, raw):
    conv = [{"filters": 8, "kernel": 3}]
    db.write_trial(record(params={"learning_rate": 0.05, "image_shape": 64, "conv": conv, "momentum": 0.9}))

    [row] = db.trials("s")
    assert row["learning_rate"] == 0.05 and row["momentum"] == 0.9
    assert "image_shape" not in row and "conv" not in row
    with raw.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT name, value_num FROM trial_params")).all())
    assert stored == {"learning_rate": 0.05, "image_shape": 64, "conv": None, "momentum": 0.9}  # value_num: numbers
    assert db.params("s", 0) == {"learning_rate": 0.05, "image_shape": 64, "conv": conv, "momentum": 0.9}


def test_absent_params_are_null(db):
    db.write_trial(record(params={"learning_rate": 0.05}, values=None, n_epochs=0))

    [row] = db.trials("s")
    assert all(row[name] is None for name in results.PARAM_COLUMNS if name != "learning_rate")
    assert row["value"] is None and row["values_json"] is None and row["best_epoch"] is None
    assert all(row[f"best_{m}"] is None and row[f"final_{m}"] is None for m in EPOCH_METRICS)
    assert db.epochs("s", 0) == []


def test_a_nan_metric_is_stored_as_null_on_every_backend(db):
    nan_epoch = EpochRecord(trial=0, epoch=0, metrics={"loss": math.nan, "accuracy": 0.5})
    db.write_trial(record(epochs=(nan_epoch,), best_epoch=0, values=(math.nan,)))

    assert db.epochs("s", 0)[0]["loss"] is None and db.epochs("s", 0)[0]["accuracy"] == 0.5
    assert db.trials("s")[0]["final_loss"] is None and db.trials("s")[0]["value"] is None


def test_only_finished_trials_are_stored(db):
    with pytest.raises(ResultsError, match="RUNNING"):
        db.write_trial(record(state="RUNNING"))
    assert db.trials("s") == []


def test_migrations_use_their_own_version_table(db, raw):
    tables = set(sa.inspect(raw).get_table_names())
    assert {"trials", "trial_params", "epochs", "fitgap_alembic_version"} <= tables
    assert "alembic_version" not in tables
    with raw.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM fitgap_alembic_version")).scalars().all()
    assert versions == [results.SCHEMA_REVISION]


def test_reopening_does_not_run_alembic(url, monkeypatch):
    def no_alembic(conn):
        raise AssertionError("Alembic ran")

    monkeypatch.setattr(results, "_migrate", no_alembic)
    with pytest.raises(AssertionError, match="Alembic ran"):
        ResultsDB(url)  # a new database does need migrating...
    monkeypatch.undo()
    with ResultsDB(url) as db:
        db.write_trial(record())

    monkeypatch.setattr(results, "_migrate", no_alembic)
    for create in (True, False):  # ...one at head does not
        with ResultsDB(url, create=create) as db:
            assert [r["number"] for r in db.trials("s")] == [0]


def test_migrating_leaves_logging_alone(tmp_path):
    logger = logging.getLogger("fitgap.test")
    handlers = list(logging.getLogger().handlers)
    with ResultsDB(f"sqlite:///{tmp_path / 'results.db'}"):
        pass
    assert not logger.disabled  # logging.config.fileConfig() would have disabled it
    assert logging.getLogger().handlers == handlers


def test_schema_matches_the_migration(db, raw):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with raw.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": results.VERSION_TABLE})
        assert compare_metadata(context, results.metadata) == []


def test_delete_study_cascades(db, raw):
    for number in (0, 1):
        db.write_trial(record(number=number, study="a"))
    db.write_trial(record(study="b", n_epochs=3))

    assert db.delete_study("a") == 2
    assert db.trials("a") == [] and db.epochs("a", 0) == [] and db.params("a", 0) == {}
    assert count(raw, "epochs") == 3  # the cascade took a's epochs...
    assert count(raw, "trial_params") == len(record().params)  # ...and params, and left b's
    assert len(db.trials("b")) == 1
    assert db.delete_study("a") == 0


def test_create_false_on_a_missing_sqlite_file_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'nowhere' / 'results.db'}"
    with pytest.raises(ResultsError, match="no results database at sqlite:///"):
        ResultsDB(url, create=False)
    assert list(tmp_path.iterdir()) == []


def test_create_false_refuses_a_database_without_the_schema(tmp_path):
    (tmp_path / "empty.db").touch()
    with pytest.raises(ResultsError, match="create=True"):
        ResultsDB(f"sqlite:///{tmp_path / 'empty.db'}", create=False)


def test_an_optuna_storage_is_not_taken_for_a_results_database(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'optuna.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE trials (trial_id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(ResultsError, match="not fitgap's"):
        ResultsDB(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_redact_hides_passwords():
    assert redact("postgresql+psycopg://fit:s3cret@db.example:5432/results") == (
        "postgresql+psycopg://fit:***@db.example:5432/results"
    )
    assert redact("postgresql://fit@db/results?password=s3cret&sslmode=require") == (
        "postgresql://fit@db/results?password=***&sslmode=require"
    )
    assert redact("sqlite:///fitgap-data/results.db") == "sqlite:///fitgap-data/results.db"
    assert "s3cret" not in redact("not a url s3cret")


def test_a_connection_error_names_the_database_without_its_password():
    with pytest.raises(ResultsError) as error:
        ResultsDB("postgresql://fit:s3cret@127.0.0.1:1/results")
    assert "postgresql://fit:***@127.0.0.1:1/results" in str(error.value)
    assert "s3cret" not in str(error.value)


def test_the_schema_revision_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(results.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == results.SCHEMA_REVISION


def test_test_metrics_repeats_and_the_new_params_have_columns(db):
    params = {"learning_rate": 0.05, "optimizer": "sgdm", "momentum": 0.8, "dropout": 0.25, "decay_unit": "step",
              "initializer": "glorot_uniform", "model_kind": "cnn", "standardize": True, "early_stopping": 5}
    test = {"test_loss": 0.5, "test_ce": 0.5, "test_accuracy": 0.875}
    db.write_trial(record(params=params, test_metrics=test, repeats=3, value_std=0.0125,
                          complexity={"params_total": 50, "params_trainable": 46, "params_non_trainable": 4,
                                      "macs": 7}))

    [row] = db.trials("s")
    assert {name: row[name] for name in params} == params
    assert (row["test_loss"], row["test_ce"], row["test_accuracy"]) == (0.5, 0.5, 0.875)
    assert row["test_mse"] is None and row["test_bce"] is None  # not measured for this task
    assert (row["repeats"], row["value_std"]) == (3, 0.0125)
    assert (row["params_total"], row["params_trainable"], row["params_non_trainable"]) == (50, 46, 4)


def test_a_regression_trial_leaves_the_classification_metrics_null(db):
    metrics = {"loss": 0.3, "val_loss": 0.4, "mse": 0.3, "val_mse": 0.4, "mae": 0.5, "val_mae": 0.6, "loss_gap": 0.1,
               "reg_loss": 0.0, "lr": 0.01}
    db.write_trial(record(epochs=(EpochRecord(trial=0, epoch=0, metrics=metrics),), best_epoch=0))

    [row] = db.trials("s")
    assert (row["best_val_mse"], row["final_mae"]) == (0.4, 0.5)
    assert row["best_val_accuracy"] is None and row["final_bce"] is None and row["final_accuracy_gap"] is None
    [epoch] = db.epochs("s", 0)
    assert epoch["val_mae"] == 0.6 and epoch["accuracy"] is None


def database_at(tmp_path, revision: str, columns: str, values: str, epoch_loss: float | None = None) -> str:
    """The URL of a results database migrated only to `revision`, holding one trial ('old', 0, COMPLETE, then the
    given columns and values) and, with `epoch_loss`, its epoch 0."""
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(results.MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.execute(sa.text(f"INSERT INTO trials (study, number, state, {columns}) VALUES ('old', 0, 'COMPLETE', "
                             f"{values})"))
        if epoch_loss is not None:
            trial_id = conn.execute(sa.text("SELECT id FROM trials")).scalar()
            conn.execute(sa.text(f"INSERT INTO epochs (trial_id, epoch, loss) VALUES ({trial_id}, 0, {epoch_loss})"))
    engine.dispose()
    return url


def test_a_database_at_0001_is_migrated_keeping_its_trials(tmp_path):
    """A results database created by fitgap's first schema, with a trial in it, opens at the latest revision."""
    url = database_at(tmp_path, "0001", "learning_rate, best_val_bce", "0.1, 0.3", 0.7)

    with ResultsDB(url, create=True) as db:
        [row] = db.trials("old")
        assert (row["learning_rate"], row["best_val_bce"]) == (0.1, 0.3)
        assert row["dropout"] is None and row["best_val_mse"] is None and row["repeats"] is None
        assert db.epochs("old", 0)[0]["loss"] == 0.7 and db.epochs("old", 0)[0]["val_ce"] is None
        db.write_trial(record(study="new", n_epochs=2))
        assert len(db.trials("new")) == 1
    with ResultsDB(url, create=False):  # at head now: opens read-only style
        pass


def test_a_database_at_0002_is_migrated_to_the_diagnosis_columns(tmp_path):
    """0003 adds the diagnosis and executor columns; a trial written before keeps its values and reads NULL there."""
    url = database_at(tmp_path, "0002", "best_gap, repeats", "0.125, 2")

    with ResultsDB(url) as db:
        [row] = db.trials("old")
        assert (row["best_loss_gap"], row["repeats"]) == (0.125, 2)  # renamed by 0006, its value kept
        assert all(row[c] is None for c in ("executor", "verdict", "overfit_epoch", "fit_measure", "final_fit_gap"))


def overfitting_epochs(n=40, onset=15):
    """Training loss falls all along; validation loss bottoms out at `onset` and climbs."""
    return tuple(EpochRecord(trial=0, epoch=i, metrics={
        "loss": 1.0 / (i + 1), "val_loss": 0.3 + 0.01 * (i - onset) ** 2 / 10, "bce": 1.0 / (i + 1),
        "val_bce": 0.3 + 0.01 * (i - onset) ** 2 / 10, "fit_gap": 0.3 + 0.01 * (i - onset) ** 2 / 10 - 1.0 / (i + 1),
        "accuracy": min(1.0, 0.7 + 0.01 * i), "val_accuracy": 0.8}) for i in range(n))


def test_each_trial_is_stored_with_its_diagnosis_and_executor(db):
    db.write_trial(record(epochs=overfitting_epochs(), best_epoch=39, executor="compiled", val_size=60,
                          val_baseline=0.64, per_repeat=({"value": 0.5, "fit_gap": 0.1}, {"value": 0.7, "fit_gap": 0.2})))
    db.write_trial(record(number=1, state="FAIL", epochs=(), best_epoch=None, values=None))

    overfit, failed = db.trials("s")
    assert overfit["executor"] == "compiled" and overfit["verdict"] == "overfit"
    assert overfit["overfit_epoch"] == 15 and overfit["fit_measure"] == "val_bce - bce"
    assert overfit["best_fit_gap"] == pytest.approx(0.3 + 0.01 * 24 ** 2 / 10 - 1 / 40)  # the epoch metric's
    assert overfit["verdict_reason"].startswith("overfit from epoch 15")
    assert (overfit["val_size"], overfit["val_baseline"]) == (60, 0.64)
    assert json.loads(overfit["repeats_json"]) == [{"value": 0.5, "fit_gap": 0.1}, {"value": 0.7, "fit_gap": 0.2}]
    assert failed["verdict"] is None and failed["overfit_epoch"] is None and failed["verdict_reason"] is None
    assert failed["executor"] == "keras" and failed["repeats_json"] is None


def test_a_database_at_0004_is_migrated_renaming_the_loss_gap_and_keeping_the_epochs(tmp_path):
    """0006 renames the trial's own-loss gap (`gap` -> `loss_gap`) in place: values and epochs survive."""
    url = database_at(tmp_path, "0004", "best_gap, final_gap, best_fit_gap, fit_measure",
                      "0.125, 0.25, 0.05, 'accuracy_gap'", 0.7)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE epochs SET gap = 0.5"))
    engine.dispose()

    with ResultsDB(url) as db:
        [row] = db.trials("old")
        assert (row["best_loss_gap"], row["final_loss_gap"]) == (0.125, 0.25)
        assert (row["best_fit_gap"], row["fit_measure"]) == (0.05, "accuracy_gap")  # the old measure, named
        assert row["val_size"] is None and row["repeats_json"] is None
        [epoch] = db.epochs("old", 0)
        assert (epoch["loss"], epoch["loss_gap"], epoch["fit_gap"]) == (0.7, 0.5, None)


def test_a_study_is_linked_to_the_trial_it_started_from(db):
    assert db.parent_of("child") is None
    db.link_study("child", "parent", 7, "path")
    db.link_study("child", "parent", 8, "path")  # linking again replaces
    link = db.parent_of("child")
    assert (link["parent_study"], link["parent_trial"], link["kind"]) == ("parent", 8, "path")
    db.delete_study("child")
    assert db.parent_of("child") is None


def live(number=0, study="s", epochs=range(3), **changes) -> LiveRecord:
    """A running trial's live write of `epochs` (the record()'s curve)."""
    fields = dict(study=study, number=number, mlflow_run_id="abc123",
                  params={"learning_rate": 0.05, "hidden": [11, 4], "epochs": 100},
                  epochs=tuple(record(number, study).epochs[e] for e in epochs), seed=7, device="cpu", slot=1,
                  started_at=1_700_000_000.25, wait_s=0.5, executor="fused")
    return LiveRecord(**{**fields, **changes})


def test_a_running_trial_is_a_running_row_with_its_epochs_so_far_until_its_record_replaces_it(db, raw):
    db.write_running(live(epochs=range(3)))
    db.write_running(live(epochs=range(3, 5)))
    db.write_running(live(epochs=range(4, 6)))  # an epoch written again replaces the earlier

    [row] = db.trials("s")
    last = record().epochs[5]
    assert (row["state"], row["learning_rate"], row["hidden"], row["epochs"]) == ("RUNNING", 0.05, "[11, 4]", 100)
    assert (row["seed"], row["started_at"], row["wait_s"], row["executor"]) == (7, 1_700_000_000.25, 0.5, "fused")
    assert all(row[f"final_{m}"] == last.metrics[m] for m in EPOCH_METRICS)  # the latest epoch's
    assert row["value"] is None and row["best_epoch"] is None and row["best_loss"] is None
    assert row["verdict"] is None and row["finished_at"] is None and row["duration_s"] is None
    assert [(e["epoch"], e["ended_at"]) for e in db.epochs("s", 0)] == [(e, 1_700_000_001.0 + e / 8) for e in range(6)]
    assert db.params("s", 0) == live().params
    [running] = db.running("s")
    assert running["number"] == 0 and running["last_epoch"] == 5

    db.write_trial(record(n_epochs=10))
    db.write_running(live(epochs=range(10, 12)))  # a live write that comes after the end changes nothing
    assert [r["state"] for r in db.trials("s")] == ["COMPLETE"] and db.running("s") == []
    assert [e["epoch"] for e in db.epochs("s", 0)] == list(range(10))  # each epoch once
    assert count(raw, "epochs") == 10 and count(raw, "trial_params") == len(record().params)


def test_wait_and_executor_reason_are_stored(db):
    db.write_trial(record(wait_s=2.5, executor_reason="fused: 64 members of one family"))
    db.write_trial(record(number=1))

    first, second = db.trials("s")
    assert (first["wait_s"], first["executor_reason"]) == (2.5, "fused: 64 members of one family")
    assert first["duration_s"] == 12.5  # finished_at - started_at: the wait apart
    assert second["wait_s"] is None and second["executor_reason"] is None


def test_a_database_at_0003_is_migrated_to_the_live_columns(tmp_path):
    """0004 adds when each epoch ended, a trial's wait and its executor's reason; older rows read NULL there."""
    url = database_at(tmp_path, "0003", "duration_s, verdict", "7.5, 'overfit'", 0.7)

    with ResultsDB(url) as db:
        [row] = db.trials("old")
        assert (row["duration_s"], row["verdict"], row["wait_s"], row["executor_reason"]) == (7.5, "overfit", None,
                                                                                                None)
        assert db.epochs("old", 0) == [{**dict.fromkeys(EPOCH_METRICS), "epoch": 0, "loss": 0.7, "ended_at": None}]
        db.write_running(live(study="new"))
        assert db.running("new")[0]["last_epoch"] == 2
