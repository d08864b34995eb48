"""Tracking side: read-only queries over the results database, as pandas DataFrames — what ``fitgap query`` and
``fitgap export`` run. Never imports studies, training or TensorFlow.

- :func:`trials_frame` reads one study's ``trials`` rows, filtered by the small, safe ``where`` language of
  `tracking.where` (user text never becomes SQL).
- :func:`run_sql` runs one reading SQL statement, on a connection that cannot write (`tracking.readonly`).
- :func:`export` writes a study's trials to CSV or Parquet; :func:`query_text` is what ``fitgap query`` prints
  (`tracking.render`).

Bad input is a one-line :class:`QueryError` (exit code 2) and nothing is ever written to the database.
Column names are read from the live table, so columns added by later migrations are queryable at once.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from fitgap.tracking.readonly import SQL_TIMEOUT_S, QueryError, open_engine, read_rows
from fitgap.tracking.render import QUERY_FORMATS, render
from fitgap.tracking.results import error_line, redact
from fitgap.tracking.where import HIDDEN_COLUMNS, column_kind, compile_order, compile_where, find_column, names_in

__all__ = ["EXPORT_FORMATS", "QUERY_FORMATS", "TABLE_COLUMNS", "QueryError", "export", "known_studies",
           "query_text", "run_sql", "trials_frame"]

EXPORT_FORMATS = ("csv", "parquet")
# What `fitgap query` shows on a terminal unless --columns says otherwise (those missing from the table are skipped).
TABLE_COLUMNS = (
    "number", "state", "value", "learning_rate", "activation", "loss", "regularizer", "regularization_weight",
    "best_epoch", "best_fit_gap", "final_fit_gap", "verdict", "params_total", "duration_s",
)


def trials_frame(url: str, study: str, where: str | None = None, order_by: str | None = None,
                 limit: int | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``trials`` rows of `study` matching `where`, sorted by `order_by` (default: trial number).

    where and order_by: the language of `tracking.where`, e.g. ``regularizer = 'l2' and best_fit_gap < 0.05`` and
    ``-best_val_accuracy``.
    columns: which columns, in that order [default: all but ``id``]. Integers come back as ``Int64``, floats as
    ``float64``, booleans as ``boolean`` and text as ``str`` dtypes.
    """
    if columns:
        def pick(table):
            return [table.c[find_column(table, name, "columns")] for name in columns]
    else:
        def pick(table):
            return [c for c in table.c if c.name not in HIDDEN_COLUMNS]
    return _read_trials(url, study, where, order_by, limit, pick)


def _read_trials(url: str, study: str, where: str | None, order_by: str | None, limit: int | None,
                 pick: Callable[[sa.TableClause], list[sa.ColumnClause]]) -> pd.DataFrame:
    _check_limit(limit)
    with _trials(url) as (conn, table):
        wanted = pick(table)
        query = sa.select(*wanted).where(table.c.study == study)
        if where and where.strip():
            query = query.where(compile_where(where, table))
        query = query.order_by(*compile_order(order_by, table), table.c.number)
        if limit is not None:
            query = query.limit(limit)
        rows = conn.execute(query).all()
        if not rows:
            _check_study(conn, table, study)
    frame = pd.DataFrame.from_records(rows, columns=[c.name for c in wanted])
    return frame.astype({c.name: _dtype(c.type) for c in wanted})


def known_studies(url: str) -> list[str]:
    """The studies that have trials in the results database, sorted."""
    with _trials(url) as (conn, table):
        return _studies(conn, table)


def run_sql(url: str, sql: str, limit: int | None = None, timeout: float = SQL_TIMEOUT_S) -> pd.DataFrame:
    """The result of one reading SQL statement (at most `limit` rows, else at most `readonly.MAX_ROWS`, within
    `timeout` seconds). Anything that would write is refused."""
    _check_limit(limit)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise QueryError(f"`timeout` must be a number of seconds > 0, but got {timeout!r}")
    names, rows = read_rows(url, sql, limit, timeout)
    return pd.DataFrame.from_records(rows, columns=names)


