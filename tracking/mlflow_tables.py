"""Tracking side: a trial's run created, its metric points, and at its end its params, tags and status, each written
straight into MLflow's own tables in one transaction. Never imports studies, training or TensorFlow.

MLflow's `log_batch` builds an ORM object per point and checks each run's latest value key by key: ~0.12 ms a point,
~130 ms for a trial of 100 epochs, more than the trial's training in a fused batch. The same rows inserted in bulk,
through the driver's `executemany`, cost a few milliseconds; a finished trial's params and tags (`log_batch`) and
its status (`set_terminated`) cost ~13 ms more through MLflow's ORM, and are a few more rows of the same
transaction here; creating the run (`create_run`: two reads of the experiment and the run's inputs) ~8 ms, a row
of `runs` and its tags here. Only where the database holds a schema this module was checked against
(`VERIFIED_REVISIONS`, MLflow's Alembic revision, and the tables' columns); anywhere else, `RunTables.open` returns
None and the caller uses MLflow's client. The rows are MLflow's: params and tags checked by MLflow's own validation,
metric values sanitized by MLflow's own rule (NaN is 0 with `is_nan`, infinities the largest float), `latest_metrics`
kept as MLflow keeps it (the point with the largest (step, timestamp, value) per key), a param never changed, a tag
replaced. `tests/test_mlflow_tables.py` checks that MLflow's client and server read a run written here exactly as
one written by `create_run`, `log_batch` and `set_terminated`.
"""

from __future__ import annotations

import uuid
from typing import Mapping, Sequence

import sqlalchemy as sa
from mlflow.entities import Metric, Param, RunInfo, RunStatus, RunTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

VERIFIED_REVISIONS = {"dc11669786a5"}  # MLflow 3.17's schema
_COLUMNS = {"key", "value", "timestamp", "step", "is_nan", "run_uuid"}  # of metrics and of latest_metrics
_KEYED = {"key", "value", "run_uuid"}  # of params and of tags
_RUN_COLUMNS = {"run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time",
                "end_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id", "deleted_time"}
_SCHEMA = {"metrics": _COLUMNS, "latest_metrics": _COLUMNS, "params": _KEYED, "tags": _KEYED, "runs": _RUN_COLUMNS}
_EXPERIMENT_COLUMNS = {"experiment_id", "artifact_location", "lifecycle_stage"}  # of experiments, among others
_DATABASES = ("sqlite", "postgresql")  # the tracking databases this was tested on


