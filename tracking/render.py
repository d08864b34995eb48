"""Tracking side: a query's rows as ``fitgap query`` prints them — an aligned table, CSV or JSON. Never imports
studies, training or TensorFlow.

table: floats to 4 significant digits, missing values blank, `empty` when there are no rows. csv: every digit, as
pandas writes it. json: one record a line, missing values null, every digit kept.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

QUERY_FORMATS = ("table", "csv", "json")


def render(frame: pd.DataFrame, format: str, empty: str) -> str:
    """`frame` as text in one of QUERY_FORMATS; a table with no rows reads `empty`."""
    if format == "csv":
        return frame.to_csv(index=False)
    if format == "json":  # json.dumps keeps every digit (to_json rounds to 15 decimals)
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
