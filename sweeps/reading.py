"""Spec language: reading a spec file — strict, bounded YAML, then `spec.parse_spec`.

PyYAML's safe loader (nothing executes), made strict where the plain one is lenient or unbounded: a key given twice is
refused, nesting and aliases are bounded, `1e-3` is a float, the file must be UTF-8. Every problem is one SpecError
line naming the file and, where it can, the line and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fitgap.sweeps.spec import SpecError, SweepSpec, parse_spec
from fitgap.sweeps.vocabulary import excerpt, shorten

MAX_DEPTH = 32  # YAML nesting; a spec needs about 6, and PyYAML recurses per level
MAX_ALIASED = 10_000  # values that YAML aliases may repeat: a few lines of aliases can stand for billions


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader (nothing executes), made strict where the plain one is lenient or unbounded: a key given
    twice is refused (the plain one keeps the last), nesting is bounded (PyYAML recurses per level), and `1e-3` is a
    float as in YAML 1.2 (YAML 1.1 reads it as a string, which a strict number field would refuse)."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        marks: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` is overridden by the keys beside it: that is its purpose
            key = self.construct_object(key_node)
            try:
                first = marks.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base class refuses it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {excerpt(key)} (first at line {first.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep)


_SpecLoader.add_implicit_resolver(  # 1e-3, 2E5, 1.0e3
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; raise SpecError with one line naming the field and the bad value."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: a spec is UTF-8 text, but byte {e.start + 1} is {e.object[e.start]:#04x}") from None
    try:
        data = yaml.load(text, Loader=_SpecLoader)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a value PyYAML cannot build (2001-13-45, 5,000 digits)
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # some of PyYAML's span lines
        raise SpecError(f"{path}: invalid YAML{where}: {shorten(problem)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping of fields, but got {type(data).__name__}")
    _check_aliases(data, path)
    spec = parse_spec(data, source=str(path))
    spec._base_dir = path.resolve().parent
    return spec


def _check_aliases(data: Any, path: Path) -> None:
    """An alias repeats its anchor's value without copying it, so a few lines can stand for billions of values
    ("billion laughs") that validation and messages would walk: refuse more than MAX_ALIASED repeated values."""
    seen: set[int] = set()
    stack, repeated = [(data, False)], 0
    while stack:
        value, again = stack.pop()
        if isinstance(value, (dict, list)):
            again = again or id(value) in seen
            seen.add(id(value))
            stack.extend((child, again) for child in (value if isinstance(value, list) else [*value, *value.values()]))
        repeated += again
        if repeated > MAX_ALIASED:
            raise SpecError(f"{path}: YAML aliases repeat more than {MAX_ALIASED:,} values; write the values out")
