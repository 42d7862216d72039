"""The J-Quants V2 client against in-process mock transports (and one real local socket).

Time is virtual: the client gets a fake clock and sleep, so 60-second backoffs and
rate-limit waits are recorded, not waited for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import polars as pl
import pytest
from pydantic import ValidationError

from atft_pipeline.jquants import (
    ENDPOINTS,
    AuthError,
    BadRequestError,
    ClientConfig,
    EntitlementError,
    JQuantsClient,
    JQuantsHTTPError,
    Kind,
    NetworkError,
    PageLimitError,
    Plan,
    RateLimiter,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    fetch,
    fetch_many_sync,
)

KEY = "sk-live-7d1e0c9a-SECRET-f00dbabe"
BARS = ENDPOINTS["equities/bars/daily"]
SUMMARY = ENDPOINTS["fins/summary"]
ALERT = ENDPOINTS["markets/margin-alert"]

Handler = Callable[[httpx.Request], Any]


class FakeClock:
    """Virtual time: ``sleep`` records the delay and moves the clock instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


class Recorder:
    """A MockTransport handler that records each request's params and virtual time."""

    def __init__(self, respond: Handler, clock: FakeClock) -> None:
        self.respond = respond
        self.clock = clock
        self.params: list[dict[str, str]] = []
        self.times: list[float] = []
        self.headers: list[httpx.Headers] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.params.append(dict(request.url.params))
        self.times.append(self.clock.now)
        self.headers.append(request.headers)
        response = self.respond(request)
        if asyncio.iscoroutine(response):
            response = await response
        return response


def body(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A streamed JSON response, as a real transport would deliver it."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.Response(
        status,
        headers={"content-type": "application/json", **(headers or {})},
        stream=httpx.ByteStream(raw),
    )


def bar(code: str, close: Any = 100.0, date: str = "2023-03-24") -> dict[str, Any]:
    return {"Date": date, "Code": code, "O": close, "H": close, "L": close, "C": close,
            "UL": "0", "LL": "0", "Vo": 1000.0}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(
    respond: Handler, clock: FakeClock, *, plan: Plan = Plan.FREE, **config: Any
) -> tuple[JQuantsClient, Recorder]:
    recorder = Recorder(respond, clock)
    client = JQuantsClient(
        ClientConfig(api_key=KEY, plan=plan, **config),
        transport=httpx.MockTransport(recorder),
        clock=clock,
        sleep=clock.sleep,
    )
    return client, recorder


def sequence(*responses: Callable[[httpx.Request], httpx.Response]) -> Handler:
    """Answer the n-th request with the n-th response factory (the last one repeats)."""
    calls = iter(range(10**6))

    def respond(request: httpx.Request) -> httpx.Response:
        return responses[min(next(calls), len(responses) - 1)](request)

    return respond


def ok(rows: list[dict[str, Any]], key: str | None = None) -> Callable[..., httpx.Response]:
    payload: dict[str, Any] = {"data": rows}
    if key is not None:
        payload["pagination_key"] = key
    return lambda request: body(payload)


def status(code: int, message: str = "", headers: dict[str, str] | None = None):
    return lambda request: body({"message": message}, code, headers)


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected HTTP request {request.url}")


# --- pagination and envelopes -------------------------------------------------------------


@pytest.mark.parametrize("last_key", [None, ""])
async def test_pagination_repeats_the_query_with_each_new_key(clock, last_key):
    pages = {
        None: ({"data": [bar("13010"), bar("13050")], "pagination_key": "k1.aaa."}),
        "k1.aaa.": ({"data": [bar("13060")], "pagination_key": "k2.bbb."}),
        "k2.bbb.": {"data": [bar("72030"), bar("86970", "1,234")]},
    }
    if last_key is not None:
        pages["k2.bbb."]["pagination_key"] = last_key

    def respond(request: httpx.Request) -> httpx.Response:
        return body(pages[request.url.params.get("pagination_key")])

    client, rec = make_client(respond, clock)
    async with client:
        frame = await client.get("equities/bars/daily", date=dt.date(2023, 3, 24))

    assert rec.params == [
        {"date": "2023-03-24"},
        {"date": "2023-03-24", "pagination_key": "k1.aaa."},
        {"date": "2023-03-24", "pagination_key": "k2.bbb."},
    ]
    assert frame["Code"].to_list() == ["13010", "13050", "13060", "72030", "86970"]
    assert frame["C"].to_list() == [100.0, 100.0, 100.0, 100.0, 1234.0]
    assert frame.schema == BARS.schema(Plan.FREE)
    stats = client.stats
    assert (stats.requests, stats.pages, stats.rows, stats.retries) == (
        {"equities/bars/daily": 3}, 3, 5, 0)
    assert stats.bytes == sum(len(json.dumps(p).encode()) for p in pages.values())


