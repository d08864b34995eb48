"""Tracking side: the results database opened so that nothing can write to it, and raw SQL run that way. Never
imports studies, training or TensorFlow.

Writing is refused by the database itself, not by our parsing:
- SQLite: a ``mode=ro`` connection plus an authorizer that allows only reads (``mode=ro`` alone still lets ``ATTACH``
  create and write a file, and ``PRAGMA query_only`` can be switched off);
- PostgreSQL: read-only transactions.
:func:`check_reading_statement` comes first (exactly one statement, not a known non-query command): it gives clearer
messages, and also blocks PostgreSQL's ``COPY ... TO``, ``DO`` and ``LOAD``, which a read-only transaction lets
through. Every refusal, and every bad URL, is a one-line :class:`QueryError`.

Reading is bounded too, as a database tool bounds it for untrusted users: a statement runs at most `timeout` seconds
(SQLite: a progress handler; PostgreSQL: `statement_timeout`) and returns at most MAX_ROWS rows unless a `limit` is
given. Memory follows from both; a PostgreSQL role that may only SELECT is still what an untrusted user should get.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from fitgap.errors import UsageError
from fitgap.tracking.results import error_line, parse_url, redact, sqlite_path


SQL_TIMEOUT_S = 30.0  # the longest a --sql statement runs by default
MAX_ROWS = 100_000  # the most rows a --sql statement returns without a limit


class QueryError(UsageError):
    """A query cannot run as asked: unknown study or column, bad syntax, a writing statement, a bad format."""


def open_engine(url: str) -> Engine:
    """An engine that cannot write: SQLite opened with ``mode=ro``, PostgreSQL in read-only transactions."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed, url)
        return sa.create_engine("sqlite://", creator=lambda: _sqlite_connect(path), poolclass=NullPool)
    try:
        return sa.create_engine(parsed, poolclass=NullPool, execution_options={"postgresql_readonly": True})
    except (SQLAlchemyError, ImportError) as exc:
        raise QueryError(f"cannot open {redact(url)}: {error_line(exc)}") from None


def read_rows(url: str, sql: str, limit: int | None, timeout: float = SQL_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """The column names and (at most `limit`) rows of one reading statement; anything that would write is refused,
    a statement that runs past `timeout` seconds is stopped, and more than MAX_ROWS rows without a limit refused."""
    check_reading_statement(sql)
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        names, rows = run_sqlite(_sqlite_file(parsed, url), sql, limit or MAX_ROWS + 1, timeout)
    else:
        names, rows = run_postgresql(parsed, url, sql, limit or MAX_ROWS + 1, timeout)
    if limit is None and len(rows) > MAX_ROWS:
        raise QueryError(f"the statement returns more than {MAX_ROWS:,} rows: narrow it, or pass a limit (--limit)")
    return names, rows


def _too_slow(timeout: float) -> QueryError:
    return QueryError(f"the statement ran past its time limit of {timeout:g} s and was stopped: narrow it, or "
                      "allow it longer (--sql-timeout)")


def _parse_url(url: str) -> URL:
    """`url` parsed, if it is a SQLite or PostgreSQL URL."""
    parsed = parse_url(url, QueryError)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise QueryError(f"the results database is SQLite or PostgreSQL, but got {redact(url)}")
    return parsed


def _sqlite_file(parsed: URL, url: str) -> Path:
    """The existing file of a SQLite URL: reading never creates one."""
    path = sqlite_path(parsed)
    if path is None:
        raise QueryError(f"an in-memory database has no results: {redact(url)}")
    if not path.is_file():
        raise QueryError(f"no results database at {redact(url)}")
    return path


# ---------------------------------------------------------------- SQLite: mode=ro and an authorizer


# Authorizer action codes (https://sqlite.org/c3ref/c_alter_table.html): a SELECT needs only these.
_SQLITE_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_SQLITE_ACTIONS = {getattr(sqlite3, f"SQLITE_{name}"): name for name in (
    "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER CREATE_TEMP_VIEW "
    "CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE DROP_TEMP_INDEX DROP_TEMP_TABLE DROP_TEMP_TRIGGER "
    "DROP_TEMP_VIEW DROP_TRIGGER DROP_VIEW INSERT PRAGMA READ SELECT TRANSACTION UPDATE ATTACH DETACH ALTER_TABLE "
    "REINDEX ANALYZE CREATE_VTABLE DROP_VTABLE FUNCTION SAVEPOINT RECURSIVE").split()}
_SQLITE_DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}


