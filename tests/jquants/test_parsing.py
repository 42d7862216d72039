"""Wire rows <-> typed frames (parsing.py), for every endpoint in the registry."""

from __future__ import annotations

import datetime as dt
import json
import math

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atft_pipeline.jquants import ENDPOINTS, Endpoint, Kind, Plan
from atft_pipeline.jquants.endpoints import DTYPES
from atft_pipeline.jquants.parsing import (
    coerce_frame,
    frame_to_rows,
    parse_date,
    parse_flag,
    parse_number,
    rows_to_frame,
)

# Three rows per column: two values that exercise the encoding, and a null.
SAMPLE_VALUES: dict[Kind, list[object]] = {
    Kind.STR: ["72030", "TOPIX Core30, 1st", None],
    Kind.DATE: [dt.date(2024, 1, 5), dt.date(2008, 5, 7), None],
    Kind.NUM: [0.1 + 0.2, -79_205_861_000_000.0, None],
    Kind.FLAG: [True, False, None],
    Kind.BOOL: [False, True, None],
}


def synthetic_frame(endpoint: Endpoint, plan: Plan) -> pl.DataFrame:
    fields = endpoint.fields_for(plan)
    # Rotate the rows per column so that no row is all-null and columns differ from each other.
    data = {
        f.name: pl.Series(
            f.name,
            SAMPLE_VALUES[f.kind][i % 3:] + SAMPLE_VALUES[f.kind][: i % 3],
            dtype=DTYPES[f.kind],
        )
        for i, f in enumerate(fields)
    }
    return pl.DataFrame(data, schema=endpoint.schema(plan))


def over_the_wire(rows: list[dict]) -> list[dict]:
    """Through real JSON, as the stand-in server sends and the client receives."""
    return json.loads(json.dumps(rows, allow_nan=False))


@pytest.mark.parametrize("plan", list(Plan))
@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_round_trip_every_endpoint(path, plan):
    endpoint = ENDPOINTS[path]
    frame = synthetic_frame(endpoint, plan)
    rows = over_the_wire(frame_to_rows(endpoint, frame, plan))
    assert len(rows) == 3
    assert_frame_equal(rows_to_frame(endpoint, rows, plan), frame)


def test_round_trip_empty_frame():
    for endpoint in ENDPOINTS.values():
        empty = endpoint.schema(Plan.PREMIUM).to_frame()
        assert frame_to_rows(endpoint, empty) == []
        assert_frame_equal(rows_to_frame(endpoint, []), empty)


def test_fins_summary_wire_rows_are_all_strings():
    endpoint = ENDPOINTS["fins/summary"]
    assert len(endpoint.fields) == 111
    frame = synthetic_frame(endpoint, Plan.FREE)
    rows = frame_to_rows(endpoint, frame)
    kinds = {f.name: f.kind for f in endpoint.fields}
    for row in rows:
        assert set(row) == set(kinds)
        for name, value in row.items():
            if kinds[name] is Kind.STR:
                assert value is None or isinstance(value, str)
            else:
                assert isinstance(value, str), (name, value)
    # Blanks are "", integral numbers have no ".0", others keep full precision.
    sales = [row["Sales"] for row in rows]
    assert sorted(sales) == sorted(["", repr(0.1 + 0.2), "-79205861000000"])
    assert {row["MatChgSub"] for row in rows} == {"true", "false", ""}


def test_margin_alert_rows_nest_pub_reason():
    endpoint = ENDPOINTS["markets/margin-alert"]
    frame = synthetic_frame(endpoint, Plan.STANDARD)
    rows = frame_to_rows(endpoint, frame, Plan.STANDARD)
    flags = endpoint.nested[1]
    for row, record in zip(rows, frame.iter_rows(named=True), strict=True):
        assert not any(key.startswith("PubReason.") for key in row)
        expected = {
            flag: None if record[f"PubReason.{flag}"] is None
            else ("1" if record[f"PubReason.{flag}"] else "0")
            for flag in flags
        }
        assert row["PubReason"] == expected


def test_rows_to_frame_drops_unknown_and_fills_missing_keys():
    endpoint = ENDPOINTS["indices/bars/daily/topix"]
    frame = rows_to_frame(endpoint, [{"Date": "2022-06-28", "C": 1907.38, "Extra": 1}])
    assert frame.columns == ["Date", "O", "H", "L", "C"]
    assert frame.row(0) == (dt.date(2022, 6, 28), None, None, None, 1907.38)


