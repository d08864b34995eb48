"""Alembic environment of the results database.

Run only by ``tracking.results.ResultsDB``, which passes an open connection in ``config.attributes`` (no alembic.ini,
no logging configuration). The version table is fitgap's own: Optuna and MLflow each keep an ``alembic_version``.
"""

from alembic import context

from fitgap.tracking.results import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("fitgap's migrations run from tracking.results.ResultsDB(url), which passes a connection")

context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
