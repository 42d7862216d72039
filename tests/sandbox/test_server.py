"""The J-Quants V2 stand-in server: API rules in-process, then end to end over real sockets."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import SecretStr, ValidationError

from atft_pipeline.calendar import calendar_frame, trading_days
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.parsing import rows_to_frame
from atft_pipeline.sandbox.faults import FaultInjector, FaultSettings, parse_faults
from atft_pipeline.sandbox.query import EndpointTable, plan_window
from atft_pipeline.sandbox.ratelimit import SlidingWindowLimiter
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from tests.helpers import REPO_ROOT

DAYS = trading_days("2024-01-04", "2024-01-12")  # 4, 5, 9, 10, 11, 12 January
CODES = ["13010", "72030", "86970", "130A0"]
NEW_LISTING = dt.date(2024, 1, 10)  # 130A0 trades from here on


def _bars() -> pl.DataFrame:
    rows = []
    for i, day in enumerate(DAYS):
        for j, code in enumerate(CODES):
            if code == "130A0" and day < NEW_LISTING:
                continue
            close = 1000.0 + 10 * i + j
            rows.append(
                {
                    "Date": day,
                    "Code": code,
                    "O": close - 1,
                    "H": close + 2,
                    "L": close - 3,
                    "C": close,
                    "UL": j == 1 and i == 2,
                    "LL": False,
                    "Vo": 1000.0 * (j + 1),
                    "Va": close * 1000.0,
                    "AdjFactor": 1.0,
                    "AdjO": close - 1,
                    "AdjH": close + 2,
                    "AdjL": close - 3,
                    "AdjC": close,
                    "AdjVo": 1000.0 * (j + 1),
                    "MO": close - 1,
                    "MC": close - 0.5,
                    "AC": close,
                }
            )
    return pl.DataFrame(rows).pipe(_typed, "equities/bars/daily")


def _typed(frame: pl.DataFrame, path: str) -> pl.DataFrame:
    schema = ENDPOINTS[path].schema(Plan.PREMIUM)
    return frame.select(
        [
            pl.col(n).cast(t) if n in frame.columns else pl.lit(None, t).alias(n)
            for n, t in schema.items()
        ]
    )


def _master_row(day: str, code: str, name: str, s33: str, scale: str) -> dict[str, str]:
    return {
        "Date": day,
        "Code": code,
        "CoName": name,
        "CoNameEn": name,
        "S17": "1",
        "S17Nm": "x",
        "S33": s33,
        "S33Nm": "y",
        "ScaleCat": scale,
        "Mkt": "0111",
        "MktNm": "Prime",
        "Mrgn": "1",
        "MrgnNm": "z",
    }


def _wire(path: str, rows: list[dict]) -> pl.DataFrame:
    return rows_to_frame(ENDPOINTS[path], rows)


SUMMARY_ROWS = [
    {
        "DiscDate": "2024-01-05",
        "DiscTime": "15:00:00",
        "Code": "86970",
        "DiscNo": "20240105001",
        "DocType": "3QFinancialStatements_Consolidated_IFRS",
        "CurPerType": "3Q",
        "CurPerSt": "2023-04-01",
        "CurPerEn": "2023-12-31",
        "Sales": "100529000000",
        "OdP": "",
        "EPS": "66.76",
        "MatChgSub": "false",
        "ChgAcEst": "true",
    },
    {
        "DiscDate": "2024-01-10",
        "DiscTime": "12:00:00",
        "Code": "72030",
        "DiscNo": "20240110002",
        "DocType": "FYFinancialStatements_Consolidated_JP",
        "CurPerType": "FY",
        "Sales": "5",
        "NP": "-1.5",
    },
    {
        "DiscDate": "2024-01-10",
        "DiscTime": "13:30:00",
        "Code": "13010",
        "DiscNo": "20240110003",
        "DocType": "EarnForecastRevision",
        "CurPerType": "FY",
        "FSales": "7000",
    },
]


def _tables() -> dict[str, pl.DataFrame]:
    sections = [
        {
            "PubDate": "2024-01-05",
            "StDate": "2023-12-25",
            "EnDate": "2023-12-29",
            "Section": "TSEPrime",
            "FrgnBal": 100,
        },
        {
            "PubDate": "2024-01-05",
            "StDate": "2023-12-25",
            "EnDate": "2023-12-29",
            "Section": "TSEStandard",
            "FrgnBal": -5,
        },
        {
            "PubDate": "2024-01-11",
            "StDate": "2024-01-04",
            "EnDate": "2024-01-05",
            "Section": "TSEPrime",
            "FrgnBal": 7,
        },
    ]
    return {
        "equities/bars/daily": _bars(),
        "equities/master": _wire(
            "equities/master",
            [
                _master_row("2024-01-04", "13010", "Kyokuyo", "0050", "TOPIX Small 2"),
                _master_row("2024-01-04", "72030", "Toyota", "3700", "TOPIX Core30"),
                _master_row("2024-01-04", "86970", "JPX", "7200", "TOPIX Large70"),
                _master_row("2024-01-10", "130A0", "NewCo", "5250", "-"),
                _master_row("2024-01-11", "72030", "Toyota", "3700", "TOPIX Large70"),
            ],
        ),
        "indices/bars/daily/topix": _wire(
            "indices/bars/daily/topix", [{"Date": d, "C": 2500 + i} for i, d in enumerate(DAYS)]
        ),
        "markets/calendar": calendar_frame("2024-01-01", "2024-01-31"),
        "fins/summary": _wire("fins/summary", SUMMARY_ROWS),
        "equities/investor-types": _wire("equities/investor-types", sections),
        "markets/short-sale-report": _wire(
            "markets/short-sale-report",
            [
                {
                    "DiscDate": "2024-01-05",
                    "CalcDate": "2024-01-04",
                    "Code": "72030",
                    "SSName": "Fund A",
                    "ShrtPosToSO": 0.0061,
                },
                {
                    "DiscDate": "2024-01-09",
                    "CalcDate": "2024-01-05",
                    "Code": "86970",
                    "SSName": "Fund B",
                    "ShrtPosToSO": 0.0053,
                },
            ],
        ),
        "markets/margin-alert": _wire(
            "markets/margin-alert",
            [
                {
                    "PubDate": "2024-01-05",
                    "Code": "13010",
                    "AppDate": "2024-01-04",
                    "PubReason": {
                        "Restricted": "0",
                        "DailyPublication": "1",
                        "Monitoring": "0",
                        "RestrictedByJSF": "0",
                        "PrecautionByJSF": "1",
                        "UnclearOrSecOnAlert": "0",
                    },
                    "ShrtOut": 11.0,
                    "ShrtOutRatio": "*",
                    "TSEMrgnRegCls": "001",
                },
            ],
        ),
        "equities/earnings-calendar": _wire(
            "equities/earnings-calendar",
            [
                {"Date": "2024-01-15", "Code": "72030", "CoName": "Toyota", "FQ": "第３四半期"},
                {"Date": "", "Code": "86970", "CoName": "JPX", "FQ": "第３四半期"},
            ],
        ),
    }


TABLES = _tables()


@pytest.fixture
async def api() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """``await api(**settings)`` -> an httpx client speaking to a fresh in-process app."""
    clients: list[httpx.AsyncClient] = []

    def make(
        tables: dict[str, pl.DataFrame] | None = None, **settings: object
    ) -> httpx.AsyncClient:
        app = create_app(TABLES if tables is None else tables, settings=ServerSettings(**settings))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://sandbox/v2",
            headers={"x-api-key": "sandbox"},
        )
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


# --- keys, paths, plans ----------------------------------------------------------------


async def test_missing_or_wrong_key_is_403(api) -> None:
    client = api()
    for headers in (
        {"x-api-key": ""},
        {"x-api-key": "sandbox2"},
        {"Authorization": "Bearer sandbox"},
    ):
        request = client.build_request("GET", "equities/bars/daily", params={"date": "2024-01-05"})
        request.headers.pop("x-api-key")
        request.headers.update(headers)
        response = await client.send(request)
        assert response.status_code == 403
        assert response.json() == {"message": "The incoming api key is invalid or expired."}
    custom = api(api_key="k-123")
    assert (
        await custom.get("equities/bars/daily", params={"date": "2024-01-05"})
    ).status_code == 403
    ok = await custom.get(
        "equities/bars/daily", params={"date": "2024-01-05"}, headers={"x-api-key": "k-123"}
    )
    assert ok.status_code == 200


async def test_unknown_path_and_method_are_403(api) -> None:
    client = api()
    for method, url in (
        ("GET", "prices/daily_quotes"),
        ("POST", "equities/bars/daily"),
        ("GET", "/v1/listed/info"),
    ):
        response = await client.request(method, url, params={"date": "2024-01-05"})
        assert response.status_code == 403, url
        assert "Unknown path or method" in response.json()["message"]


async def test_plan_entitlement_is_403_naming_plans(api) -> None:
    free = api(plan=Plan.FREE, today=dt.date(2024, 4, 1))
    response = await free.get("indices/bars/daily/topix")
    assert response.status_code == 403
    message = response.json()["message"]
    assert "(free) does not cover" in message and "requires the light plan" in message
    assert (
        await free.get("markets/margin-alert", params={"date": "2024-01-05"})
    ).status_code == 403
    standard = api(plan=Plan.STANDARD)
    assert (
        await standard.get("markets/margin-alert", params={"date": "2024-01-05"})
    ).status_code == 200


async def test_premium_session_fields_only_on_premium(api) -> None:
    premium = (await api().get("equities/bars/daily", params={"date": "2024-01-05"})).json()["data"]
    standard = (
        await api(plan=Plan.STANDARD).get("equities/bars/daily", params={"date": "2024-01-05"})
    ).json()["data"]
    assert premium[0]["MO"] == premium[0]["O"] and "AUL" in premium[0]
    assert set(standard[0]) == {
        f.name for f in ENDPOINTS["equities/bars/daily"].fields_for(Plan.STANDARD)
    }
    assert not any(
        k.startswith(("M", "A")) and k not in ("AdjFactor", "AdjO", "AdjH", "AdjL", "AdjC", "AdjVo")
        for k in standard[0]
    )


# --- parameter validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (
            "equities/bars/daily",
            {},
            "This API requires at least 1 parameter as follows; code, date",
        ),
        (
            "equities/bars/daily",
            {"from": "2024-01-04"},
            "This API requires at least 1 parameter as follows; code, date",
        ),
        (
            "markets/short-sale-report",
            {},
            "This API requires at least 1 parameter as follows; code, disc_date, calc_date",
        ),
        ("markets/short-ratio", {}, "This API requires at least 1 parameter as follows; s33, date"),
        (
            "equities/bars/daily",
            {"date": "2024-01-05", "foo": "1"},
            "Unsupported parameter(s) for this API: foo.",
        ),
        (
            "equities/earnings-calendar",
            {"date": "2024-01-05"},
            "Unsupported parameter(s) for this API: date.",
        ),
        (
            "equities/bars/daily",
            {"date": "2024-01-05", "from": "2024-01-04"},
            "'date' cannot be combined with 'from'/'to'.",
        ),
        (
            "equities/bars/daily",
            {"date": "2024/01/05"},
            "'date' must be a date as YYYYMMDD or YYYY-MM-DD, got '2024/01/05'.",
        ),
        (
            "equities/bars/daily",
            {"date": "20240230"},
            "'date' must be a date as YYYYMMDD or YYYY-MM-DD, got '20240230'.",
        ),
        (
            "equities/bars/daily",
            {"code": "72030", "from": "2024-01-10", "to": "2024-01-05"},
            "'from' must be older than 'to'",
        ),
        ("equities/bars/daily", {"code": "72"}, "'code' must be 4 or 5 digits, got '72'."),
        (
            "markets/calendar",
            {"hol_div": "9"},
            "'hol_div' must be one of ['0', '1', '2', '3'], got '9'.",
        ),
    ],
)
async def test_bad_parameters_are_400_with_the_api_message(api, path, params, message) -> None:
    response = await api().get(path, params=params)
    assert response.status_code == 400
    assert response.json()["message"].startswith(message)


async def test_repeated_parameter_is_400(api) -> None:
    response = await api().get("equities/bars/daily?date=2024-01-05&date=2024-01-09")
    assert response.status_code == 400 and "more than once: date" in response.json()["message"]


async def test_dates_accept_both_formats(api) -> None:
    client = api()
    a = await client.get("equities/bars/daily", params={"date": "20240105"})
    b = await client.get("equities/bars/daily", params={"date": "2024-01-05"})
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert {r["Date"] for r in a.json()["data"]} == {"2024-01-05"}
    # Both spellings count as the same query in the request stats.
    assert client.app.state.stats.count("equities/bars/daily", date="2024-01-05") == 2


async def test_plan_windows(api) -> None:
    assert plan_window(Plan.PREMIUM, dt.date(2024, 2, 29)).start == dt.date(2004, 2, 29)
    assert plan_window(Plan.LIGHT, dt.date(2024, 2, 29)).start == dt.date(2019, 2, 28)
    free = api(plan=Plan.FREE, today=dt.date(2024, 3, 29))  # 12 weeks earlier: 2024-01-05
    assert (await free.get("equities/bars/daily", params={"date": "2024-01-05"})).status_code == 200
    late = await free.get("equities/bars/daily", params={"date": "2024-01-09"})
    assert late.status_code == 400
    assert late.json() == {
        "message": "Your subscription covers the following dates: 2022-01-05 ~ 2024-01-05."
    }
    early = await free.get(
        "equities/bars/daily", params={"code": "7203", "from": "2021-12-31", "to": "2024-01-04"}
    )
    assert early.status_code == 400
    # Without explicit dates the answer is clipped to the window, not refused.
    clipped = (await free.get("equities/bars/daily", params={"code": "7203"})).json()["data"]
    assert [r["Date"] for r in clipped] == ["2024-01-04", "2024-01-05"]
    # The Free master snapshot is the one at the end of the delayed window.
    snapshot = (await free.get("equities/master")).json()["data"]
    assert [r["Code"] for r in snapshot] == ["13010", "72030", "86970"]
    # The calendar is exempt: it runs ahead of today.
    assert (await free.get("markets/calendar", params={"from": "2024-01-20"})).status_code == 200
    light = api(plan=Plan.LIGHT, today=dt.date(2024, 1, 12))
    old = await light.get("indices/bars/daily/topix", params={"from": "2019-01-11"})
    assert old.json() == {"message": "Your subscription covers the following dates: 2019-01-12 ~ ."}
    # Default "today" is the last trade date in the data, not the calendar's end.
    assert api().app.state.today == dt.date(2024, 1, 12)


# --- query semantics -----------------------------------------------------------------------


async def test_date_and_code_select_rows(api) -> None:
    client = api()
    day = (await client.get("equities/bars/daily", params={"date": "2024-01-10"})).json()["data"]
    assert [r["Code"] for r in day] == sorted(CODES)
    assert all(r["Date"] == "2024-01-10" for r in day)
    source = (
        TABLES["equities/bars/daily"].filter(pl.col("Date") == dt.date(2024, 1, 10)).sort("Code")
    )
    assert [r["C"] for r in day] == source["C"].to_list()
    assert {r["UL"] for r in day} == {"0"}
    limit_day = (await client.get("equities/bars/daily", params={"date": "2024-01-09"})).json()[
        "data"
    ]
    assert {r["Code"]: r["UL"] for r in limit_day} == {"13010": "0", "72030": "1", "86970": "0"}
    by_code = (await client.get("equities/bars/daily", params={"code": "7203"})).json()["data"]
    assert [r["Date"] for r in by_code] == [d.isoformat() for d in DAYS]
    assert {r["Code"] for r in by_code} == {"72030"}
    ranged = (
        await client.get(
            "equities/bars/daily", params={"code": "130A0", "from": "20240101", "to": "2024-01-11"}
        )
    ).json()["data"]
    assert [r["Date"] for r in ranged] == ["2024-01-10", "2024-01-11"]
    both = (
        await client.get("equities/bars/daily", params={"code": "86970", "date": "2024-01-09"})
    ).json()["data"]
    assert len(both) == 1 and both[0]["C"] == 1000.0 + 10 * 2 + 2


async def test_endpoint_specific_date_fields(api) -> None:
    client = api()
    statements = (await client.get("fins/summary", params={"date": "2024-01-10"})).json()["data"]
    assert [r["DiscNo"] for r in statements] == ["20240110002", "20240110003"]
    investors = (
        await client.get(
            "equities/investor-types", params={"from": "2024-01-05", "to": "2024-01-10"}
        )
    ).json()["data"]
    assert [(r["PubDate"], r["Section"]) for r in investors] == [
        ("2024-01-05", "TSEPrime"),
        ("2024-01-05", "TSEStandard"),
    ]
    prime = (await client.get("equities/investor-types", params={"section": "TSEPrime"})).json()[
        "data"
    ]
    assert [r["FrgnBal"] for r in prime] == [100.0, 7.0]
    assert len((await client.get("equities/investor-types")).json()["data"]) == 3
    by_disc = (
        await client.get("markets/short-sale-report", params={"disc_date": "2024-01-05"})
    ).json()["data"]
    by_calc = (
        await client.get("markets/short-sale-report", params={"calc_date": "2024-01-05"})
    ).json()["data"]
    assert [r["SSName"] for r in by_disc] == ["Fund A"] and [r["SSName"] for r in by_calc] == [
        "Fund B"
    ]
    ranged = (
        await client.get(
            "markets/short-sale-report", params={"code": "86970", "disc_date_from": "2024-01-06"}
        )
    ).json()["data"]
    assert [r["DiscDate"] for r in ranged] == ["2024-01-09"]
    alert = (await client.get("markets/margin-alert", params={"date": "2024-01-05"})).json()["data"]
    assert alert[0]["PubReason"] == {
        "Restricted": "0",
        "DailyPublication": "1",
        "Monitoring": "0",
        "RestrictedByJSF": "0",
        "PrecautionByJSF": "1",
        "UnclearOrSecOnAlert": "0",
    }
    assert alert[0]["ShrtOutRatio"] is None and alert[0]["AppDate"] == "2024-01-04"
    assert (await client.get("markets/margin-alert", params={"date": "2024-01-04"})).json() == {
        "data": []
    }
    earnings = (await client.get("equities/earnings-calendar")).json()["data"]
    assert [(r["Date"], r["Code"]) for r in earnings] == [("2024-01-15", "72030"), ("", "86970")]


async def test_master_is_a_point_in_time_snapshot(api) -> None:
    client = api()

    async def snapshot(**params: str) -> dict[str, dict]:
        rows = (await client.get("equities/master", params=params)).json()["data"]
        return {r["Code"]: r for r in rows}

    before = await snapshot(date="2024-01-09")
    assert list(before) == ["13010", "72030", "86970"]
    assert before["72030"]["ScaleCat"] == "TOPIX Core30" and before["72030"]["Date"] == "2024-01-04"
    after = await snapshot(date="20240111")
    assert list(after) == ["13010", "130A0", "72030", "86970"]
    assert after["72030"]["ScaleCat"] == "TOPIX Large70" and after["72030"]["Date"] == "2024-01-11"
    assert await snapshot() == await snapshot(date="2024-01-12")
    assert await snapshot(date="2024-01-03") == {}
    assert list(await snapshot(code="7203", date="2024-01-10")) == ["72030"]


async def test_topix_and_calendar_ranges(api) -> None:
    client = api()
    topix = (await client.get("indices/bars/daily/topix")).json()["data"]
    assert [r["Date"] for r in topix] == [d.isoformat() for d in DAYS]
    part = (
        await client.get(
            "indices/bars/daily/topix", params={"from": "2024-01-09", "to": "20240111"}
        )
    ).json()["data"]
    assert [r["C"] for r in part] == [2502.0, 2503.0, 2504.0]
    assert len((await client.get("markets/calendar")).json()["data"]) == 31
    closed = (
        await client.get("markets/calendar", params={"hol_div": "0", "to": "2024-01-08"})
    ).json()["data"]
    assert [r["Date"] for r in closed] == [f"2024-01-0{d}" for d in (1, 2, 3, 6, 7, 8)]


async def test_empty_answers_are_200_without_pagination_key(api) -> None:
    client = api(page_size=2)
    saturday = await client.get("equities/bars/daily", params={"date": "2024-01-06"})
    assert saturday.status_code == 200 and saturday.content == b'{"data":[]}'
    # An endpoint with no table at all (e.g. absent from a replay) answers the same way.
    missing = await client.get("markets/margin-interest", params={"date": "2024-01-05"})
    assert missing.status_code == 200 and missing.json() == {"data": []}
    # ... after validating its parameters like any other.
    assert (await client.get("markets/margin-interest")).status_code == 400


async def test_statements_are_all_strings(api) -> None:
    rows = (await api().get("fins/summary", params={"code": "86970"})).json()["data"]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(ENDPOINTS["fins/summary"].field_names) and len(row) == 111
    assert all(isinstance(v, str) for v in row.values()), {
        k: v for k, v in row.items() if not isinstance(v, str)
    }
    assert row["Sales"] == "100529000000" and row["EPS"] == "66.76" and row["OdP"] == ""
    assert row["MatChgSub"] == "false" and row["ChgAcEst"] == "true" and row["RetroRst"] == ""
    assert row["CurPerSt"] == "2023-04-01" and row["NxtFYSt"] == ""


# --- pagination ---------------------------------------------------------------------------


async def test_pagination_reassembles_exactly_the_rows(api) -> None:
    query = {"code": "72030", "from": "2024-01-01", "to": "2024-01-31"}
    whole = (await api().get("equities/bars/daily", params={"date": "2024-01-10"})).json()
    assert "pagination_key" not in whole
    client = api(page_size=2)
    everything = (await api().get("equities/bars/daily", params=query)).json()["data"]
    assert len(everything) == 6
    rows, keys, page = [], [], await client.get("equities/bars/daily", params=query)
    while True:
        body = page.json()
        assert page.status_code == 200 and len(body["data"]) <= 2
        rows += body["data"]
        if "pagination_key" not in body:
            break
        keys.append(body["pagination_key"])
        page = await client.get("equities/bars/daily", params={**query, "pagination_key": keys[-1]})
    assert rows == everything
    assert len(keys) == 2 and len(set(keys)) == 2
    # The same query with the same key gives the same page.
    again = await client.get("equities/bars/daily", params={**query, "pagination_key": keys[0]})
    assert again.json()["data"] == everything[2:4]
    # A key used with another query, or a made-up key, is a 400.
    other = await client.get(
        "equities/bars/daily", params={"code": "86970", "pagination_key": keys[0]}
    )
    assert other.status_code == 400 and "does not belong to this query" in other.json()["message"]
    for bad in ("garbage!", "MTAwLmFiYw"):
        response = await client.get("equities/bars/daily", params={**query, "pagination_key": bad})
        assert response.status_code == 400
    # Every page counts as the same query in the stats.
    stats = client.app.state.stats
    assert stats.count("equities/bars/daily", code="72030", status=200) == 4


# --- encoding, stats, settings ------------------------------------------------------------


async def test_gzip_when_asked(api) -> None:
    client = api()
    zipped = await client.get(
        "equities/bars/daily", params={"code": "72030"}, headers={"Accept-Encoding": "gzip"}
    )
    plain = await client.get(
        "equities/bars/daily", params={"code": "72030"}, headers={"Accept-Encoding": "identity"}
    )
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert zipped.json() == plain.json()
    assert int(zipped.headers["content-length"]) < int(plain.headers["content-length"])


async def test_request_stats(api) -> None:
    client = api()
    await client.get("equities/bars/daily", params={"date": "2024-01-05"})
    await client.get("equities/bars/daily", params={"date": "20240109"})
    await client.get("equities/bars/daily")
    await client.get("markets/calendar", params={"from": "2024-01-01"})
    stats = client.app.state.stats
    assert stats.total == 4
    assert stats.count("equities/bars/daily") == 3
    assert stats.count("equities/bars/daily", status=400) == 1
    assert stats.count("equities/bars/daily", date="2024-01-09") == 1
    assert stats.count("markets/calendar", **{"from": "20240101"}) == 1
    assert stats.endpoints_called() == {"equities/bars/daily", "markets/calendar"}
    assert stats.endpoints_called(status=400) == {"equities/bars/daily"}
    remote = (await client.get("http://sandbox/_sandbox/stats")).json()
    assert remote["total"] == 4
    assert remote["by_endpoint"] == {
        "equities/bars/daily": {"200": 2, "400": 1},
        "markets/calendar": {"200": 1},
    }
    assert remote["requests"][1] == {
        "endpoint": "equities/bars/daily",
        "params": {"date": "2024-01-09"},
        "status": 200,
    }
    stats.reset()
    assert stats.total == 0 and stats.endpoints_called() == set()


def test_settings_are_strict_and_hide_the_key() -> None:
    settings = ServerSettings(api_key="s3cret-key", plan="standard", page_size=10)
    assert settings.plan is Plan.STANDARD
    assert "s3cret-key" not in repr(settings) and "s3cret-key" not in str(settings.model_dump())
    with pytest.raises(ValidationError, match="page_sise"):
        ServerSettings(page_sise=10)
    with pytest.raises(ValidationError):
        ServerSettings(page_size=0)
    with pytest.raises(ValidationError, match="lockout_s only applies with rate_limit_per_minute"):
        ServerSettings(lockout_s=300)
    with pytest.raises(ValueError, match=r"unknown J-Quants V2 endpoint\(s\) \['listed/info'\]"):
        create_app({"listed/info": pl.DataFrame()})
    with pytest.raises(
        ValueError, match=r"\['Volume'\] are not V2 fields of endpoint 'equities/bars/daily'"
    ):
        create_app(
            {"equities/bars/daily": pl.DataFrame({"Date": [dt.date(2024, 1, 4)], "Volume": [1.0]})}
        )


# --- rate limits ---------------------------------------------------------------------------


async def test_rate_limit_answers_429_without_retry_after(api) -> None:
    client = api(rate_limit_per_minute=2)
    statuses = []
    for _ in range(4):
        response = await client.get("indices/bars/daily/topix")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert "retry-after" not in response.headers
            assert response.json() == {"message": "Too Many Requests"}
    assert statuses == [200, 200, 429, 429]
    assert client.app.state.stats.count("indices/bars/daily/topix", status=429) == 2


def test_sliding_window_limiter_buckets_and_lockout() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter({"default": 100, "fins": 60}, clock=lambda: now[0])
    assert all(limiter.admit("fins") for _ in range(60))
    assert not limiter.admit("fins")  # fins capped at 60/min ...
    assert limiter.admit("default")  # ... while other endpoints still have room
    now[0] = 59.9
    assert not limiter.admit("fins")
    now[0] = 60.01  # the first 60 fins requests have left the window
    assert limiter.admit("fins")

    locking = SlidingWindowLimiter({"default": 2}, lockout_s=300.0, clock=lambda: now[0])
    now[0] = 0.0
    assert locking.admit() and locking.admit() and not locking.admit()
    now[0] = 100.0  # the window has passed, but the lockout has not
    assert not locking.admit()
    now[0] = 300.5
    assert locking.admit()


# --- faults ------------------------------------------------------------------------------------


def test_parse_faults() -> None:
    spec = (
        "latency=0.05,error_rate=0.1,storm=5,storm_s=2,truncate_rate=0.02,"
        "fail=markets/short-ratio,fail=/v2/fins/summary,seed=7"
    )
    assert parse_faults(spec) == FaultSettings(
        latency_s=0.05,
        error_rate=0.1,
        storm_requests=5,
        storm_s=2.0,
        truncate_rate=0.02,
        fail_endpoints=frozenset({"markets/short-ratio", "fins/summary"}),
        seed=7,
    )
    assert parse_faults("") == FaultSettings()
    for bad, message in (
        ("latency", "must look like key=value"),
        ("jitter=1", "unknown fault 'jitter'"),
        ("error_rate=2", "error_rate"),
        ("fail=prices/daily_quotes", "unknown endpoint"),
        ("storm=1,storm=2", "given twice"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_faults(bad)


async def test_latency_fault(api) -> None:
    client = api(faults=FaultSettings(latency_s=0.2))
    started = time.perf_counter()
    assert (
        await client.get("equities/bars/daily", params={"date": "2024-01-05"})
    ).status_code == 200
    assert time.perf_counter() - started >= 0.2


async def test_error_and_fail_faults(api) -> None:
    client = api(faults=FaultSettings(error_rate=1.0))
    statuses = {(await client.get("indices/bars/daily/topix")).status_code for _ in range(12)}
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    failing = api(faults=FaultSettings(fail_endpoints=frozenset({"markets/calendar"})))
    broken = await failing.get("markets/calendar")
    assert broken.status_code == 500
    assert broken.json() == {"message": "Unexpected error. Please try again later."}
    assert (await failing.get("indices/bars/daily/topix")).status_code == 200


async def test_storm_faults(api) -> None:
    client = api(faults=FaultSettings(storm_requests=2))
    responses = [await client.get("indices/bars/daily/topix") for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert "retry-after" not in responses[0].headers
    timed = api(faults=FaultSettings(storm_s=0.3))
    assert (await timed.get("indices/bars/daily/topix")).status_code == 429
    assert (await timed.get("indices/bars/daily/topix")).status_code == 429
    time.sleep(0.35)
    assert (await timed.get("indices/bars/daily/topix")).status_code == 200


async def test_truncated_bodies(api) -> None:
    whole = await api().get("indices/bars/daily/topix")
    cut = await api(faults=FaultSettings(truncate_rate=1.0)).get("indices/bars/daily/topix")
    assert cut.status_code == 200
    assert whole.content.startswith(cut.content) and len(cut.content) < len(whole.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content)


def test_fault_decisions_are_seeded() -> None:
    def run(seed: int) -> list[tuple[int | None, bool]]:
        injector = FaultInjector(FaultSettings(error_rate=0.3, truncate_rate=0.3, seed=seed))
        return [
            (d.status, d.truncate)
            for d in (injector.decide("equities/bars/daily") for _ in range(40))
        ]

    assert run(1) == run(1)
    assert run(1) != run(2)
    outcomes = run(1)
    assert any(s is not None for s, _ in outcomes) and any(t for _, t in outcomes)
    assert any(s is None and not t for s, t in outcomes)


# --- end to end over loopback sockets ------------------------------------------------------


def _client_config(base_url: str, plan: Plan = Plan.PREMIUM, **overrides: object):
    from atft_pipeline.jquants.client import ClientConfig

    fields: dict[str, object] = {
        "base_url": base_url,
        "api_key": SecretStr("sandbox"),
        "plan": plan,
        "max_concurrency": 8,
        "requests_per_minute": 100_000,
    }
    return ClientConfig(**(fields | overrides))


async def test_served_in_a_thread_with_clean_shutdown() -> None:
    app = create_app(TABLES)
    with serve_in_thread(app) as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v2")
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"x-api-key": "sandbox"}
        ) as http:
            response = await http.get("/equities/bars/daily", params={"date": "2024-01-05"})
        assert response.status_code == 200 and len(response.json()["data"]) == 3
        assert server.stats.count("equities/bars/daily", date="2024-01-05") == 1
        port = server.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_client_survives_every_fault_mode() -> None:
    from atft_pipeline.jquants.client import JQuantsClient

    faults = FaultSettings(
        latency_s=0.01, error_rate=0.2, storm_requests=2, truncate_rate=0.2, seed=3
    )
    app = create_app(TABLES, settings=ServerSettings(page_size=2, faults=faults))
    config = _client_config(
        "http://127.0.0.1:1/v2",
        max_retries=20,
        backoff_429_s=0.01,
        min_backoff_429_s=0.0,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
    )
    with serve_in_thread(app) as server:
        async with JQuantsClient(config.model_copy(update={"base_url": server.base_url})) as client:
            bars = await client.get("equities/bars/daily", code="72030")
            statuses = [r.status for r in server.stats.records]
    expected = TABLES["equities/bars/daily"].filter(pl.col("Code") == "72030")
    assert_frame_equal(bars, expected)
    assert statuses[:2] == [429, 429]
    assert {500, 502, 503} & set(statuses)
    assert statuses.count(200) > 3  # 3 pages plus at least one truncated 200 that was retried


def _fetch_all_queries(path: str, table: pl.DataFrame) -> list[dict[str, object]]:
    """Queries whose answers together hold every row of ``table`` (each row exactly once,
    except master snapshots, which repeat unchanged rows and are de-duplicated)."""
    endpoint = ENDPOINTS[path]
    if path == "fins/summary":
        # By code: the client caps fins/* at 60 requests/minute, and there are fewer codes.
        return [{"code": c} for c in sorted(table["Code"].unique().to_list())]
    if not endpoint.required_any:
        return (
            [{}]
            if path != "equities/master"
            else [{"date": d} for d in sorted(table["Date"].unique().to_list())]
        )
    param = "disc_date" if path == "markets/short-sale-report" else "date"
    return [{param: d} for d in sorted(table[endpoint.date_field].drop_nulls().unique().to_list())]


@pytest.mark.slow
async def test_every_endpoint_of_the_synthetic_market_through_the_client() -> None:
    from atft_pipeline.jquants.client import JQuantsClient
    from atft_pipeline.sandbox.market import MarketConfig, generate_market

    market = generate_market(
        MarketConfig(seed=11, n_stocks=12, start=dt.date(2024, 1, 4), end=dt.date(2024, 4, 30))
    )
    assert set(market.tables) == set(ENDPOINTS)
    # A small page size makes most endpoints (options: ~150 rows a day) span several pages.
    app = create_app(market.tables, settings=ServerSettings(page_size=100))
    with serve_in_thread(app) as server:
        async with JQuantsClient(_client_config(server.base_url)) as client:
            for path, source in sorted(market.tables.items()):
                assert source.height > 0, f"synthetic market has no rows for {path}"
                queries = _fetch_all_queries(path, source)
                frames = await client.get_many(path, queries)
                got = pl.concat(frames)
                if path == "equities/master":
                    got = got.unique(maintain_order=True)
                assert got.schema == source.schema == ENDPOINTS[path].schema(Plan.PREMIUM), path
                key = list(ENDPOINTS[path].key) + [
                    c for c in source.columns if c not in ENDPOINTS[path].key
                ]
                try:
                    assert_frame_equal(
                        got.sort(key, nulls_last=True), source.sort(key, nulls_last=True)
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{path}: {exc}") from None
        assert server.stats.endpoints_called(status=200) == set(ENDPOINTS)
        assert server.stats.endpoints_called() == set(ENDPOINTS)
        # The calendar (two years of days) came in several pages of one query.
        assert (
            server.stats.count("markets/calendar")
            == -(-len(market.tables["markets/calendar"]) // 100)
            > 1
        )


@pytest.mark.realdata
@pytest.mark.slow
async def test_real_replay_through_the_client(realdata_dir: Path) -> None:
    from atft_pipeline.jquants.client import JQuantsClient
    from atft_pipeline.sandbox.replay import read_replay

    tables = read_replay(realdata_dir)
    bars = tables["equities/bars/daily"]
    app = create_app(tables)
    assert app.state.today == dt.date(2018, 11, 16)
    with serve_in_thread(app) as server:
        async with JQuantsClient(_client_config(server.base_url)) as client:
            days = [dt.date(2016, 10, 14), dt.date(2017, 6, 1), dt.date(2018, 11, 16)]
            frames = await client.get_many("equities/bars/daily", [{"date": d} for d in days])
            for day, frame in zip(days, frames, strict=True):
                expected = bars.filter(pl.col("Date") == day).sort("Code")
                assert_frame_equal(frame, expected)
            # 2016-10-14 is one of the documented sparse days of the real data set.
            assert frames[0].height == 284 and min(f.height for f in frames[1:]) > 1400

            master = await client.get("equities/master", date="2016-10-14")
            stored = tables["equities/master"].filter(pl.col("Date") <= dt.date(2016, 10, 14))
            latest = stored.sort("Date").group_by("Code").last().sort("Code")
            assert_frame_equal(master, latest.select(master.columns))
            # Monthly rows: most codes' latest row is the 2016-10-03 one, none is after D.
            assert master["Date"].max() <= dt.date(2016, 10, 14)
            assert master["Date"].mode().to_list() == [dt.date(2016, 10, 3)]

            topix = await client.get(
                "indices/bars/daily/topix", from_="2016-10-01", to="2016-10-31"
            )
            expected_topix = tables["indices/bars/daily/topix"].filter(
                pl.col("Date").is_between(dt.date(2016, 10, 1), dt.date(2016, 10, 31))
            )
            assert_frame_equal(topix, expected_topix)
            assert topix.height == len(trading_days("2016-10-01", "2016-10-31"))

            calendar = await client.get("markets/calendar")
            assert_frame_equal(calendar, tables["markets/calendar"])

            for path, params in (
                ("fins/summary", {"date": "2016-10-14"}),
                ("markets/margin-interest", {"date": "2016-10-14"}),
                ("equities/investor-types", {}),
            ):
                empty = await client.get(path, **params)
                assert empty.height == 0 and empty.schema == ENDPOINTS[path].schema(Plan.PREMIUM)
        assert server.stats.count("equities/bars/daily", status=200) == 3


@pytest.mark.slow
@pytest.mark.realdata
def test_date_index_answers_a_day_without_scanning(realdata_dir: Path) -> None:
    from atft_pipeline.sandbox.replay import read_replay

    endpoint = ENDPOINTS["equities/bars/daily"]
    bars = read_replay(realdata_dir)[endpoint.path]
    table = EndpointTable(endpoint, bars)
    days = trading_days("2016-10-03", "2016-10-31")
    started = time.perf_counter()
    slices = [table.between(day, day) for day in days]
    indexed = time.perf_counter() - started
    started = time.perf_counter()
    scans = [bars.filter(pl.col("Date") == day) for day in days]
    scanned = time.perf_counter() - started
    for got, expected in zip(slices, scans, strict=True):
        assert_frame_equal(got, expected.sort("Code"))
    assert sum(s.height for s in slices) == sum(s.height for s in scans) > 0
    assert indexed < scanned / 10, (indexed, scanned)


def test_cli_rejects_bad_options_without_a_traceback(capsys) -> None:
    import argparse

    from assets.cli import main
    from atft_pipeline.cli import add_library_commands

    cases = [
        (["--replay", "/no/such/replay"], "manifest.json: not found"),
        (["--replay", "/no/such/replay", "--seed", "3"], "--seed: synthetic-market option(s)"),
        (["--lockout", "5"], "lockout_s only applies with rate_limit_per_minute"),
        (["--n-stocks", "10", "--start", "2024-01-04", "--end", "2024-01-31"], "invalid option"),
    ]
    for extra, message in cases:
        assert main(["sandbox", "serve", "--port", "0", *extra]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["sandbox", "serve", "--faults", "jitter=1"])
    assert info.value.code == 2
    assert "unknown fault 'jitter'" in capsys.readouterr().err
    # The commands plug into another program's parser (the top-level ``atft``).
    parser = argparse.ArgumentParser(prog="atft")
    add_library_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sandbox", "serve", "--plan", "light", "--rate-limit", "60"])
    assert args.plan is Plan.LIGHT and args.rate_limit == 60 and callable(args.handler)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_over_http_until_terminated() -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "assets.cli",
        "sandbox",
        "serve",
        "--port",
        str(port),
        "--api-key",
        "cli-secret",
        "--n-stocks",
        "10",
        "--start",
        "2024-01-04",
        "--end",
        "2024-04-30",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        first_line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v2" in first_line, first_line
        base = f"http://127.0.0.1:{port}/v2"
        with httpx.Client(base_url=base, timeout=10) as http:
            day = trading_days("2024-02-01", "2024-02-29")[0].isoformat()
            ok = http.get(
                "/equities/bars/daily", params={"date": day}, headers={"x-api-key": "cli-secret"}
            )
            assert ok.status_code == 200
            rows = ok.json()["data"]
            assert 0 < len(rows) <= 10 and {r["Date"] for r in rows} == {day}
            missing = http.get("/equities/bars/daily", headers={"x-api-key": "cli-secret"})
            assert missing.status_code == 400 and "code, date" in missing.json()["message"]
            wrong = http.get(
                "/equities/bars/daily", params={"date": day}, headers={"x-api-key": "sandbox"}
            )
            assert wrong.status_code == 403
            stats = http.get(f"http://127.0.0.1:{port}/_sandbox/stats").json()
            assert stats["by_endpoint"]["equities/bars/daily"] == {"200": 1, "400": 1, "403": 1}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output
    assert "cli-secret" not in first_line + output