class RunTables:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        meta = sa.MetaData()
        self.metrics = sa.Table("metrics", meta, autoload_with=engine)
        self.latest = sa.Table("latest_metrics", meta, autoload_with=engine)
        self.params = sa.Table("params", meta, autoload_with=engine)
        self.tags = sa.Table("tags", meta, autoload_with=engine)
        self.runs = sa.Table("runs", meta, autoload_with=engine)
        self.experiments = sa.Table("experiments", meta, autoload_with=engine)
        # The points' insert as the driver takes it: SQLAlchemy's per-row parameter handling would cost more than
        # SQLite's own insert (~8 ms of a trial's ~1,100 points)
        compiled = sa.insert(self.metrics).compile(dialect=engine.dialect, column_keys=list(_COLUMNS))
        self._insert = compiled.string
        self._order = tuple(compiled.positiontup) if compiled.positional else None

    @classmethod
    def open(cls, tracking_uri: str) -> RunTables | None:
        """The tables of a tracking database whose schema is verified, else None (then use `log_batch`)."""
        try:
            url = sa.make_url(tracking_uri)
        except sa.exc.ArgumentError:
            return None  # a server or a folder
        if url.get_backend_name() not in _DATABASES:
            return None
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            inspector = sa.inspect(engine)
            columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in (*_SCHEMA, "experiments")}
        except sa.exc.SQLAlchemyError:
            revision, columns = None, {}
        if revision not in VERIFIED_REVISIONS or any(columns.get(t) != c for t, c in _SCHEMA.items()) or \
                not _EXPERIMENT_COLUMNS <= columns.get("experiments", set()):
            engine.dispose()
            return None
        return cls(engine)

    def create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str],
                   start_time: int) -> RunInfo | None:
        """A RUNNING run, as `MlflowClient.create_run` makes one (MLflow's `SqlAlchemyStore.create_run`: its name
        also as the `mlflow.runName` tag, user "unknown", its artifacts under the experiment's location), in one
        transaction; None where the client would raise (an inactive experiment) or do more (a run name among the
        tags)."""
        if MLFLOW_RUN_NAME in tags:
            return None
        run_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            column = self.experiments.c
            experiment = conn.execute(sa.select(column.artifact_location, column.lifecycle_stage)
                                      .where(column.experiment_id == int(experiment_id))).first()
            if experiment is None or experiment.lifecycle_stage != "active":
                return None
            artifact_uri = append_to_uri_path(experiment.artifact_location, run_id,
                                              SqlAlchemyStore.ARTIFACTS_FOLDER_NAME)
            conn.execute(sa.insert(self.runs).values(
                run_uuid=run_id, name=run_name, source_type="UNKNOWN", source_name="", entry_point_name="",
                user_id="unknown", status="RUNNING", start_time=start_time, end_time=None, source_version="",
                lifecycle_stage="active", artifact_uri=artifact_uri, experiment_id=int(experiment_id),
                deleted_time=None))
            conn.execute(sa.insert(self.tags), [{"key": k, "value": v, "run_uuid": run_id}
                                                for k, v in {**tags, MLFLOW_RUN_NAME: run_name}.items()])
        return RunInfo(run_id, experiment_id, "unknown", "RUNNING", start_time, None, "active", artifact_uri,
                       run_name)

    def write(self, run_id: str, points: Sequence[Metric]) -> bool:
        """Insert `points` (distinct) into an active run and update its latest values, in one transaction; False
        (nothing written) when the run is not active, for `log_batch` to raise MLflow's own error."""
        return self.finish(run_id, points)

    def finish(self, run_id: str, points: Sequence[Metric], params: Sequence[Param] = (),
               tags: Sequence[RunTag] = (), status: str | None = None, end_time: int | None = None) -> bool:
        """`write`, with the run's `params` and `tags` (as `log_batch` logs them) and its `status` and `end_time` (as
        `set_terminated` sets them), in one transaction; False (nothing written) where MLflow's client would raise
        (an inactive run, a changed param) or do more (the run's name as a tag), for the caller to use the client."""
        _, params, tags = _validate_batch_log_data([], params, tags)  # MLflow's errors for bad keys or values
        _validate_param_keys_unique(params)
        if any(tag.key == MLFLOW_RUN_NAME for tag in tags):
            return False
        with self.engine.begin() as conn:
            stage = conn.execute(sa.select(self.runs.c.lifecycle_stage).where(self.runs.c.run_uuid == run_id)).scalar()
            if stage != "active":
                return False
            if params and not self._log_params(conn, run_id, params):  # checked before anything is written
                return False
            self._log_metrics(conn, run_id, points)
            self._set_tags(conn, run_id, {tag.key: tag.value for tag in tags})  # the last of a key, as MLflow's
            if status is not None:
                conn.execute(sa.update(self.runs).where(self.runs.c.run_uuid == run_id).values(
                    status=RunStatus.to_string(RunStatus.from_string(status)), end_time=end_time))
        return True

    def _log_params(self, conn, run_id: str, params: Sequence[Param]) -> bool:
        """MLflow's rule: a param logged again with the same value is left alone, with another is an error."""
        stored = dict(conn.execute(sa.select(self.params.c.key, self.params.c.value).where(
            self.params.c.run_uuid == run_id, self.params.c.key.in_([p.key for p in params]))).all())
        if any(stored[p.key] != p.value for p in params if p.key in stored):
            return False
        new = [{"key": p.key, "value": p.value, "run_uuid": run_id} for p in params if p.key not in stored]
        if new:
            conn.execute(sa.insert(self.params), new)
        return True

    def _log_metrics(self, conn, run_id: str, points: Sequence[Metric]) -> None:
        rows = []
        for point in points:
            is_nan, value = SqlAlchemyStore.sanitize_metric_value(None, float(point.value))  # reads no instance
            rows.append({"key": point.key, "value": value, "timestamp": point.timestamp, "step": point.step,
                         "is_nan": is_nan, "run_uuid": run_id})
        if not rows:
            return
        conn.exec_driver_sql(self._insert, [tuple(row[c] for c in self._order) for row in rows] if self._order
                             else rows)
        newest: dict[str, dict] = {}
        for row in rows:
            kept = newest.get(row["key"])
            if kept is None or _order(row) > _order(kept):
                newest[row["key"]] = row
        stored = {row.key: row._mapping for row in conn.execute(
            sa.select(self.latest).where(self.latest.c.run_uuid == run_id, self.latest.c.key.in_(list(newest))))}
        inserts = [row for key, row in newest.items() if key not in stored]
        updates = [row for key, row in newest.items() if key in stored and _order(row) > _order(stored[key])]
        if inserts:
            conn.execute(sa.insert(self.latest), inserts)
        for row in updates:
            conn.execute(sa.update(self.latest).where(self.latest.c.run_uuid == run_id,
                                                      self.latest.c.key == row["key"]).values(row))

    def _set_tags(self, conn, run_id: str, tags: dict[str, str]) -> None:
        if not tags:
            return
        stored = set(conn.execute(sa.select(self.tags.c.key).where(
            self.tags.c.run_uuid == run_id, self.tags.c.key.in_(list(tags)))).scalars())
        for key in stored:
            conn.execute(sa.update(self.tags).where(self.tags.c.run_uuid == run_id, self.tags.c.key == key)
                         .values(value=tags[key]))
        new = [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items() if k not in stored]
        if new:
            conn.execute(sa.insert(self.tags), new)


def _order(row) -> tuple:
    """MLflow's "more recent" (`SqlAlchemyStore._update_latest_metrics_if_necessary`)."""
    return row["step"], row["timestamp"], row["value"]