def export(url: str, study: str, path: str | Path, format: str) -> int:
    """Write every trial of `study` (all columns but ``id``) to `path` as csv or parquet; return the row count."""
    if format not in EXPORT_FORMATS:
        raise QueryError(f"unknown export format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    frame = trials_frame(url, study)
    try:
        if format == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    except OSError as exc:
        raise QueryError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return len(frame)


def query_text(url: str, study: str | None = None, *, sql: str | None = None, where: str | None = None,
               order_by: str | None = None, limit: int | None = None, columns: Sequence[str] | None = None,
               format: str = "table", sql_timeout: float = SQL_TIMEOUT_S) -> str:
    """What ``fitgap query`` prints: a study's trials (or the rows of `sql`) as a table, CSV or JSON.

    The table shows :data:`TABLE_COLUMNS` plus any column named in `where` or `order_by`; csv and json show
    every column. `columns` overrides both.
    """
    if format not in QUERY_FORMATS:
        raise QueryError(f"unknown format {format!r}: use one of {', '.join(QUERY_FORMATS)}")
    if sql is not None:
        extra = [name for name, given in (("STUDY", study), ("--where", where), ("--order-by", order_by),
                                          ("--columns", columns)) if given]
        if extra:
            raise QueryError(f"--sql takes no {', '.join(extra)}: say it in the SQL")
        frame = run_sql(url, sql, limit, sql_timeout)
    elif study is None:
        raise QueryError(f"name a study or give --sql; {_studies_text(known_studies(url))}")
    else:
        if columns or format != "table":
            frame = trials_frame(url, study, where, order_by, limit, columns)
        else:
            shown = dict.fromkeys([*TABLE_COLUMNS, *names_in(where), *names_in(order_by)])
            # Defaults a table lacks are skipped; a misspelt name in where/order_by fails when they compile.
            frame = _read_trials(url, study, where, order_by, limit,
                                 lambda table: [table.c[name] for name in shown if name in table.c])
    return render(frame, format, "no matching trials" if sql is None else "no rows")


@contextlib.contextmanager
def _trials(url: str) -> Iterator[tuple[sa.Connection, sa.TableClause]]:
    """A read-only connection and the live ``trials`` table; a database error is a QueryError."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            yield conn, _trials_table(conn, url)
    except SQLAlchemyError as exc:
        raise QueryError(f"cannot read {redact(url)}: {error_line(exc)}") from None
    finally:
        engine.dispose()


def _trials_table(conn: sa.Connection, url: str) -> sa.TableClause:
    """The live ``trials`` table, columns and types read from the database (later migrations add columns)."""
    try:
        found = sa.inspect(conn).get_columns("trials")
    except NoSuchTableError:
        found = []
    if not found:
        raise QueryError(f"{redact(url)} is not a fitgap results database (no `trials` table)")
    return sa.table("trials", *(sa.column(c["name"], c["type"]) for c in found))


def _studies(conn: sa.Connection, table: sa.TableClause) -> list[str]:
    return list(conn.execute(sa.select(table.c.study).distinct().order_by(table.c.study)).scalars())


def _check_study(conn: sa.Connection, table: sa.TableClause, study: str) -> None:
    if conn.execute(sa.select(sa.literal(1)).where(table.c.study == study).limit(1)).first() is None:
        raise QueryError(f"no study {study!r} in the results database; {_studies_text(_studies(conn, table))}")


def _studies_text(studies: list[str]) -> str:
    return f"known studies: {', '.join(studies)}" if studies else "it has no studies yet"


def _dtype(type_: sa.types.TypeEngine) -> str:
    return {"boolean": "boolean", "text": "str"}.get(column_kind(type_)) or (
        "Int64" if isinstance(type_, sa.Integer) else "float64")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise QueryError(f"`limit` must be an integer >= 1, but got {limit=}")
