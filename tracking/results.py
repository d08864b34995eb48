"""Tracking side: the results database, one row per trial, its params and its per-epoch metrics, easy to query with
SQL. Never imports studies, training or TensorFlow.

The schema lives here as SQLAlchemy Core tables, its names taken from `sweeps.vocabulary` (every hyperparameter and
metric has a column); changes to it are Alembic migrations in ``tracking/migrations`` (run by :class:`ResultsDB`,
never ad hoc), which a test compares with these tables. Works on SQLite and PostgreSQL. The table names
(``trials``, ``trial_params``) are also Optuna's, so keep the results in their own SQLite file or PostgreSQL
database/schema (a search_path can be given in the URL: ``?options=-csearch_path%3Dfitgap``).

Database URLs are handled here for every fitgap store: :func:`redact` (never print a password), :func:`parse_url`
(refuse what is not one) and :func:`sqlite_path` (the file a SQLite URL names).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from fitgap.errors import UsageError
from fitgap.sweeps.vocabulary import COMPLEXITY_METRICS, EPOCH_METRICS, HYPERPARAMETERS, TEST_METRICS
from fitgap.tracking.diagnosis import Diagnosis, diagnose_trial
from fitgap.tracking.records import FINISHED_STATES, EpochRecord, LiveRecord, TrialRecord

# The latest migration in tracking/migrations/versions. Comparing it with the version table is a single query,
# far cheaper than loading Alembic just to learn that there is nothing to do (a test pins it to Alembic's head).
SCHEMA_REVISION = "0006"
# Optuna and MLflow each keep an `alembic_version` table: ours must not be confused with theirs.
VERSION_TABLE = "fitgap_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"

_COLUMN_TYPES = {float: Float, int: Integer, bool: Boolean, str: Text, list: Text}  # a list as JSON
# Params with a column of their own in `trials`: every hyperparameter, and the model's kind (`model.kind`);
# every param, these included, is also a row of `trial_params`.
PARAM_COLUMNS = {name: _COLUMN_TYPES[hp.kind] for name, hp in HYPERPARAMETERS.items()} | {"model_kind": Text}

metadata = MetaData()

trials = Table(
    "trials",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study", Text, nullable=False),
    Column("number", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason", Text),
    Column("value", Float),
    Column("values_json", Text),
    *(Column(name, type_) for name, type_ in PARAM_COLUMNS.items()),
    *(Column(name, BigInteger) for name in COMPLEXITY_METRICS),  # a conv net's MACs overflow 32 bits
    Column("best_epoch", Integer),
    *(Column(f"best_{m}", Float) for m in EPOCH_METRICS),
    *(Column(f"final_{m}", Float) for m in EPOCH_METRICS),
    *(Column(m, Float) for m in TEST_METRICS),  # on the test set, never used for selection
    Column("repeats", Integer),  # trainings of the parameter set with different seeds; value is their mean
    Column("value_std", Float),  # the spread of the first objective over the repeats
    Column("seed", Integer),
    Column("device", Text),
    Column("slot", Integer),
    Column("started_at", Float),  # when its (first) training was dispatched to a slot
    Column("finished_at", Float),
    Column("duration_s", Float),  # its own training time: finished_at - started_at
    Column("mlflow_run_id", Text),
    Column("executor", Text),  # keras, compiled or fused
    # The diagnosis (tracking/diagnosis.py) of the trial's epochs.
    Column("verdict", Text),  # underfit, good_fit or overfit
    Column("verdict_reason", Text),
    Column("overfit_epoch", Integer),  # where overfitting set in; NULL: it did not
    Column("fit_measure", Text),  # how best_fit_gap/final_fit_gap are measured (`vocabulary.FIT_GAP_MEASURES`)
    Column("wait_s", Float),  # from Optuna's ask to started_at: its wait for a slot
    Column("executor_reason", Text),  # why that executor (and XLA mode) ran
    Column("val_size", Integer),  # validation rows
    Column("val_baseline", Float),  # the majority class's val accuracy, or the training mean's val mse
    Column("repeats_json", Text),  # per repeat: its objective and fit gap at best_epoch
    UniqueConstraint("study", "number", name="uq_trials_study_number"),
    Index("ix_trials_study_state", "study", "state"),
    Index("ix_trials_study_value", "study", "value"),
    Index("ix_trials_study_regularizer", "study", "regularizer"),
    Index("ix_trials_study_verdict", "study", "verdict"),
)

trial_params = Table(
    "trial_params",
    metadata,
    Column("trial_id", Integer, ForeignKey("trials.id", ondelete="CASCADE", name="fk_trial_params_trial_id")),
    Column("name", Text),
    Column("value", Text, nullable=False),  # JSON
    Column("value_num", Float),  # the value again when it is a number (not a bool), for numeric queries
    PrimaryKeyConstraint("trial_id", "name", name="pk_trial_params"),
    Index("ix_trial_params_name_value_num", "name", "value_num"),  # "trials whose <param> is in a range"
)

epochs = Table(
    "epochs",
    metadata,
    Column("trial_id", Integer, ForeignKey("trials.id", ondelete="CASCADE", name="fk_epochs_trial_id")),
    Column("epoch", Integer),
    *(Column(m, Float) for m in EPOCH_METRICS),
    Column("ended_at", Float),  # unix seconds
    PrimaryKeyConstraint("trial_id", "epoch", name="pk_epochs"),
)

# A study started from another's trial (`fitgap path`): which one, and as what.
study_links = Table(
    "study_links",
    metadata,
    Column("study", Text, primary_key=True),
    Column("parent_study", Text, nullable=False),
    Column("parent_trial", Integer),
    Column("kind", Text),  # "path"
    Column("created_at", Float),  # unix seconds
)


class ResultsError(UsageError):
    """The results database cannot be opened (the message names it, password redacted), or a record is refused.

    Failures of the database itself while writing or reading are SQLAlchemy's own errors.
    """


def redact(url: str) -> str:
    """`url` with any password (in the user part or a ``password=`` query parameter) replaced by ``***``."""
    try:
        u = make_url(url)
    except ArgumentError:
        return "<unparsable database URL>"  # never echo what might hold a password
    query = {k: "***" if k.lower() == "password" else v for k, v in u.query.items()}
    # The URL quotes "***" in a query string; unquote it so that it reads the same everywhere.
    return u.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def parse_url(url: str, error: type[UsageError] = ResultsError) -> URL:
    """`url` parsed, else `error` saying it is not a database URL (without its password)."""
    try:
        return make_url(url)
    except ArgumentError:
        raise error(f"not a database URL: {redact(url)}") from None


def sqlite_path(url: str | URL) -> Path | None:
    """The file a SQLite URL names, or None: another backend, an in-memory database, or a URL that does not parse
    (whoever opens it says why). ``sqlite:///file:path?mode=ro&uri=true`` names ``path``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None
        database = database.removeprefix("file:").split("?")[0]
    return Path(database)


