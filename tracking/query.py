"""Read-only queries over the results database, as pandas DataFrames.

- :func:`trials_frame` reads one study's ``trials`` rows, filtered by a small, safe ``where`` language compiled to
  SQLAlchemy expressions on the table's real columns (user text never becomes SQL).
- :func:`run_sql` runs one reading SQL statement. Writing is refused by the database itself, not by our parsing:
  on SQLite a ``mode=ro`` connection plus an authorizer that allows only reads (``mode=ro`` alone still lets
  ``ATTACH`` create and write a file, and ``PRAGMA query_only`` can be switched off); on PostgreSQL a read-only
  transaction. A pre-check (exactly one statement, not a known non-query command) gives clearer messages and also
  blocks PostgreSQL's ``COPY ... TO``, ``DO`` and ``LOAD``, which a read-only transaction lets through.
- :func:`export` writes a study's trials to CSV or Parquet; :func:`query_text` is what ``fitgap query`` prints.

Bad input is a one-line :class:`QueryError` (exit code 2) and nothing is ever written to the database.
Column names are read from the live table, so columns added by later migrations are queryable at once.
"""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from tracking.results import redact


class QueryError(Exception):
    """A query cannot run as asked: unknown study or column, bad syntax, a writing statement, a bad format."""

    exit_code = 2


QUERY_FORMATS = ("table", "csv", "json")
EXPORT_FORMATS = ("csv", "parquet")
# What `fitgap query` shows on a terminal unless --columns says otherwise (those missing from the table are skipped).
TABLE_COLUMNS = (
    "number", "state", "value", "learning_rate", "activation", "loss", "regularizer", "regularization_weight",
    "best_epoch", "best_gap", "final_gap", "params_total", "duration_s",
)
HIDDEN_COLUMNS = ("id",)  # the surrogate key: only useful for joins, which --sql can do


# ---------------------------------------------------------------- the Python API


def trials_frame(url: str, study: str, where: str | None = None, order_by: str | None = None,
                 limit: int | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``trials`` rows of `study` matching `where`, sorted by `order_by` (default: trial number).

    where: comparisons ``= != <> < <= > >=`` between a column and a number, a 'quoted string', true/false or
    another column; ``col [not] in (v, ...)``; ``col is [not] null``; ``and``, ``or``, ``not`` and parentheses.
    order_by: ``col``, ``-col`` or ``col desc`` (comma-separated for several keys); missing values sort last.
    columns: which columns, in that order [default: all but ``id``]. Integers come back as ``Int64``, floats as
    ``float64``, booleans as ``boolean`` and text as ``str`` dtypes.
    """
    if columns:
        def pick(table):
            return [table.c[_column(table, name, "columns")] for name in columns]
    else:
        def pick(table):
            return [c for c in table.c if c.name not in HIDDEN_COLUMNS]
    return _read_trials(url, study, where, order_by, limit, pick)


def _read_trials(url: str, study: str, where: str | None, order_by: str | None, limit: int | None,
                 pick: Callable[[sa.TableClause], list[sa.ColumnClause]]) -> pd.DataFrame:
    _check_limit(limit)
    engine = _open(url)
    try:
        with engine.connect() as conn:
            table = _trials_table(conn, url)
            wanted = pick(table)
            query = sa.select(*wanted).where(table.c.study == study)
            if where and where.strip():
                query = query.where(compile_where(where, table))
            query = query.order_by(*_order(order_by, table), table.c.number)
            if limit is not None:
                query = query.limit(limit)
            rows = conn.execute(query).all()
            if not rows:
                _check_study(conn, table, study)
    except SQLAlchemyError as exc:
        raise QueryError(f"cannot read {redact(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    frame = pd.DataFrame.from_records(rows, columns=[c.name for c in wanted])
    return frame.astype({c.name: _dtype(c.type) for c in wanted})


def known_studies(url: str) -> list[str]:
    """The studies that have trials in the results database, sorted."""
    engine = _open(url)
    try:
        with engine.connect() as conn:
            return _studies(conn, _trials_table(conn, url))
    except SQLAlchemyError as exc:
        raise QueryError(f"cannot read {redact(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def run_sql(url: str, sql: str, limit: int | None = None) -> pd.DataFrame:
    """The result of one reading SQL statement (at most `limit` rows). Anything that would write is refused."""
    _check_limit(limit)
    check_reading_statement(sql)
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        names, rows = _run_sqlite(_sqlite_file(parsed, url), sql, limit)
    else:
        names, rows = _run_postgresql(parsed, url, sql, limit)
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
               format: str = "table") -> str:
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
        frame = run_sql(url, sql, limit)
    elif study is None:
        raise QueryError(f"name a study or give --sql; {_studies_text(known_studies(url))}")
    else:
        if columns or format != "table":
            frame = trials_frame(url, study, where, order_by, limit, columns)
        else:
            shown = dict.fromkeys([*TABLE_COLUMNS, *_names_in(where), *_names_in(order_by)])
            # Defaults a table lacks are skipped; a misspelt name in where/order_by fails when they compile.
            frame = _read_trials(url, study, where, order_by, limit,
                                 lambda table: [table.c[name] for name in shown if name in table.c])
    return _render(frame, format, "no matching trials" if sql is None else "no rows")


# ---------------------------------------------------------------- the where language


_WHERE_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)
""", re.X)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def compile_where(where: str, table: sa.TableClause) -> sa.ColumnElement[bool]:
    """`where` as a SQLAlchemy expression on `table`'s columns; values are bound parameters, never SQL text."""
    return _WhereParser(where, table).parse()


