"""Tracking side: a trial's metric points written straight into MLflow's own tables, in one transaction. Never
imports studies, training or TensorFlow.

MLflow's `log_batch` builds an ORM object per point and checks each run's latest value key by key: ~0.12 ms a point,
~130 ms for a trial of 100 epochs, more than the trial's training in a fused batch. The same rows inserted in bulk,
through the driver's `executemany`, cost a few milliseconds. Only where the database holds a schema this module was checked against
(`VERIFIED_REVISIONS`, MLflow's Alembic revision, and the two tables' columns); anywhere else, `MetricTables.open`
returns None and the caller uses `log_batch`. The rows are MLflow's: values sanitized by MLflow's own rule (NaN is
0 with `is_nan`, infinities the largest float), and `latest_metrics` kept as MLflow keeps it (the point with the
largest (step, timestamp, value) per key). `tests/test_mlflow_tables.py` checks that MLflow's client and server
read a run written here exactly as one written by `log_batch`.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from mlflow.entities import Metric
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

VERIFIED_REVISIONS = {"dc11669786a5"}  # MLflow 3.17's schema
_COLUMNS = {"key", "value", "timestamp", "step", "is_nan", "run_uuid"}  # of metrics and of latest_metrics
_DATABASES = ("sqlite", "postgresql")  # the tracking databases this was tested on


class MetricTables:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        meta = sa.MetaData()
        self.metrics = sa.Table("metrics", meta, autoload_with=engine)
        self.latest = sa.Table("latest_metrics", meta, autoload_with=engine)
        self.runs = sa.Table("runs", meta, autoload_with=engine)
        # The points' insert as the driver takes it: SQLAlchemy's per-row parameter handling would cost more than
        # SQLite's own insert (~8 ms of a trial's ~1,100 points)
        compiled = sa.insert(self.metrics).compile(dialect=engine.dialect, column_keys=list(_COLUMNS))
        self._insert = compiled.string
        self._order = tuple(compiled.positiontup) if compiled.positional else None

    @classmethod
    def open(cls, tracking_uri: str) -> MetricTables | None:
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
            columns = [{c["name"] for c in inspector.get_columns(t)} for t in ("metrics", "latest_metrics")]
        except sa.exc.SQLAlchemyError:
            revision, columns = None, []
        if revision not in VERIFIED_REVISIONS or any(c != _COLUMNS for c in columns):
            engine.dispose()
            return None
        return cls(engine)

    def write(self, run_id: str, points: Sequence[Metric]) -> bool:
        """Insert `points` (distinct) into an active run and update its latest values, in one transaction; False
        (nothing written) when the run is not active, for `log_batch` to raise MLflow's own error."""
        rows = []
        for point in points:
            is_nan, value = SqlAlchemyStore.sanitize_metric_value(None, float(point.value))  # reads no instance
            rows.append({"key": point.key, "value": value, "timestamp": point.timestamp, "step": point.step,
                         "is_nan": is_nan, "run_uuid": run_id})
        if not rows:
            return True
        with self.engine.begin() as conn:
            stage = conn.execute(sa.select(self.runs.c.lifecycle_stage).where(self.runs.c.run_uuid == run_id)).scalar()
            if stage != "active":
                return False
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
        return True


def _order(row) -> tuple:
    """MLflow's "more recent" (`SqlAlchemyStore._update_latest_metrics_if_necessary`)."""
    return row["step"], row["timestamp"], row["value"]