def error_line(exc: BaseException) -> str:
    """The first line of a database error (the driver's message, not SQLAlchemy's wrapping): short, and free of the
    URL."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class ResultsDB:
    """The results database of fitgap: the coordinator writes it, queries and reports read it.

    - ``ResultsDB(url)`` creates the tables, or migrates them to the latest revision, before returning;
      ``create=False`` opens an existing, up-to-date store and never creates anything (a missing SQLite file
      is a :class:`ResultsError`). Any failure to open is a :class:`ResultsError` naming the redacted URL.
    - ``write_trial`` stores a finished trial in one transaction and replaces a trial with the same
      ``(study, number)`` (and its params and epochs), so writing a record twice is harmless.
    - ``write_running`` stores a running trial's epochs as they come (a ``LiveRecord``): a row in state RUNNING with
      its params and ``final_<m>`` = the latest epoch's (value, ``best_<m>`` and the diagnosis stay NULL until it
      ends), its epochs appended; ``running`` reads them back. It never touches a finished trial's row.
    - Times (``started_at``, ``finished_at``) are float unix seconds, as in :class:`TrialRecord`: exact and
      the same on every backend. A NaN metric (a diverged training) is stored as NULL, as SQLite has no NaN.
    - Params with a column of their own (:data:`PARAM_COLUMNS`) are in ``trials``, NULL when the trial did not
      have them; every param, JSON-encoded, is a row of ``trial_params``. Metrics not in ``EPOCH_METRICS`` are
      not stored; a metric the trial's task does not measure (``accuracy`` for regression, ``mse`` for
      classification...) is NULL. Test-set metrics (``TEST_METRICS``) are columns of ``trials``.
    - The trial's diagnosis (verdict, overfitting onset, loss-independent fit gaps: ``tracking.diagnosis``) is the
      one given to ``write_trial`` (the tracking process's, which MLflow gets too), else computed from its epochs.
    """

    def __init__(self, url: str, create: bool = True):
        self.url = redact(url)
        parsed = parse_url(url)
        path = sqlite_path(parsed)
        if path is not None and not create and not path.exists():
            raise ResultsError(f"no results database at {self.url}")
        if path is not None and create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._engine = _engine(parsed)  # ImportError when the driver is not installed
        except (SQLAlchemyError, ImportError) as exc:
            raise ResultsError(f"cannot open the results database at {self.url}: {error_line(exc)}") from exc
        try:
            self._open(create)
        except BaseException as exc:
            self._engine.dispose()
            if isinstance(exc, SQLAlchemyError):
                raise ResultsError(f"cannot open the results database at {self.url}: {error_line(exc)}") from exc
            raise

    def _open(self, create: bool) -> None:
        with self._engine.connect() as conn:
            revision = _revision(conn)
        if revision == SCHEMA_REVISION:
            return
        if not create:
            found = f"schema revision {revision}" if revision else f"no {VERSION_TABLE} table"
            raise ResultsError(
                f"{self.url} is not an up-to-date fitgap results database ({found}, expected {SCHEMA_REVISION});"
                " open it with create=True to create or migrate it"
            )
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Coordinators starting together on one server migrate one at a time; the lock ends with the
                # transaction, after which the others see the new revision and skip Alembic.
                conn.execute(text("SELECT pg_advisory_xact_lock(7146312090)"))
                revision = _revision(conn)
            if revision is None and inspect(conn).has_table("trials"):
                raise ResultsError(
                    f"{self.url} already has a `trials` table that is not fitgap's (an Optuna storage?);"
                    " give the results their own database file, database or schema"
                )
            if revision != SCHEMA_REVISION:
                _migrate(conn)

    def write_trial(self, record: TrialRecord, diagnosis: Diagnosis | None = None) -> None:
        if record.state not in FINISHED_STATES:
            raise ResultsError(f"a stored trial must be one of {FINISHED_STATES}, but got {record.state=}")
        best, final, params = record.best, record.final, record.params
        if diagnosis is None:
            diagnosis = diagnose_trial(record)
        row = {
            "study": record.study,
            "number": record.number,
            "state": record.state,
            "reason": record.reason,
            "value": _num(record.values[0]) if record.values else None,
            "values_json": None if record.values is None else json.dumps(list(record.values)),
            **_param_columns(params),
            **{name: record.complexity.get(name) for name in COMPLEXITY_METRICS},
            "best_epoch": record.best_epoch,
            **{f"best_{m}": _num(best.get(m)) for m in EPOCH_METRICS},
            **{f"final_{m}": _num(final.get(m)) for m in EPOCH_METRICS},
            **{m: _num(record.test_metrics.get(m)) for m in TEST_METRICS},
            "repeats": record.repeats,
            "value_std": _num(record.value_std),
            "seed": record.seed,
            "device": record.device,
            "slot": record.slot,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "duration_s": record.duration_s,
            "wait_s": record.wait_s,
            "mlflow_run_id": record.mlflow_run_id,
            "executor": record.executor,
            "executor_reason": record.executor_reason,
            "verdict": diagnosis.verdict,
            "verdict_reason": diagnosis.reason if diagnosis.verdict else None,
            "overfit_epoch": diagnosis.overfit_epoch,
            "fit_measure": diagnosis.fit_measure,
            "val_size": record.val_size,
            "val_baseline": _num(record.val_baseline),
            "repeats_json": json.dumps([dict(r) for r in record.per_repeat]) if record.per_repeat else None,
        }
        with self._engine.begin() as conn:
            # Replacing = delete (its params and epochs go by cascade) and insert, in the same transaction.
            conn.execute(delete(trials).where(trials.c.study == record.study, trials.c.number == record.number))
            trial_id = conn.execute(insert(trials), row).inserted_primary_key[0]
            _insert_children(conn, trial_id, params, record.epochs)

    def write_running(self, live: LiveRecord) -> None:
        """A running trial's RUNNING row, created with its first live epochs; later ones are appended (an epoch
        written again replaces the earlier) and move `final_<m>` to the latest. A finished row is left alone."""
        final = {f"final_{m}": _num(live.epochs[-1].metrics.get(m)) for m in EPOCH_METRICS}
        with self._engine.begin() as conn:
            found = conn.execute(select(trials.c.id, trials.c.state).where(
                trials.c.study == live.study, trials.c.number == live.number)).first()
            if found is None:
                row = {"study": live.study, "number": live.number, "state": "RUNNING", **_param_columns(live.params),
                       **final, "repeats": live.repeats, "seed": live.seed, "device": live.device, "slot": live.slot,
                       "started_at": live.started_at, "wait_s": live.wait_s, "mlflow_run_id": live.mlflow_run_id,
                       "executor": live.executor}
                trial_id = conn.execute(insert(trials), row).inserted_primary_key[0]
                _insert_children(conn, trial_id, live.params, live.epochs)
                return
            trial_id, state = found
            if state != "RUNNING":
                return  # it ended (or a stale-trial check failed it) before this write came
            conn.execute(update(trials).where(trials.c.id == trial_id).values(final))
            conn.execute(delete(epochs).where(epochs.c.trial_id == trial_id, epochs.c.epoch >= live.epochs[0].epoch))
            _insert_children(conn, trial_id, {}, live.epochs)

    def running(self, study: str) -> list[dict]:
        """The study's RUNNING rows (trials written live), each with `last_epoch`, the latest epoch written."""
        last = select(func.max(epochs.c.epoch)).where(epochs.c.trial_id == trials.c.id).scalar_subquery()
        query = (select(trials, last.label("last_epoch")).where(trials.c.study == study, trials.c.state == "RUNNING")
                 .order_by(trials.c.number))
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def trials(self, study: str) -> list[dict]:
        query = select(trials).where(trials.c.study == study).order_by(trials.c.number)
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def epochs(self, study: str, number: int) -> list[dict]:
        """The epochs of one trial (``epoch``, the metrics and ``ended_at``; empty for an unknown trial)."""
        query = (
            select(*(c for c in epochs.c if c.name != "trial_id"))
            .join_from(epochs, trials)
            .where(trials.c.study == study, trials.c.number == number)
            .order_by(epochs.c.epoch)
        )
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def params(self, study: str, number: int) -> dict[str, Any]:
        """Every param of one trial, decoded (lists come back as lists; empty for an unknown trial)."""
        query = (
            select(trial_params.c.name, trial_params.c.value)
            .join_from(trial_params, trials)
            .where(trials.c.study == study, trials.c.number == number)
            .order_by(trial_params.c.name)
        )
        with self._engine.connect() as conn:
            return {name: json.loads(value) for name, value in conn.execute(query)}

    def link_study(self, study: str, parent_study: str, parent_trial: int | None, kind: str) -> None:
        """Record that `study` was started from trial `parent_trial` of `parent_study` (replacing an earlier link)."""
        with self._engine.begin() as conn:
            conn.execute(delete(study_links).where(study_links.c.study == study))
            conn.execute(insert(study_links), {"study": study, "parent_study": parent_study,
                                               "parent_trial": parent_trial, "kind": kind, "created_at": time.time()})

    def parent_of(self, study: str) -> dict | None:
        """The link `link_study` recorded for `study` ({parent_study, parent_trial, kind, created_at}), or None."""
        query = select(study_links).where(study_links.c.study == study)
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else {k: v for k, v in row.items() if k != "study"}

    def delete_study(self, study: str) -> int:
        """Delete a study's trials with their params and epochs, and its link; return the number of trials deleted."""
        with self._engine.begin() as conn:
            conn.execute(delete(study_links).where(study_links.c.study == study))
            return conn.execute(delete(trials).where(trials.c.study == study)).rowcount

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _engine(url: URL) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)
    if url.get_backend_name() == "sqlite":
        # SQLite ignores foreign keys, and so ON DELETE CASCADE, unless every connection turns them on.
        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _migrate(conn: Connection) -> None:
    # Imported here: opening an up-to-date database never loads Alembic.
    from alembic import command
    from alembic.config import Config

    cfg = Config()  # no ini file, so no fileConfig(): Alembic leaves the application's logging alone
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _param_columns(params: Mapping[str, Any]) -> dict[str, Any]:
    columns = {name: params.get(name) for name in PARAM_COLUMNS}
    if columns["hidden"] is not None:
        columns["hidden"] = json.dumps(list(columns["hidden"]))
    return columns


def _insert_children(conn: Connection, trial_id: int, params: Mapping[str, Any],
                     records: Sequence[EpochRecord]) -> None:
    """A trial's `trial_params` and `epochs` rows."""
    param_rows = [{"trial_id": trial_id, "name": name, "value": json.dumps(value), "value_num": _param_num(value)}
                  for name, value in params.items()]
    epoch_rows = [{"trial_id": trial_id, "epoch": e.epoch, **{m: _num(e.metrics.get(m)) for m in EPOCH_METRICS},
                   "ended_at": e.ended_at} for e in records]
    # An empty list would insert one row of defaults: skip instead.
    if param_rows:
        conn.execute(insert(trial_params), param_rows)
    if epoch_rows:
        conn.execute(insert(epochs), epoch_rows)


def _num(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _param_num(value: Any) -> float | None:
    return _num(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