def _sqlite_connect(path: Path, denied: list[str] | None = None) -> sqlite3.Connection:
    """A read-only connection to `path`; with `denied`, also an authorizer allowing reads only (refusals are
    appended to `denied`, to tell a refused write from a syntax error)."""
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    if denied is not None:
        def authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
            if action in _SQLITE_READS and not (action == sqlite3.SQLITE_FUNCTION
                                                and (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS):
                return sqlite3.SQLITE_OK
            denied.append(" ".join(filter(None, (_SQLITE_ACTIONS.get(action, str(action)), arg1, arg2))))
            return sqlite3.SQLITE_DENY

        connection.set_authorizer(authorize)
    return connection


def run_sqlite(path: Path, sql: str, limit: int | None, timeout: float = SQL_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """`sql` on a read-only, authorized connection: no pre-check here, the database alone refuses writes."""
    denied: list[str] = []
    connection = _sqlite_connect(path, denied)
    deadline = time.monotonic() + timeout
    connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)  # true: interrupt the statement
    try:
        cursor = connection.execute(sql)
        names = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
    except sqlite3.Error as exc:
        if time.monotonic() > deadline and "interrupted" in str(exc):
            raise _too_slow(timeout) from None
        if "one statement" in str(exc):  # what the lexer missed, e.g. a `;` inside quoting SQLite lacks
            raise QueryError(f"exactly one statement is allowed: {_clip(sql)}") from None
        if denied:
            raise QueryError(f"only reading statements are allowed: {_clip(sql)} (SQLite refused {denied[0]})") \
                from None
        raise QueryError(f"SQL error: {error_line(exc)}") from None
    finally:
        connection.close()
    return names, rows


# ---------------------------------------------------------------- PostgreSQL: read-only transactions


def run_postgresql(parsed: URL, url: str, sql: str, limit: int | None,
                   timeout: float = SQL_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """`sql` in a read-only transaction, as one prepared statement: no pre-check here, the server alone refuses."""
    if parsed.get_driver_name() != "psycopg":
        raise QueryError(f"--sql on PostgreSQL needs the psycopg driver (postgresql+psycopg://), got {redact(url)}")
    engine = sa.create_engine(parsed, poolclass=NullPool)
    try:
        raw = engine.raw_connection()
    except SQLAlchemyError as exc:
        engine.dispose()
        raise QueryError(f"cannot open {redact(url)}: {error_line(exc)}") from None
    connection = raw.driver_connection
    try:
        connection.rollback()  # read_only can only change outside a transaction
        connection.read_only = True  # every transaction starts with BEGIN READ ONLY
        connection.execute(f"SET statement_timeout = {max(1, round(timeout * 1000))}")  # ms, this session only
        # prepare=True: the extended protocol, where the server itself refuses several statements.
        cursor = connection.execute(sql, prepare=True)
        names = [d.name for d in cursor.description or ()]
        rows = (cursor.fetchmany(limit) if limit else cursor.fetchall()) if cursor.description else []
    except engine.dialect.loaded_dbapi.Error as exc:
        message = error_line(exc)
        if getattr(exc, "sqlstate", None) == "57014":  # query_canceled: by the statement timeout
            raise _too_slow(timeout) from None
        if getattr(exc, "sqlstate", None) == "25006":  # read_only_sql_transaction
            raise QueryError(f"only reading statements are allowed: {_clip(sql)} (PostgreSQL: {message})") from None
        raise QueryError(f"SQL error: {message}") from None
    finally:
        raw.close()  # back to the NullPool, which rolls back and closes it
        engine.dispose()
    return names, rows


# ---------------------------------------------------------------- the pre-check


# Quoted text and comments are skipped whole, so a `;` or a keyword inside them counts for nothing.
_SQL_LEXEME = re.compile(r"""
    '(?:[^']|'')*'? | "(?:[^"]|"")*"? | `[^`]*`?
  | --[^\n]* | /\*.*?(?:\*/|\Z)
  | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)
  | (?P<word>[A-Za-z_]\w*) | (?P<semicolon>;) | \s+ | .
""", re.X | re.S)
# Every SQLite and PostgreSQL command that is not a query. Refusing them up front gives a clear message, and stops
# PostgreSQL's COPY ... TO, DO and LOAD, which a read-only transaction lets through. Any other text goes to the
# database, whose protections decide (and whose message explains a typo).
NON_READING_COMMANDS = frozenset("""
    abort alter analyze attach begin call checkpoint close cluster comment commit copy create deallocate declare
    delete detach discard do drop end execute fetch grant import insert listen load lock merge move notify pragma
    prepare reassign refresh reindex release replace reset revoke rollback savepoint security set start truncate
    unlisten update upsert vacuum
""".split())


def check_reading_statement(sql: str) -> None:
    """Refuse, before anything runs, text that is not exactly one statement, or one that is a known non-query."""
    statements, current = [], []
    for match in _SQL_LEXEME.finditer(sql):
        if match["semicolon"]:
            statements.append(current)
            current = []
        elif not match.group().isspace() and not match.group().startswith(("--", "/*")):
            current.append(match)
    statements = [s for s in [*statements, current] if s]
    if not statements:
        raise QueryError("empty SQL: give one SELECT statement")
    if len(statements) > 1:
        raise QueryError(f"exactly one statement is allowed, but got {len(statements)}: {_clip(sql)}")
    first_word = next((m["word"] for m in statements[0] if m["word"]), "")
    if first_word.lower() in NON_READING_COMMANDS:
        raise QueryError(f"only reading statements are allowed: {_clip(sql)}")


def _clip(sql: str, width: int = 80) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= width else one_line[: width - 3] + "..."