@pytest.mark.parametrize("plan", [Plan.FREE, Plan.PREMIUM])
async def test_empty_data_is_a_typed_empty_frame(clock, plan):
    client, rec = make_client(ok([]), clock, plan=plan)
    async with client:
        frame = await client.get(BARS, code="86970")
    assert frame.height == 0
    assert frame.schema == BARS.schema(plan)
    # Premium adds the 26 morning/afternoon fields.
    assert frame.width == (42 if plan is Plan.PREMIUM else 16)
    assert len(rec.params) == 1


async def test_status_210_no_content_partial_is_empty(clock):
    client, rec = make_client(status(210, "No content due to outside the target time"), clock)
    async with client:
        frame = await client.get("equities/bars/daily", code="86970")
    assert frame.is_empty() and frame.schema == BARS.schema(Plan.FREE)
    assert clock.sleeps == [] and len(rec.params) == 1


async def test_page_limit_raises_instead_of_truncating(clock):
    counter = iter(range(100))
    client, rec = make_client(
        lambda r: body({"data": [bar("13010")], "pagination_key": f"k{next(counter)}."}),
        clock,
        max_pages=3,
    )
    async with client:
        with pytest.raises(PageLimitError, match=r"after 3 pages") as info:
            await client.get("equities/bars/daily", date="2023-03-24")
    assert len(rec.params) == 3
    assert "equities/bars/daily" in str(info.value) and "2023-03-24" in str(info.value)


async def test_repeated_pagination_key_is_a_format_error(clock):
    client, rec = make_client(ok([bar("13010")], key="same."), clock)
    async with client:
        with pytest.raises(ResponseFormatError, match="repeated"):
            await client.get("equities/bars/daily", date="2023-03-24")
    assert len(rec.params) == 2


# --- retries ------------------------------------------------------------------------------


async def test_429_backs_off_at_least_60s_then_succeeds(clock):
    client, rec = make_client(
        sequence(status(429, "Too Many Requests"), status(429), ok([bar("13010")])), clock
    )
    async with client:
        frame = await client.get("equities/bars/daily", date="2023-03-24")
    assert frame["Code"].to_list() == ["13010"]
    assert len(clock.sleeps) == 2
    assert all(60.0 <= s <= 90.0 for s in clock.sleeps)
    # The retries were actually sent after the waits.
    assert rec.times[1] >= 60.0 and rec.times[2] - rec.times[1] >= 60.0
    stats = client.stats
    assert (stats.rate_limited, stats.retries, stats.total_requests) == (2, 2, 3)


async def test_429_backoff_has_up_to_50_percent_jitter(clock, monkeypatch):
    client, _ = make_client(sequence(*[status(429)] * 5, ok([])), clock)
    async with client:
        await client.get("equities/bars/daily", date="2023-03-24")
    assert all(60.0 <= s <= 90.0 for s in clock.sleeps) and len(clock.sleeps) == 5
    assert len(set(clock.sleeps)) > 1  # randomised, not a fixed 60 s

    # The jitter's bounds: exactly +0% and +50%.
    for bound, expected in ((lambda a, b: a, 60.0), (lambda a, b: b, 90.0)):
        monkeypatch.setattr("atft_pipeline.jquants.client.random.uniform", bound)
        fake = FakeClock()
        client, _ = make_client(sequence(status(429), ok([])), fake)
        async with client:
            await client.get("equities/bars/daily", date="2023-03-24")
        assert fake.sleeps == [expected]


