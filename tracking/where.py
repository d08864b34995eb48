"""Tracking side: the ``--where`` and ``--order-by`` language of ``fitgap query``, compiled to SQLAlchemy
expressions on a table's real columns. Never imports studies, training or TensorFlow, and touches no database.

User text never becomes SQL: names must be the table's columns (any case) and values become bound parameters,
checked against the column's kind (number, text, boolean). Any mistake is a one-line :class:`QueryError` naming
the position, or the closest column names.

where: comparisons ``= != <> < <= > >=`` between a column and a number, a 'quoted string', true/false or another
column; ``col [not] in (v, ...)``; ``col is [not] null``; ``and``, ``or``, ``not`` and parentheses.
order_by: ``col``, ``-col`` or ``col desc`` (comma-separated for several keys); missing values sort last.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable

import sqlalchemy as sa

from fitgap.sweeps.vocabulary import excerpt, shorten
from fitgap.tracking.readonly import QueryError

HIDDEN_COLUMNS = ("id",)  # the surrogate key: only useful for joins, which --sql can do
MAX_NESTING = 50  # `not`s and parentheses inside one another: the parser (and SQLite's) recurse per level

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


def compile_order(order_by: str | None, table: sa.TableClause) -> list:
    """`order_by` as sort keys on `table`'s columns, missing values last; [] for no order."""
    if not order_by or not order_by.strip():
        return []
    keys = []
    for item in order_by.split(","):
        match = re.fullmatch(r"\s*(-)?\s*([A-Za-z_]\w*)(?:\s+(asc|desc))?\s*", item, re.I)
        if not match or (match[1] and match[3]):
            raise QueryError(f"order_by: expected `col`, `-col` or `col desc`, but got {excerpt(item.strip())}")
        column = table.c[find_column(table, match[2], "order_by")]
        descending = bool(match[1]) or (match[3] or "").lower() == "desc"
        keys.append((column.desc() if descending else column.asc()).nulls_last())
    return keys


def names_in(text: str | None) -> list[str]:
    """The column names `text` (a where expression or an order) mentions, lower-cased, keywords left out."""
    words = re.findall(r"'(?:[^']|'')*'|[A-Za-z_]\w*", text or "")
    return [w.lower() for w in words if not w.startswith("'") and w.lower() not in _KEYWORDS | {"asc", "desc"}]


def find_column(table: sa.TableClause, name: str, where: str) -> str:
    """The table's column called `name` (any case), or a one-line error naming the closest ones. `where` says which
    option named it (where, order_by, columns)."""
    names = [c.name for c in table.c if c.name not in HIDDEN_COLUMNS]
    if name.lower() in names:
        return name.lower()
    close = difflib.get_close_matches(name.lower(), names, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"the columns are {', '.join(names)}"
    if where == "where" and not close:
        hint = f"text values take single quotes ({excerpt(name)}); {hint}"
    raise QueryError(f"{where}: unknown column {excerpt(name)}; {hint}")


def column_kind(type_: sa.types.TypeEngine) -> str:
    """What a value compared with a column of this type must be: boolean, number or text."""
    if isinstance(type_, sa.Boolean):
        return "boolean"
    if isinstance(type_, (sa.Integer, sa.Float, sa.Numeric)):
        return "number"
    return "text"


class _WhereParser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := not_expr ('and' not_expr)*;
    not_expr := 'not' not_expr | '(' or_expr ')' | comparison. Each `not` and `(` nests a level, MAX_NESTING at most."""

    def __init__(self, text: str, table: sa.TableClause):
        self.text, self.table = text, table
        self.tokens = _tokenize(text)
        self.at = 0
        self.depth = 0

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
        if self.depth > MAX_NESTING:  # self.depth: the `not`s and `(`s this call is inside
            self._fail(f"at most {MAX_NESTING} levels of `not` and parentheses")
        self.depth += 1
        try:
            if self._accept("not"):
                return sa.not_(self._not())
            if self._accept("("):
                inner = self._or()
                self._expect(")")
                return inner
            return self._comparison()
        finally:
            self.depth -= 1

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
            return self.table.c[find_column(self.table, text, "where")]
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
        found = f"`{shorten(token[1])}` at position {token[2] + 1}" if token else "the end"
        raise QueryError(f"where: {message}, but got {found} in {excerpt(self.text)}")


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, at = [], 0
    while at < len(text):
        match = _WHERE_TOKEN.match(text, at)
        if not match:
            hint = " (strings take single quotes)" if text[at] == '"' else ""
            raise QueryError(f"where: unexpected {text[at]!r} at position {at + 1}{hint} in {excerpt(text)}")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group(), at))
        at = match.end()
    return tokens


def _checked(column: sa.ColumnElement, value: Any) -> Any:
    """`value` if it fits `column`'s kind (0 and 1 become booleans for a boolean column), else a QueryError."""
    kind = column_kind(column.type)
    if kind == "boolean" and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    ok = {"boolean": isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "text": isinstance(value, str)}[kind]
    if not ok:
        expected = {"boolean": "true or false", "number": "a number", "text": "a 'quoted string'"}[kind]
        raise QueryError(f"where: `{column.name}` holds {kind}s: compare it with {expected}, but got {excerpt(value)}")
    return value


def _check_comparable(left: sa.ColumnElement, right: sa.ColumnElement) -> None:
    if column_kind(left.type) != column_kind(right.type):
        raise QueryError(f"where: cannot compare `{left.name}` ({column_kind(left.type)}) with `{right.name}`"
                         f" ({column_kind(right.type)})")