class _WhereParser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := not_expr ('and' not_expr)*;
    not_expr := 'not' not_expr | '(' or_expr ')' | comparison."""

    def __init__(self, text: str, table: sa.TableClause):
        self.text, self.table = text, table
        self.tokens = _tokenize(text)
        self.at = 0

    def parse(self) -> sa.ColumnElement[bool]:
        expression = self._or()
        if self.at < len(self.tokens):
            self._fail("expected `and`, `or` or the end")
        return expression

    def _or(self):
        terms = [self._and()]
        while self._accept("or"):
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else sa.or_(*terms)

    def _and(self):
        terms = [self._not()]
        while self._accept("and"):
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else sa.and_(*terms)

    def _not(self):
        if self._accept("not"):
            return sa.not_(self._not())
        if self._accept("("):
            inner = self._or()
            self._expect(")")
            return inner
        return self._comparison()

    def _comparison(self):
        left = self._operand()
        if self._accept("is"):
            negate = self._accept("not")
            self._expect("null")
            column = self._as_column(left, "is null")
            return column.is_not(None) if negate else column.is_(None)
        negate = self._accept("not")
        if negate or self._accept("in"):
            if negate:
                self._expect("in")
            column = self._as_column(left, "in")
            self._expect("(")
            values = [self._value_for(column)]
            while self._accept(","):
                values.append(self._value_for(column))
            self._expect(")")
            return column.not_in(values) if negate else column.in_(values)
        op = self._next("op")
        if op not in _COMPARE:
            self._fail("expected a comparison (= != < <= > >=), `in` or `is`", back=1)
        right = self._operand()
        if isinstance(left, sa.ColumnElement) and isinstance(right, sa.ColumnElement):
            _check_comparable(left, right)
        elif isinstance(left, sa.ColumnElement):
            right = sa.literal(_checked(left, right))
        elif isinstance(right, sa.ColumnElement):
            left = sa.literal(_checked(right, left))
        else:
            self._fail("a comparison needs a column on one side", back=1)
        return _COMPARE[op](left, right)

    def _operand(self):
        kind, text, _ = self._peek() or ("end", "", 0)
        if kind == "name" and text.lower() not in _KEYWORDS:
            self.at += 1
            return self.table.c[_column(self.table, text, "where")]
        return self._literal()

    def _literal(self):
        kind, text, _ = self._peek() or ("end", "", 0)
        self.at += 1
        if kind == "number":
            return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "name" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind == "name" and text.lower() == "null":
            self._fail("test missing values with `is null`", back=1)
        self._fail("expected a column, a number, a 'quoted string', true or false", back=1)

    def _value_for(self, column):
        return _checked(column, self._literal())

    def _as_column(self, operand, what: str):
        if not isinstance(operand, sa.ColumnElement):
            self._fail(f"`{what}` needs a column on its left", back=1)
        return operand

    def _peek(self):
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self, kind: str) -> str:
        token = self._peek()
        if token is None or token[0] != kind:
            self._fail(f"expected {'an operator' if kind == 'op' else kind}")
        self.at += 1
        return token[1]

    def _accept(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token[1].lower() == word and token[0] in ("name", "op"):
            self.at += 1
            return True
        return False

    def _expect(self, word: str) -> None:
        if not self._accept(word):
            self._fail(f"expected `{word}`")

    def _fail(self, message: str, back: int = 0):
        self.at -= back
        token = self._peek()
        found = f"`{token[1]}` at position {token[2] + 1}" if token else "the end"
        raise QueryError(f"where: {message}, but got {found} in {self.text!r}")


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, at = [], 0
    while at < len(text):
        match = _WHERE_TOKEN.match(text, at)
        if not match:
            hint = " (strings take single quotes)" if text[at] == '"' else ""
            raise QueryError(f"where: unexpected {text[at]!r} at position {at + 1}{hint} in {text!r}")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group(), at))
        at = match.end()
    return tokens


def _names_in(text: str | None) -> list[str]:
    """The column names `text` (a where expression or an order) mentions, lower-cased, keywords left out."""
    words = re.findall(r"'(?:[^']|'')*'|[A-Za-z_]\w*", text or "")
    return [w.lower() for w in words if not w.startswith("'") and w.lower() not in _KEYWORDS | {"asc", "desc"}]


def _kind(type_: sa.types.TypeEngine) -> str:
    if isinstance(type_, sa.Boolean):
        return "boolean"
    if isinstance(type_, (sa.Integer, sa.Float, sa.Numeric)):
        return "number"
    return "text"


def _checked(column: sa.ColumnElement, value: Any) -> Any:
    """`value` if it fits `column`'s kind (0 and 1 become booleans for a boolean column), else a QueryError."""
    kind = _kind(column.type)
    if kind == "boolean" and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    ok = {"boolean": isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "text": isinstance(value, str)}[kind]
    if not ok:
        expected = {"boolean": "true or false", "number": "a number", "text": "a 'quoted string'"}[kind]
        raise QueryError(f"where: `{column.name}` holds {kind}s: compare it with {expected}, but got {value!r}")
    return value