@pytest.mark.parametrize(("retry_after", "low", "high"), [("120", 120.0, 120.0), ("5", 60, 90)])
async def test_retry_after_header_is_honoured_when_longer(clock, retry_after, low, high):
    client, _ = make_client(
        sequence(status(429, headers={"Retry-After": retry_after}), ok([])), clock
    )
    async with client:
        await client.get("equities/bars/daily", date="2023-03-24")
    assert len(clock.sleeps) == 1 and low <= clock.sleeps[0] <= high


async def test_429_exhausted_raises_rate_limit_error(clock):
    client, rec = make_client(status(429, "Too Many Requests"), clock, max_retries=2)
    async with client:
        with pytest.raises(RateLimitError) as info:
            await client.get("equities/bars/daily", date="2023-03-24")
    error = info.value
    assert (error.status, error.attempts, len(rec.params), len(clock.sleeps)) == (429, 3, 3, 2)
    assert "after 3 attempts" in str(error) and "equities/bars/daily" in str(error)
    assert client.stats.rate_limited == 3


async def test_429_pauses_the_other_requests_of_the_client(clock):
    """A 429 on one request holds the next ones too (the server counts the whole key)."""
    first = {"done": False}

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.params["date"] == "2023-03-24" and not first["done"]:
            first["done"] = True
            return body({"message": "Too Many Requests"}, 429)
        return body({"data": []})

    client, rec = make_client(respond, clock, plan=Plan.PREMIUM, max_concurrency=1)
    async with client:
        await client.get_many(BARS, [{"date": "2023-03-24"}, {"date": "2023-03-27"}])
    # The second date is sent only after the pause, never between the 429 and its retry.
    assert rec.params[0] == {"date": "2023-03-24"}
    assert all(t >= 60.0 for t in rec.times[1:])


async def test_5xx_retried_with_exponential_backoff(clock):
    client, rec = make_client(
        sequence(status(500, "Unexpected error. Please try again later."), status(503),
                 status(502), ok([bar("13010")])),
        clock,
        backoff_base_s=1.0,
    )
    async with client:
        frame = await client.get("equities/bars/daily", date="2023-03-24")
    assert frame.height == 1
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert len(rec.params) == 4 and client.stats.retries == 3


async def test_5xx_backoff_is_capped_and_exhaustion_raises_server_error(clock):
    client, rec = make_client(
        status(500, "Unexpected error. Please try again later."),
        clock,
        backoff_base_s=2.0,
        backoff_max_s=5.0,
        max_retries=4,
    )
    async with client:
        with pytest.raises(ServerError, match="Unexpected error") as info:
            await client.get("equities/bars/daily", date="2023-03-24")
    assert clock.sleeps == [2.0, 4.0, 5.0, 5.0]
    assert info.value.status == 500 and info.value.attempts == 5 and len(rec.params) == 5


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
    ],
    ids=["read-timeout", "connect-timeout", "connection-reset", "incomplete-body"],
)
async def test_timeouts_and_broken_connections_are_retried(clock, failure):
    def fail(request: httpx.Request) -> httpx.Response:
        raise type(failure)(str(failure), request=request)

    client, rec = make_client(sequence(fail, fail, ok([bar("13010")])), clock)
    async with client:
        frame = await client.get("equities/bars/daily", date="2023-03-24")
    assert frame.height == 1 and clock.sleeps == [1.0, 2.0] and len(rec.params) == 3


async def test_timeouts_exhausted_raise_network_error_with_the_cause(clock):
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, rec = make_client(fail, clock, max_retries=1)
    async with client:
        with pytest.raises(NetworkError, match=r"after 2 attempt.*ReadTimeout") as info:
            await client.get("equities/bars/daily", date="2023-03-24")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert "equities/bars/daily" in str(info.value) and len(rec.params) == 2


