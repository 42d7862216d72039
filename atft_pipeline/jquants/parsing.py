"""Wire rows <-> typed Polars frames, driven by the endpoint registry.

J-Quants numbers arrive as a JSON number, a numeric string, null, ``""``, ``"-"`` or ``"*"``
(fins/summary sends *every* value as a string). Parsing is "flexible numeric": anything that
is not a finite number becomes null, never 0. ``frame_to_rows`` is the inverse used by the
stand-in server, so the same registry defines both directions.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from atft_pipeline.jquants.endpoints import DTYPES, Endpoint, Field, Kind, Plan

_NULL_STRINGS = frozenset({"", "-", "*", "null", "None", "NaN", "nan"})


def parse_number(value: Any) -> float | None:
    """Flexible numeric parse: number or numeric string -> float; sentinels/garbage -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        s = value.strip().replace(",", "")
        if s in _NULL_STRINGS:
            return None
        try:
            f = float(s)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def parse_flag(value: Any) -> bool | None:
    """``"0"``/``"1"``, ``"true"``/``"false"`` (and real booleans/ints) -> bool; blanks -> None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    s = str(value).strip().lower()
    if s in ("1", "true"):
        return True
    if s in ("0", "false"):
        return False
    return None


def parse_date(value: Any) -> dt.date | None:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` -> date; blanks -> None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    s = str(value).strip()
    if s in _NULL_STRINGS:
        return None
    if len(s) == 8 and s.isdigit():
        s = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    try:
        return dt.date.fromisoformat(s[:10])
    except ValueError:
        return None


def _parse_str(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


_PARSERS = {
    Kind.STR: _parse_str,
    Kind.DATE: parse_date,
    Kind.NUM: parse_number,
    Kind.FLAG: parse_flag,
    Kind.BOOL: parse_flag,
}


def _flatten_nested(endpoint: Endpoint, row: Mapping[str, Any]) -> Mapping[str, Any]:
    if endpoint.nested is None:
        return row
    name, flags = endpoint.nested
    nested = row.get(name)
    if not isinstance(nested, Mapping):
        return row
    flat = dict(row)
    for flag in flags:
        flat[f"{name}.{flag}"] = nested.get(flag)
    return flat


def rows_to_frame(
    endpoint: Endpoint, rows: Iterable[Mapping[str, Any]], plan: Plan = Plan.PREMIUM
) -> pl.DataFrame:
    """Parse API rows into a frame with exactly the registry's columns and dtypes for ``plan``.

    Missing keys become nulls; keys the registry does not know are dropped (the API adds
    fields over time; the registry is the contract).
    """
    fields = endpoint.fields_for(plan)
    columns: dict[str, list[Any]] = {f.name: [] for f in fields}
    parsers = [(f.name, _PARSERS[f.kind]) for f in fields]
    for raw in rows:
        row = _flatten_nested(endpoint, raw)
        for name, parse in parsers:
            columns[name].append(parse(row.get(name)))
    return pl.DataFrame(
        {f.name: pl.Series(f.name, columns[f.name], dtype=DTYPES[f.kind]) for f in fields},
        schema=endpoint.schema(plan),
    )


def coerce_frame(endpoint: Endpoint, frame: pl.DataFrame, plan: Plan = Plan.PREMIUM) -> pl.DataFrame:
    """Cast a stored frame (e.g. a replay Parquet file) to the registry schema for ``plan``.

    Columns the file lacks are added as nulls; strings are parsed with the same flexible rules
    as wire values, so a replay file may store numbers as strings, dates as strings, etc.
    """
    exprs: list[pl.Expr] = []
    for f in endpoint.fields_for(plan):
        target = DTYPES[f.kind]
        if f.name not in frame.columns:
            exprs.append(pl.lit(None, dtype=target).alias(f.name))
            continue
        col = pl.col(f.name)
        source = frame.schema[f.name]
        if f.kind is Kind.NUM and source.is_numeric():
            # Like parse_number: NaN and +-inf become null (a Float64 file may hold them).
            as_float = col.cast(pl.Float64)
            exprs.append(pl.when(as_float.is_finite()).then(as_float).alias(f.name))
        elif source == target:
            exprs.append(col)
        elif f.kind is Kind.DATE and isinstance(source, pl.Datetime):
            exprs.append(col.dt.date())
        elif f.kind is Kind.STR:
            exprs.append(col.cast(pl.String))
        else:
            parse = _PARSERS[f.kind]
            exprs.append(
                col.map_elements(parse, return_dtype=target, skip_nulls=True).alias(f.name)
            )
    return frame.select(exprs)


def _encode(field: Field, value: Any, numbers_as_strings: bool) -> Any:
    if field.kind is Kind.STR:
        return value
    if field.kind is Kind.DATE:
        return value.isoformat() if value is not None else ""
    if field.kind is Kind.FLAG:
        return None if value is None else ("1" if value else "0")
    if field.kind is Kind.BOOL:
        return "" if value is None else ("true" if value else "false")
    # Kind.NUM
    if numbers_as_strings:
        if value is None:
            return ""
        return repr(float(value)) if not float(value).is_integer() else str(int(value))
    return value


def frame_to_rows(endpoint: Endpoint, frame: pl.DataFrame, plan: Plan = Plan.PREMIUM) -> list[dict]:
    """Encode a typed frame as V2 wire rows (the inverse of ``rows_to_frame``).

    Dates become ``YYYY-MM-DD``; flags ``"0"``/``"1"``; fins/summary numerics strings with
    ``""`` for blanks; a ``nested`` field is re-assembled into its JSON object.
    """
    fields = [f for f in endpoint.fields_for(plan) if f.name in frame.columns]
    nested_name, nested_flags = endpoint.nested or ("", ())
    nested_cols = {f"{nested_name}.{flag}": flag for flag in nested_flags}
    out: list[dict] = []
    for record in frame.select([f.name for f in fields]).iter_rows(named=True):
        row: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for f in fields:
            value = _encode(f, record[f.name], endpoint.numbers_as_strings)
            if f.name in nested_cols:
                nested[nested_cols[f.name]] = value
            else:
                row[f.name] = value
        if nested_name:
            row[nested_name] = nested
        out.append(row)
    return out