def test_premium_only_fields_are_dropped_for_lower_plans():
    endpoint = ENDPOINTS["equities/bars/daily"]
    row = {"Date": "2023-03-24", "Code": "86970", "C": 2045.0, "MC": 2050.0, "AC": 2045.0}
    free = rows_to_frame(endpoint, [row], Plan.FREE)
    premium = rows_to_frame(endpoint, [row], Plan.PREMIUM)
    assert "MC" not in free.columns and free.width == 16
    assert premium["MC"].item() == 2050.0 and premium.width == 42


NUMBER_WIRE = [
    (2047, 2047.0), (2047.5, 2047.5), ("123.5", 123.5), ("1,234", 1234.0),
    (" -20 ", -20.0), ("1e3", 1000.0), ("0.004", 0.004), ("", None), ("-", None),
    ("*", None), (None, None), ("abc", None), (True, None), (math.inf, None),
    ("NaN", None), (float("nan"), None), ({"v": 1}, None), (1e-7, 1e-7), (12345678901234, 12345678901234.0),
]
DATE_WIRE = [
    ("2024-01-05", dt.date(2024, 1, 5)), ("20240105", dt.date(2024, 1, 5)),
    ("2024-01-05T00:00:00", dt.date(2024, 1, 5)),
    (dt.datetime(2024, 1, 5, 9), dt.date(2024, 1, 5)),
    (dt.date(2024, 1, 5), dt.date(2024, 1, 5)), ("", None), ("-", None), (None, None),
    ("2024-13-01", None),
]
FLAG_WIRE = [
    ("1", True), ("0", False), ("true", True), ("false", False), ("TRUE", True), (1, True),
    (0, False), (False, False), (True, True), ("", None), (None, None), ("x", None),
]


@pytest.mark.parametrize(("wire", "expected"), NUMBER_WIRE)
def test_parse_number(wire, expected):
    assert parse_number(wire) == expected


@pytest.mark.parametrize(("wire", "expected"), DATE_WIRE)
def test_parse_date(wire, expected):
    assert parse_date(wire) == expected


@pytest.mark.parametrize(("wire", "expected"), FLAG_WIRE)
def test_parse_flag(wire, expected):
    assert parse_flag(wire) is expected


@pytest.mark.parametrize(
    ("kind", "cases"), [(Kind.NUM, NUMBER_WIRE), (Kind.DATE, DATE_WIRE), (Kind.FLAG, FLAG_WIRE)]
)
@pytest.mark.parametrize("json_only", [True, False])
def test_a_page_parses_each_value_like_the_scalar_parser(kind, cases, json_only):
    """rows_to_frame parses a whole column at once; each value ends as the scalar parser says,
    for pages of JSON values and for rows holding other objects (dates, dicts)."""
    endpoint, field = next((e, f) for e in ENDPOINTS.values() for f in e.fields if f.kind is kind)
    if json_only:
        cases = [(w, e) for w, e in cases if w is None or isinstance(w, str | int | float | bool)]
    frame = rows_to_frame(endpoint, [{field.name: wire} for wire, _ in cases], Plan.PREMIUM)
    assert frame[field.name].to_list() == [expected for _, expected in cases]


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_coerce_frame_from_all_string_columns(path):
    """A replay file may store everything as strings; coercion gives the typed frame back."""
    endpoint = ENDPOINTS[path]
    frame = synthetic_frame(endpoint, Plan.PREMIUM)
    as_strings = pl.DataFrame(
        {name: [None if v is None else str(v) for v in frame[name].to_list()]
         for name in frame.columns},
        schema={name: pl.String for name in frame.columns},
    )
    coerced = coerce_frame(endpoint, as_strings)
    for f in endpoint.fields:
        if f.kind is Kind.NUM:
            # str(float) round-trips exactly in Python.
            assert coerced[f.name].to_list() == frame[f.name].to_list()
    assert_frame_equal(coerced, frame)


def test_coerce_frame_casts_numbers_dates_and_adds_missing_columns():
    endpoint = ENDPOINTS["indices/bars/daily/topix"]
    stored = pl.DataFrame(
        {
            "Date": [dt.datetime(2022, 6, 28), dt.datetime(2022, 6, 29)],
            "C": pl.Series([1907, 1888], dtype=pl.Int64),
            "O": [float("nan"), 1893.12],
            "L": pl.Series([float("inf"), 1881.05], dtype=pl.Float32),
        }
    )
    coerced = coerce_frame(endpoint, stored)
    assert coerced.schema == endpoint.schema()
    assert coerced["Date"].to_list() == [dt.date(2022, 6, 28), dt.date(2022, 6, 29)]
    assert coerced["C"].to_list() == [1907.0, 1888.0]
    assert coerced["O"].to_list() == [None, 1893.12]  # NaN and inf are never kept
    assert coerced["L"].to_list() == [None, pytest.approx(1881.05)]
    assert coerced["H"].null_count() == 2