async def test_truncated_json_body_is_retried(clock):
    full = json.dumps({"data": [bar("13010"), bar("13050")]}).encode()
    client, rec = make_client(
        sequence(lambda r: body(full[: len(full) // 2]), lambda r: body(full)), clock
    )
    async with client:
        frame = await client.get("equities/bars/daily", date="2023-03-24")
    assert frame["Code"].to_list() == ["13010", "13050"]
    assert clock.sleeps == [1.0] and len(rec.params) == 2


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"data": [{"Date": "2023-', "invalid JSON"),
        ({"message": "ok"}, "no 'data' list"),
        ({"data": ["13010"]}, "non-object rows"),
        ({"data": [], "pagination_key": 7}, "not a string"),
    ],
)
async def test_malformed_bodies_raise_response_format_error(clock, payload, match):
    client, rec = make_client(lambda r: body(payload), clock, max_retries=1)
    async with client:
        with pytest.raises(ResponseFormatError, match=match) as info:
            await client.get("equities/bars/daily", date="2023-03-24")
    assert "equities/bars/daily" in str(info.value) and len(rec.params) == 2


# --- errors that are never retried ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "code", "message", "error_type", "hint"),
    [
        (
            "equities/bars/daily", {"date": "2015-01-05"}, 400,
            "Your subscription covers the following dates: 2023-12-01 ~ .",
            BadRequestError, "outside the subscription's data window (plan 'free'",
        ),
        (
            "equities/bars/daily", {"date": "2023-03-24"}, 400,
            "This API requires at least 1 parameter as follows; date, code",
            BadRequestError, "at least one of ['code', 'date']",
        ),
        (
            "equities/bars/daily", {"date": "2023-03-24"}, 401,
            "The incoming token is invalid or expired.", AuthError, "check JQUANTS_API_KEY",
        ),
        (
            "equities/bars/daily", {"date": "2023-03-24"}, 403,
            "The incoming api key is invalid or expired.", AuthError, "check JQUANTS_API_KEY",
        ),
        (
            "markets/margin-interest", {"date": "2023-02-17"}, 403, "Forbidden",
            EntitlementError,
            "plan 'free' does not include markets/margin-interest, which needs 'standard'",
        ),
        (
            "markets/margin-interest", {"code": "13010"}, 400, "No approval received.",
            EntitlementError, "needs 'standard'",
        ),
        ("equities/bars/daily", {"code": "13010"}, 404, "Not Found", JQuantsHTTPError, ""),
    ],
    ids=["400-window", "400-params", "401", "403-key", "403-plan", "no-approval", "404"],
)
async def test_client_errors_raise_at_once_with_endpoint_params_and_hint(
    clock, path, params, code, message, error_type, hint
):
    client, rec = make_client(status(code, message), clock)
    async with client:
        with pytest.raises(error_type) as info:
            await client.get(path, **params)
    error = info.value
    assert type(error) is error_type
    assert len(rec.params) == 1 and clock.sleeps == []
    text = str(error)
    assert path in text and message in text and f"failed with {code}" in text
    for name, value in params.items():
        assert f"'{name}': '{value}'" in text
    assert hint in text
    if code in (401, 403) or "subscription covers" in message:
        assert "plan" in error.hint and f"'{ENDPOINTS[path].plan}'" in error.hint
        assert "'free'" in error.hint  # the configured plan
    assert (error.status, error.endpoint, error.params) == (code, path, params)
    assert KEY not in text and KEY not in repr(error)


async def test_missing_key_is_reported_as_auth_error(clock):
    recorder = Recorder(status(403, "Forbidden"), clock)
    client = JQuantsClient(
        ClientConfig(plan=Plan.LIGHT), transport=httpx.MockTransport(recorder), sleep=clock.sleep
    )
    async with client:
        with pytest.raises(AuthError, match="No API key is configured"):
            await client.get("indices/bars/daily/topix")
    assert "x-api-key" not in recorder.headers[0]


def test_errors_survive_pickling():
    error = RateLimitError(429, "equities/bars/daily", {"date": "2023-03-24"}, "slow down",
                           hint="h", attempts=6, retry_after_s=None)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.attempts == 6


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "params", "match"),
    [
        ("equities/bars/daily", {}, r"bars/daily requires at least one of \['code', 'date'\]"),
        ("equities/bars/daily", {"from": "2023-01-01"}, r"requires at least one of"),
        ("equities/bars/daily", {"date": "2023-03-24", "s33": "x"}, r"unknown.*'s33'.*accepted"),
        ("equities/bars/daily", {"date": "2023-03-24", "to": "2023-03-30"}, "mutually exclusive"),
        ("equities/bars/daily", {"date": 20230324.0}, "'date' must be a str, int or date"),
        ("markets/short-sale-report", {"date": "2023-03-24"}, r"unknown parameter.*\['date'\]"),
        ("derivatives/bars/daily/options/225", {}, r"requires at least one of \['date'\]"),
        ("equities/bars/weekly", {"date": "2023-03-24"}, "unknown J-Quants V2 endpoint"),
    ],
)
async def test_bad_params_raise_value_error_before_any_http(clock, endpoint, params, match):
    client, rec = make_client(never_called, clock)
    async with client:
        with pytest.raises(ValueError, match=match):
            await client.get(endpoint, **params)
        with pytest.raises(ValueError, match=match):
            await client.get_many(endpoint, [{"date": "2023-03-23"}, params])
    assert rec.params == []


