"""Tracking side: a report as a document — headings, paragraphs, lists, tables and PNG images — and its two
renderings, Markdown (images as files beside it) and one self-contained HTML page (images embedded). Never imports
studies, training or TensorFlow.

Paragraphs and list items are Markdown text, whose ``**bold**`` and backquoted code render in HTML too. Table
cells and numbers read the same in both: 4 significant digits, ``—`` when absent. The things a report could not show
(`Document.lacks`) become a "What is missing" section after the answer and the overview.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd


@dataclass
class Document:
    """A report as blocks: ("h2", text), ("p", text), ("list", items), ("table", headers, rows), ("img", name, alt)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("list", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(headers), [[_cell(v) for v in row] for row in rows]))

    def image(self, name: str, png: bytes, alt: str) -> None:
        self.images[name] = png
        self.blocks.append(("img", name, alt))

    def lacks(self, what: str) -> None:
        self.missing.append(what)

    def unavailable(self, what: str) -> None:
        """A section that cannot be shown: `what` goes to What is missing, and the section points there."""
        self.lacks(what)
        self.p("Not available (see What is missing).")


def num(value: Any) -> str:
    """A number as the report shows it: 4 significant digits; ``—`` for None, NaN or infinity."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4g}"


def to_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for block in _with_missing(doc):
        kind = block[0]
        if kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines)


def to_html(doc: Document) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(doc.title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{e(doc.title)}</h1>"]
    for block in _with_missing(doc):
        kind = block[0]
        if kind == "h2":
            parts.append(f"<h2 id='{_anchor(block[1])}'>{e(block[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(doc.images[block[1]]).decode()
            parts.append(f"<figure><img alt='{e(block[2])}' data-name='{e(block[1])}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{e(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _with_missing(doc: Document, after: int = 2) -> list[tuple]:
    """The blocks, with a "What is missing" section after the first `after` sections (a report's answer and
    overview)."""
    missing = [("h2", "What is missing"), ("list", doc.missing)] if doc.missing else []
    heads = [i for i, b in enumerate(doc.blocks) if b[0] == "h2"]
    at = heads[after] if len(heads) > after else len(doc.blocks)
    return doc.blocks[:at] + missing + doc.blocks[at:]


_CSS = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}")


def _inline(text: str) -> str:
    """Escaped text with **bold** and `code` from the Markdown source."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (float, np.floating)):
        return num(float(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)
