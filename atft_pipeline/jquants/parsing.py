"""Wire rows <-> typed Polars frames, driven by the endpoint registry.

J-Quants numbers arrive as a JSON number, a numeric string, null, ``""``, ``"-"`` or ``"*"``
(fins/summary sends *every* value as a string). Parsing is "flexible numeric": anything that
is not a finite number becomes null, never 0. ``frame_to_rows`` is the inverse used by the
stand-in server, so the same registry defines both directions.
"""

from __future__ import annotations

import datetime as dt
import functools
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

    Missing keys become nulls; keys the registry does not know are not columns of the frame
    (the registry is the contract) but are never lost silently: ``unknown_fields`` names
    them and the client reports them. Polars reads every value as text and one vectorized
    select parses the columns, so a page of thousands of rows parses in milliseconds.
    """
    rows = [_flatten_nested(endpoint, r) for r in rows] if endpoint.nested else list(rows)
    fields = endpoint.fields_for(plan)
    # Every value as text (numbers, booleans "true"/"false"); "" (the API's blank) is null
    # like a missing key. Polars converts JSON's values in one pass; rows built in-process
    # may hold other objects (dates), which go through str().
    schema = {f.name: pl.String for f in fields}
    try:
        text = pl.from_dicts(rows, schema=schema, strict=False)
    except pl.exceptions.ComputeError:
        text = pl.DataFrame({f.name: [_as_text(r.get(f.name)) for r in rows] for f in fields}, schema=schema)
    return text.select(_parse_exprs(endpoint, plan))


@functools.cache
def _parse_exprs(endpoint: Endpoint, plan: Plan) -> list[pl.Expr]:
    """The typed columns of ``endpoint`` for ``plan`` from their text (built once: building
    the expressions cost as much as running them on a page)."""
    return [_parse_expr(f) for f in endpoint.fields_for(plan)]


def _as_text(value: Any) -> str | None:
    """A value as Polars writes JSON's as text (booleans "true"/"false")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unknown_fields(endpoint: Endpoint, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Sorted names of response fields the registry does not define for ``endpoint``.

    The API adds fields over time (the 2026-09 spec added ``ProdCat``, ``ShEq`` ...); a new
    one must be noticed, not dropped without a trace. A nested object counts as known when
    its own name is; its members are checked against the registry's flags.
    """
    rows = list(rows)
    names: set[str] = set().union(*(row.keys() for row in rows))
    found = names - set(endpoint.field_names)
    nested_name, nested_flags = endpoint.nested or (None, ())
    if nested_name in found:
        found.discard(nested_name)
        members = set().union(
            *(v.keys() for row in rows if isinstance(v := row.get(nested_name), Mapping))
        )
        found.update(f"{nested_name}.{k}" for k in members if k not in nested_flags)
    return sorted(found)


def missing_key_fields(endpoint: Endpoint, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Key fields of ``endpoint`` absent from at least one row (a malformed response)."""
    missing: set[str] = set()
    for row in rows:
        missing.update(k for k in endpoint.key if k not in row)
    return sorted(missing)


def _parse_expr(field: Field) -> pl.Expr:
    raw = pl.col(field.name)
    col = pl.when(raw != "").then(raw)  # "" (the API's blank) is null
    if field.kind is Kind.STR:
        return col.alias(field.name)
    text = col.str.strip_chars()
    if field.kind is Kind.NUM:
        number = text.str.replace_all(",", "", literal=True).cast(pl.Float64, strict=False)
        return pl.when(number.is_finite()).then(number).otherwise(None).alias(field.name)
    if field.kind is Kind.DATE:
        compact = text.str.replace_all("-", "", literal=True).str.slice(0, 8)
        return compact.str.to_date("%Y%m%d", strict=False).alias(field.name)
    lowered = text.str.to_lowercase()  # FLAG / BOOL
    return (
        pl.when(lowered.is_in(["1", "true", "1.0"])).then(True)
        .when(lowered.is_in(["0", "false", "0.0"])).then(False)
        .otherwise(None)
        .alias(field.name)
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


def _encode_expr(field: Field, numbers_as_strings: bool) -> pl.Expr:
    col = pl.col(field.name)
    if field.kind is Kind.DATE:
        return col.dt.to_string("%Y-%m-%d").fill_null("")
    if field.kind is Kind.FLAG:
        return pl.when(col.is_null()).then(None).when(col).then(pl.lit("1")).otherwise(pl.lit("0"))
    if field.kind is Kind.BOOL:
        return pl.when(col.is_null()).then(pl.lit("")).when(col).then(pl.lit("true")).otherwise(pl.lit("false"))
    if not numbers_as_strings:
        return col
    if field.kind is Kind.STR:
        return col.fill_null("")
    # fins/summary numerics: "152000000000", "66.76", "" for blanks
    whole = col.is_finite() & (col == col.round(0)) & (col.abs() < 1e18)
    return (
        pl.when(whole)
        .then(col.cast(pl.Int64, strict=False).cast(pl.String))
        .otherwise(col.cast(pl.String))
        .fill_null("")
    )


def frame_to_rows(endpoint: Endpoint, frame: pl.DataFrame, plan: Plan = Plan.PREMIUM) -> list[dict]:
    """Encode a typed frame as V2 wire rows (the inverse of ``rows_to_frame``).

    Dates become ``YYYY-MM-DD``; flags ``"0"``/``"1"``; fins/summary values are all strings
    with ``""`` for blanks; a ``nested`` field is re-assembled into its JSON object. Encoding
    is one vectorized select plus Polars' own row conversion.
    """
    fields = [f for f in endpoint.fields_for(plan) if f.name in frame.columns]
    encoded = frame.select(
        [_encode_expr(f, endpoint.numbers_as_strings).alias(f.name) for f in fields]
    )
    rows = encoded.to_dicts()
    if endpoint.nested is not None:
        name, flags = endpoint.nested
        keys = [(f"{name}.{flag}", flag) for flag in flags]
        for row in rows:
            row[name] = {flag: row.pop(column, None) for column, flag in keys}
    return rows