async def test_param_encoding(clock):
    client, rec = make_client(ok([]), clock, plan=Plan.LIGHT)
    async with client:
        await client.get("indices/bars/daily/topix", from_=dt.date(2022, 6, 28),
                         to=dt.datetime(2022, 6, 29, 15, 0))
        await client.get("equities/bars/daily", code=86970, date=None)
        await client.get("/v2/equities/master/")
    assert rec.params == [{"from": "2022-06-28", "to": "2022-06-29"}, {"code": "86970"}, {}]


async def test_requests_carry_the_key_header_and_ask_for_gzip(clock):
    client, rec = make_client(ok([]), clock)
    async with client:
        await client.get("equities/master")
    headers = rec.headers[0]
    assert headers["x-api-key"] == KEY
    assert headers["accept-encoding"] == "gzip"
    assert "authorization" not in headers


async def test_gzip_body_is_decoded(clock):
    raw = gzip.compress(json.dumps({"data": [bar("13010")]}).encode())
    client, _ = make_client(
        lambda r: httpx.Response(200, headers={"content-encoding": "gzip"},
                                 stream=httpx.ByteStream(raw)),
        clock,
    )
    async with client:
        frame = await client.get("equities/bars/daily", code="13010")
    assert frame["Code"].to_list() == ["13010"]
    assert client.stats.bytes == len(raw)  # bytes on the wire, compressed


async def test_client_must_be_opened(clock):
    client, _ = make_client(never_called, clock)
    with pytest.raises(RuntimeError, match="async with"):
        await client.get("equities/master")


# --- typing of responses -------------------------------------------------------------------


async def test_flexible_numerics(clock):
    wire = [1234.5, "123.5", "", "-", "*", None, "1,234", 7]
    rows = [bar(f"{1300 + i}0", close) for i, close in enumerate(wire)]
    client, _ = make_client(ok(rows), clock)
    async with client:
        frame = await client.get("equities/bars/daily", date="2023-03-24")
    assert frame.schema["C"] == pl.Float64 and frame.schema["Code"] == pl.String
    assert frame["C"].to_list() == [1234.5, 123.5, None, None, None, None, 1234.0, 7.0]
    assert frame["UL"].to_list() == [False] * len(wire)
    assert frame["Date"].to_list() == [dt.date(2023, 3, 24)] * len(wire)
    assert frame["H"].null_count() == 4 and frame["C"].is_nan().sum() == 0


def summary_wire_row() -> dict[str, str]:
    """A full 111-key fins/summary row as the API sends it: every value a string."""
    row = {name: "" for name in SUMMARY.field_names}
    row.update({
        "DiscDate": "2023-01-30", "DiscTime": "12:00:00", "Code": "86970",
        "DiscNo": "20230127594871", "DocType": "3QFinancialStatements_Consolidated_IFRS",
        "CurPerType": "3Q", "CurPerSt": "2022-04-01", "CurPerEn": "2022-12-31",
        "CurFYSt": "2022-04-01", "CurFYEn": "2023-03-31", "Sales": "100529000000",
        "OP": "51765000000", "NP": "35175000000", "EPS": "66.76", "TA": "79205861000000",
        "Eq": "320021000000", "EqAR": "0.004", "CashEq": "91135000000", "Div2Q": "26.0",
        "FDivFY": "36.0", "FDivAnn": "62.0", "FSales": "132500000000", "FEPS": "85.42",
        "MatChgSub": "false", "ChgByASRev": "false", "ChgNoASRev": "false", "ChgAcEst": "true",
        "ShOutFY": "528578441", "TrShFY": "1,861,043", "AvgSh": "526874759", "NxFNp": "-",
    })
    return row