def _check_comparable(left: sa.ColumnElement, right: sa.ColumnElement) -> None:
    if _kind(left.type) != _kind(right.type):
        raise QueryError(f"where: cannot compare `{left.name}` ({_kind(left.type)}) with `{right.name}`"
                         f" ({_kind(right.type)})")


def _order(order_by: str | None, table: sa.TableClause) -> list:
    if not order_by or not order_by.strip():
        return []
    keys = []
    for item in order_by.split(","):
        match = re.fullmatch(r"\s*(-)?\s*([A-Za-z_]\w*)(?:\s+(asc|desc))?\s*", item, re.I)
        if not match or (match[1] and match[3]):
            raise QueryError(f"order_by: expected `col`, `-col` or `col desc`, but got {item.strip()!r}")
        column = table.c[_column(table, match[2], "order_by")]
        descending = bool(match[1]) or (match[3] or "").lower() == "desc"
        keys.append((column.desc() if descending else column.asc()).nulls_last())
    return keys


def _column(table: sa.TableClause, name: str, where: str) -> str:
    """The table's column called `name` (any case), or a one-line error naming the closest ones."""
    names = [c.name for c in table.c if c.name not in HIDDEN_COLUMNS]
    if name.lower() in names:
        return name.lower()
    close = difflib.get_close_matches(name.lower(), names, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"the columns are {', '.join(names)}"
    if where == "where" and not close:
        hint = f"text values take single quotes ('{name}'); {hint}"
    raise QueryError(f"{where}: unknown column {name!r}; {hint}")


# ---------------------------------------------------------------- opening the database read-only


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise QueryError(f"not a database URL: {redact(url)}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise QueryError(f"the results database is SQLite or PostgreSQL, but got {redact(url)}")
    return parsed


def _sqlite_file(parsed: URL, url: str) -> Path:
    database = parsed.database or ""
    if database.startswith("file:"):  # sqlite:///file:path?mode=...&uri=true
        database = database.removeprefix("file:").split("?")[0]
    if not database or database == ":memory:":
        raise QueryError(f"an in-memory database has no results: {redact(url)}")
    path = Path(database)
    if not path.is_file():
        raise QueryError(f"no results database at {redact(url)}")
    return path


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


def _open(url: str) -> Engine:
    """An engine that cannot write: SQLite opened with ``mode=ro``, PostgreSQL in read-only transactions."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed, url)
        return sa.create_engine("sqlite://", creator=lambda: _sqlite_connect(path), poolclass=NullPool)
    try:
        return sa.create_engine(parsed, poolclass=NullPool, execution_options={"postgresql_readonly": True})
    except (SQLAlchemyError, ImportError) as exc:
        raise QueryError(f"cannot open {redact(url)}: {_first_line(exc)}") from None


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
    return {"boolean": "boolean", "text": "str"}.get(_kind(type_)) or (
        "Int64" if isinstance(type_, sa.Integer) else "float64")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise QueryError(f"`limit` must be an integer >= 1, but got {limit=}")


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------- raw SQL, read-only


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


def _run_sqlite(path: Path, sql: str, limit: int | None) -> tuple[list[str], list[tuple]]:
    denied: list[str] = []
    connection = _sqlite_connect(path, denied)
    try:
        cursor = connection.execute(sql)
        names = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
    except sqlite3.Error as exc:
        if "one statement" in str(exc):  # what the lexer missed, e.g. a `;` inside quoting SQLite lacks
            raise QueryError(f"exactly one statement is allowed: {_clip(sql)}") from None
        if denied:
            raise QueryError(f"only reading statements are allowed: {_clip(sql)} (SQLite refused {denied[0]})") \
                from None
        raise QueryError(f"SQL error: {_first_line(exc)}") from None
    finally:
        connection.close()
    return names, rows


def _run_postgresql(parsed: URL, url: str, sql: str, limit: int | None) -> tuple[list[str], list[tuple]]:
    if parsed.get_driver_name() != "psycopg":
        raise QueryError(f"--sql on PostgreSQL needs the psycopg driver (postgresql+psycopg://), got {redact(url)}")
    engine = sa.create_engine(parsed, poolclass=NullPool)
    try:
        raw = engine.raw_connection()
    except SQLAlchemyError as exc:
        engine.dispose()
        raise QueryError(f"cannot open {redact(url)}: {_first_line(exc)}") from None
    connection = raw.driver_connection
    try:
        connection.rollback()  # read_only can only change outside a transaction
        connection.read_only = True  # every transaction starts with BEGIN READ ONLY
        # prepare=True: the extended protocol, where the server itself refuses several statements.
        cursor = connection.execute(sql, prepare=True)
        names = [d.name for d in cursor.description or ()]
        rows = (cursor.fetchmany(limit) if limit else cursor.fetchall()) if cursor.description else []
    except engine.dialect.loaded_dbapi.Error as exc:
        message = _first_line(exc)
        if getattr(exc, "sqlstate", None) == "25006":  # read_only_sql_transaction
            raise QueryError(f"only reading statements are allowed: {_clip(sql)} (PostgreSQL: {message})") from None
        raise QueryError(f"SQL error: {message}") from None
    finally:
        raw.close()  # back to the NullPool, which rolls back and closes it
        engine.dispose()
    return names, rows


def _clip(sql: str, width: int = 80) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= width else one_line[: width - 3] + "..."


# ---------------------------------------------------------------- rendering


def _render(frame: pd.DataFrame, format: str, empty: str) -> str:
    if format == "csv":
        return frame.to_csv(index=False)
    if format == "json":  # one record a line; json.dumps keeps every digit (to_json rounds to 15 decimals)
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        lines = (json.dumps(r, default=_json_value, allow_nan=False) for r in records)
        return "[\n" + ",\n".join(lines) + "\n]\n" if records else "[]\n"
    if frame.empty:
        return empty + "\n"
    floats = {c: _short for c in frame.columns if pd.api.types.is_float_dtype(frame[c])}
    return frame.to_string(index=False, na_rep="", formatters=floats) + "\n"


def _json_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)  # numpy scalars; dates and the like as text


def _short(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.4g}"