async def test_fins_summary_all_string_row(clock):
    row = summary_wire_row()
    assert len(row) == 111 and all(isinstance(v, str) for v in row.values())
    client, _ = make_client(ok([row]), clock)
    async with client:
        frame = await client.get("fins/summary", code="86970", date="2023-01-30")
    assert frame.width == 111 and frame.schema == SUMMARY.schema(Plan.FREE)
    got = frame.row(0, named=True)
    assert got["DiscDate"] == dt.date(2023, 1, 30) and got["NxtFYSt"] is None
    assert (got["Code"], got["DiscNo"], got["DiscTime"]) == ("86970", "20230127594871", "12:00:00")
    assert got["Sales"] == 100_529_000_000.0 and got["EPS"] == 66.76 and got["EqAR"] == 0.004
    assert got["TrShFY"] == 1_861_043.0
    assert got["OdP"] is None and got["NxFNp"] is None  # "" (IFRS) and "-"
    assert (got["MatChgSub"], got["ChgAcEst"], got["SigChgInC"]) == (False, True, None)
    numeric = [f.name for f in SUMMARY.fields if f.kind is Kind.NUM]
    filled = {n for n in numeric if row[n] not in ("", "-")}
    assert all((got[n] is None) == (n not in filled) for n in numeric)
    assert client.stats.requests == {"fins/summary": 1}


async def test_margin_alert_nested_pub_reason_is_flattened(clock):
    wire = {
        "PubDate": "2024-02-08", "Code": "13260", "AppDate": "2024-02-07",
        "PubReason": {"Restricted": "0", "DailyPublication": "0", "Monitoring": "0",
                      "RestrictedByJSF": "0", "PrecautionByJSF": "1", "UnclearOrSecOnAlert": "0"},
        "ShrtOut": 11.0, "ShrtOutChg": 0.0, "ShrtOutRatio": "*", "LongOut": 676.0,
        "LongOutChg": -20.0, "LongOutRatio": "*", "SLRatio": 1.6, "ShrtNegOut": 0.0,
        "ShrtNegOutChg": 0.0, "ShrtStdOut": 11.0, "ShrtStdOutChg": 0.0, "LongNegOut": 192.0,
        "LongNegOutChg": -20.0, "LongStdOut": 484.0, "LongStdOutChg": 0.0,
        "TSEMrgnRegCls": "001",
    }
    client, _ = make_client(ok([wire]), clock, plan=Plan.STANDARD)
    async with client:
        frame = await client.get("markets/margin-alert", date="2024-02-08")
    assert frame.schema == ALERT.schema(Plan.STANDARD) and "PubReason" not in frame.columns
    got = frame.row(0, named=True)
    reasons = {k.split(".")[1]: v for k, v in got.items() if k.startswith("PubReason.")}
    assert reasons == {"Restricted": False, "DailyPublication": False, "Monitoring": False,
                       "RestrictedByJSF": False, "PrecautionByJSF": True,
                       "UnclearOrSecOnAlert": False}
    assert got["ShrtOutRatio"] is None and got["SLRatio"] == 1.6 and got["LongOutChg"] == -20.0
    assert got["TSEMrgnRegCls"] == "001" and got["AppDate"] == dt.date(2024, 2, 7)


# --- rate limiting and concurrency ---------------------------------------------------------


async def test_free_plan_sixth_request_waits_a_minute(clock):
    client, rec = make_client(ok([]), clock, plan=Plan.FREE)
    async with client:
        for day in range(6):
            await client.get("equities/bars/daily", date=dt.date(2023, 3, 1 + day))
    assert rec.times == [0.0] * 5 + [60.0]
    assert clock.sleeps == [60.0]


async def test_requests_per_minute_override(clock):
    client, rec = make_client(ok([]), clock, plan=Plan.PREMIUM, requests_per_minute=2)
    async with client:
        await client.get_many(BARS, [{"date": f"2023-03-0{d}"} for d in range(1, 6)])
    assert sorted(rec.times) == [0.0, 0.0, 60.0, 60.0, 120.0]


async def test_fins_bucket_is_60_per_minute_on_premium(clock):
    client, rec = make_client(ok([]), clock, plan=Plan.PREMIUM, max_concurrency=1)
    days = [{"date": (dt.date(2023, 1, 1) + dt.timedelta(d)).isoformat()} for d in range(61)]
    async with client:
        await client.get_many("fins/summary", days[:60])
        await client.get("equities/bars/daily", date="2023-03-24")  # default bucket has room
        await client.get_many("fins/summary", days[60:])
    assert rec.times[:61] == [0.0] * 61
    assert rec.times[61] == 60.0
    assert client.stats.requests == {"fins/summary": 61, "equities/bars/daily": 1}


async def test_rate_limiter_fins_requests_count_toward_the_plan_total(clock):
    limiter = RateLimiter({"default": 4, "fins": 2}, clock=clock, sleep=clock.sleep)
    for bucket in ("fins", "fins", "default", "default"):
        assert await limiter.acquire(bucket) == 0.0
    clock.now = 10.0
    # Two default requests so far, but the two fins requests filled the plan's total too.
    assert await limiter.acquire("default") == 50.0
    assert clock.now == 60.0
    # Now fins is limited by its own bucket while the total still has room.
    assert await limiter.acquire("fins") == 0.0
    assert await limiter.acquire("fins") == 0.0
    assert await limiter.acquire("fins") == 60.0
    assert clock.now == 120.0
    with pytest.raises(KeyError, match="unknown rate-limit bucket 'minute'"):
        await limiter.acquire("minute")


def test_rate_limiter_for_plan_caps_fins_at_the_plan_rate():
    assert RateLimiter.for_plan(5).limit("fins") == 5
    assert RateLimiter.for_plan(500).limit("fins") == 60
    assert RateLimiter.for_plan(500).limit("default") == 500


async def test_concurrency_is_bounded_and_order_preserved(clock):
    state = {"in_flight": 0, "peak": 0}

    async def respond(request: httpx.Request) -> httpx.Response:
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        day = request.url.params["date"]
        await asyncio.sleep(0.002 * (int(day[-2:]) * 7 % 5))  # finish out of order
        state["in_flight"] -= 1
        return body({"data": [bar(f"{day[-2:]}000", date=day)]})

    client, rec = make_client(respond, clock, plan=Plan.PREMIUM, max_concurrency=3)
    days = [dt.date(2023, 3, 1) + dt.timedelta(d) for d in range(20)]
    async with client:
        frames = await client.get_many("equities/bars/daily", [{"date": d} for d in days])
    assert state["peak"] == 3
    assert [f["Date"].item() for f in frames] == days
    assert len(rec.params) == 20


async def test_get_many_first_error_cancels_the_rest(clock):
    cancelled = []

    async def respond(request: httpx.Request) -> httpx.Response:
        day = request.url.params["date"]
        if day == "2023-03-03":
            return body({"message": "This API requires at least 1 parameter"}, 400)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(day)
            raise
        return body({"data": []})

    client, rec = make_client(respond, clock, plan=Plan.PREMIUM, max_concurrency=3)
    days = [{"date": f"2023-03-{d:02d}"} for d in range(1, 11)]
    async with client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(BadRequestError, match="2023-03-03"):
            await client.get_many("equities/bars/daily", days)
        assert asyncio.get_running_loop().time() - started < 2.0
    # Nothing after the failure completed: every other request sent was cancelled mid-flight.
    sent = [p["date"] for p in rec.params]
    assert "2023-03-03" in sent and len(sent) < len(days)
    assert sorted(cancelled) == sorted(d for d in sent if d != "2023-03-03")
    assert {"2023-03-01", "2023-03-02"} <= set(cancelled)


# --- config and secrets --------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValidationError, match="at least 60 s"):
        ClientConfig(backoff_429_s=1.0)
    assert ClientConfig(backoff_429_s=0.01, min_backoff_429_s=0.0).backoff_429_s == 0.01
    with pytest.raises(ValidationError, match="extra"):
        ClientConfig(api_token="x")
    with pytest.raises(ValidationError, match="http"):
        ClientConfig(base_url="api.jquants.com/v2")
    config = ClientConfig(base_url="http://127.0.0.1:8000/v2/", plan="standard", api_key=" ")
    assert (config.base_url, config.plan, config.api_key) == (
        "http://127.0.0.1:8000/v2", Plan.STANDARD, None)
    assert config.rate_per_minute == 120
    with pytest.raises(ValidationError, match="frozen"):
        config.plan = Plan.PREMIUM  # type: ignore[misc]


async def test_key_never_in_logs_errors_or_reprs(clock, caplog):
    caplog.set_level(logging.DEBUG)
    failures = sequence(
        status(429), status(500, "Unexpected error."), lambda r: body(b'{"data": ['),
        ok([bar("13010")], key="p1."), ok([bar("13050")]),
    )
    client, _ = make_client(failures, clock)
    errors: list[Exception] = []
    async with client:
        await client.get("equities/bars/daily", date="2023-03-24")
    client403, _ = make_client(status(403, "The incoming api key is invalid or expired."), clock)
    async with client403:
        with pytest.raises(AuthError) as info:
            await client403.get("equities/bars/daily", date="2023-03-24")
        errors.append(info.value)
    config = client.config
    texts = [caplog.text, repr(config), str(config), config.model_dump_json(), repr(client),
             str(config.model_dump()), *map(str, errors), *map(repr, errors)]
    texts += [str(r.args) for r in caplog.records]
    assert all(KEY not in t for t in texts)
    # The logs do say what happened (so the assertion above is about real log lines).
    assert "retry 1/5 in" in caplog.text and "-> 429" in caplog.text and "2023-03-24" in caplog.text


# --- a real socket: headers on the wire, gzip, httpx/httpcore logging, sync wrappers ---------


class _Server(ThreadingHTTPServer):
    seen_headers: list[dict[str, str]]


class _JQuantsLike(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.seen_headers.append(dict(self.headers))
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        if self.headers.get("x-api-key") != KEY:
            return self._send(403, {"message": "The incoming api key is invalid or expired."})
        if query.get("pagination_key") is None:
            payload = {"data": [bar("13010", date=query["date"])], "pagination_key": "n1."}
        else:
            payload = {"data": [bar("13050", date=query["date"])]}
        self._send(200, payload)

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        raw = gzip.compress(json.dumps(payload).encode())
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _JQuantsLike)
    server.seen_headers = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def local_config(server: _Server, **kwargs: Any) -> ClientConfig:
    host, port = server.server_address[:2]
    return ClientConfig(base_url=f"http://{host}:{port}/v2", api_key=KEY, plan="premium", **kwargs)


def test_real_socket_sync_fetch_and_logging(local_server, caplog):
    caplog.set_level(logging.DEBUG)
    frame = fetch(local_config(local_server), "equities/bars/daily", date=dt.date(2023, 3, 24))
    assert frame["Code"].to_list() == ["13010", "13050"]
    frames = fetch_many_sync(
        local_config(local_server), BARS, [{"date": "2023-03-24"}, {"date": "2023-03-27"}]
    )
    assert [f["Date"].to_list() for f in frames] == [
        [dt.date(2023, 3, 24)] * 2, [dt.date(2023, 3, 27)] * 2]
    headers = local_server.seen_headers[0]
    assert headers["x-api-key"] == KEY and headers["Accept-Encoding"] == "gzip"
    # httpx and httpcore logged at DEBUG too, and none of it carries the key.
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"httpx", "httpcore", "atft_pipeline"} <= loggers
    assert KEY not in caplog.text
    assert all(KEY not in str(r.args) and KEY not in r.getMessage() for r in caplog.records)

    wrong = local_config(local_server).model_copy(update={"api_key": None})
    with pytest.raises(AuthError) as info:
        fetch(wrong, "equities/bars/daily", date="2023-03-24")
    assert "No API key is configured" in str(info.value)


async def test_rate_limiting_can_be_switched_off_for_a_local_stand_in():
    from atft_pipeline.jquants.client import ClientConfig, JQuantsClient

    sleeps: list[float] = []
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def handler(request):
        import httpx

        return httpx.Response(200, json={"data": []})

    import httpx
    from pydantic import SecretStr

    for limited, expect_wait in ((True, True), (False, False)):
        sleeps.clear()
        config = ClientConfig(base_url="http://127.0.0.1:1/v2", api_key=SecretStr("k"), rate_limited=limited)
        async with JQuantsClient(config, transport=httpx.MockTransport(handler), sleep=fake_sleep, clock=lambda: now[0]) as client:
            for _ in range(7):  # Free plan: 5 per minute
                await client.get("equities/master")
        assert (sum(sleeps) >= 59) is expect_wait, sleeps
