"""The 2026-09 API changes: new fields, daily margin interest, published_date, cursor, and
response fields the registry does not know (reported, never silently dropped)."""

from __future__ import annotations

import datetime as dt
import logging

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from atft_pipeline.calendar import shift_trading_days, trading_days
from atft_pipeline.jquants.client import ClientConfig, JQuantsClient, build_query
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.errors import EntitlementError, ResponseFormatError
from atft_pipeline.jquants.parsing import frame_to_rows, unknown_fields
from atft_pipeline.jquants.sources import RAW_SOURCES, fetch_raw_days
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerSettings, create_app
from atft_pipeline.settings import SANDBOX_API_KEY
from atft_pipeline.validation.result import validate_raw

DAILY_FROM = dt.date(2024, 5, 1)


@pytest.fixture(scope="module")
def market():
    return generate_market(
        MarketConfig(
            seed=5,
            n_stocks=30,
            start=dt.date(2024, 1, 4),
            end=dt.date(2024, 6, 28),
            margin_interest_daily_from=DAILY_FROM,
        )
    )


def _client(app, plan: Plan = Plan.PREMIUM) -> JQuantsClient:
    config = ClientConfig(
        base_url="http://stand-in/v2",
        api_key=SecretStr(SANDBOX_API_KEY),
        plan=plan,
        rate_limited=False,
        max_retries=0,
    )
    return JQuantsClient(config, transport=httpx.ASGITransport(app=app))


def _answer(rows: list[dict]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json={"data": rows}))


async def test_new_fields_are_parsed_from_the_stand_in(market) -> None:
    async with _client(create_app(market.tables)) as client:
        master = await client.get("equities/master", date="2024-03-01")
        summary = await client.get("fins/summary", date="2024-05-10")
        margin = await client.get("markets/margin-interest", published_date="2024-05-10")
    assert master["ProdCat"].null_count() == 0 and master.height > 0
    annual = summary.filter(pl.col("CurPerType") == "FY")
    assert annual.height > 0
    # ROE is net income over shareholders' equity, in percent.
    expected = (100 * annual["NP"] / annual["ShEq"]).round(2)
    assert annual["ROE"].to_list() == pytest.approx(expected.to_list(), abs=0.006)
    assert (summary["ShEq"] <= summary["Eq"]).all()
    assert margin.height > 0 and margin.schema["LongVal"] == pl.Float64
    assert (margin["PubDate"] == dt.date(2024, 5, 10)).all()
    # Amounts are balances times the application day's close: one price per row.
    price = margin["LongVal"] / margin["LongVol"]
    assert ((margin["ShrtVal"] / margin["ShrtVol"] - price).abs() / price < 1e-3).all()


async def test_unknown_fields_are_reported_not_silently_dropped(caplog) -> None:
    endpoint = ENDPOINTS["equities/master"]
    row = frame_to_rows(
        endpoint,
        pl.DataFrame({"Date": [dt.date(2026, 10, 1)], "Code": ["72030"]}).with_columns(
            pl.lit(None, pl.String).alias(n) for n in endpoint.field_names[2:]
        ),
    )[0] | {"NewFlag": "1", "Listing2": "x"}
    config = ClientConfig(api_key=SecretStr("k"), rate_limited=False)
    with caplog.at_level(logging.WARNING, logger="atft_pipeline.jquants"):
        async with JQuantsClient(config, transport=_answer([row])) as client:
            frame = await client.get("equities/master", date="2026-10-01")
            await client.get("equities/master", date="2026-10-02")
    assert frame.columns == endpoint.field_names  # the typed contract is unchanged
    assert client.stats.unknown_fields == {"equities/master": ["Listing2", "NewFlag"]}
    warnings = [r for r in caplog.records if "not in the endpoint registry" in r.getMessage()]
    assert len(warnings) == 1 and "Listing2" in warnings[0].getMessage()


def test_unknown_members_of_a_nested_object_are_found() -> None:
    alert = ENDPOINTS["markets/margin-alert"]
    rows = [{"PubDate": "2026-10-01", "PubReason": {"Restricted": "0", "ByNewRule": "1"}}]
    assert unknown_fields(alert, rows) == ["PubReason.ByNewRule"]


async def test_a_missing_key_field_is_an_error_naming_it() -> None:
    config = ClientConfig(api_key=SecretStr("k"), rate_limited=False, max_retries=0)
    rows = [{"Date": "2026-10-01", "C": 100}]
    async with JQuantsClient(config, transport=_answer(rows)) as client:
        with pytest.raises(ResponseFormatError, match=r"equities/bars/daily.*\['Code'\]"):
            await client.get("equities/bars/daily", date="2026-10-01")


def test_published_date_parameter_rules() -> None:
    margin = ENDPOINTS["markets/margin-interest"]
    assert build_query(margin, {"published_date": dt.date(2026, 9, 29)}) == {
        "published_date": "2026-09-29"
    }
    assert build_query(margin, {"published_date": "20260929", "code": "7203"})
    with pytest.raises(ValueError, match="'published_date' cannot be combined"):
        build_query(margin, {"published_date": "2026-09-29", "date": "2026-09-28"})


async def test_stand_in_validates_published_date(market) -> None:
    app = create_app(market.tables)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://stand-in/v2",
        headers={"x-api-key": SANDBOX_API_KEY},
    ) as http:
        for params, message in (
            ({"published_date": "2024-05-10", "from": "2024-05-01"}, "cannot be combined"),
            ({"from": "2024-05-01", "to": "2024-05-10"}, "code, date, published_date"),
            ({"published_date": "10/05/2024"}, "YYYYMMDD"),
        ):
            response = await http.get("markets/margin-interest", params=params)
            assert response.status_code == 400 and message in response.json()["message"]
    code = market.tables["markets/margin-interest"]["Code"][0]
    async with _client(app) as client:
        with_code = await client.get(
            "markets/margin-interest", code=code, from_="2024-01-04", to="2024-06-28"
        )
        assert with_code["PubDate"].null_count() > 0 and with_code["PubDate"].is_not_null().any()
        # Before the daily regime no row has a publication date, so none is found by it.
        weekly_day = with_code.filter(pl.col("PubDate").is_null())["Date"].max()
        published = shift_trading_days(weekly_day, 2)
        by_pub = await client.get("markets/margin-interest", published_date=published)
        assert by_pub.filter(pl.col("Date") == weekly_day).height == 0


async def test_cursor_retrieval_through_the_client(market) -> None:
    """At 19:30 the 18:00 update is seen; the next morning the cursor brings only the rest."""
    summary = market.tables["fins/summary"]
    day = summary["DiscDate"][summary.height // 2]
    base = summary.filter(pl.col("DiscDate") == day).head(1)
    late = base.with_columns(pl.lit("99999999000001").alias("DiscNo"), pl.lit("20:00:00").alias(
        "DiscTime"))
    tables = {**market.tables, "fins/summary": pl.concat([summary, late])}

    def at(moment: dt.datetime, plan: Plan = Plan.PREMIUM):
        return create_app(tables, settings=ServerSettings(clock=moment, plan=plan))

    evening = dt.datetime.combine(day, dt.time(19, 30))
    async with _client(at(evening)) as client:
        first = await client.get_with_cursor("fins/summary", date=day)
    assert first.cursor is not None
    assert "99999999000001" not in first.frame["DiscNo"].to_list()
    morning = evening + dt.timedelta(hours=9)
    async with _client(at(morning)) as client:
        second = await client.get_with_cursor("fins/summary", cursor=first.cursor, date=day)
    assert second.frame["DiscNo"].to_list() == ["99999999000001"]
    async with _client(at(morning, Plan.STANDARD), plan=Plan.STANDARD) as client:
        with pytest.raises(EntitlementError):
            await client.get_with_cursor("fins/summary", cursor=first.cursor, date=day)
    async with _client(at(morning)) as client:
        with pytest.raises(ValueError, match="does not support cursor"):
            await client.get_with_cursor("equities/bars/daily", date=day)


async def test_margin_partitions_are_publication_days_in_both_regimes(market) -> None:
    """raw_weekly_margin_interest[d] = every row published on d, before and after the switch,
    and each partition passes its raw schema (partition-date rule included)."""
    source = RAW_SOURCES["raw_weekly_margin_interest"]
    days = trading_days("2024-04-15", "2024-05-17")
    async with _client(create_app(market.tables)) as client:
        partitions = await fetch_raw_days(client, source, days)
    table = market.tables["markets/margin-interest"]
    published = table.with_columns(
        pl.coalesce(
            pl.col("PubDate"),
            pl.col("Date").map_elements(lambda d: shift_trading_days(d, 2), return_dtype=pl.Date),
        ).alias("_published")
    )
    for day, frame in partitions.items():
        expected = published.filter(pl.col("_published") == day)
        assert sorted(frame["Code"].to_list()) == sorted(expected["Code"].to_list()), day
        assert frame.height == expected.height
        result = validate_raw(source.asset, day, frame)
        assert not [f for f in result.failures if f.blocking], result.message()
    weekly_days = [d for d, f in partitions.items() if f.height and f["PubDate"].is_null().all()]
    daily_days = [d for d, f in partitions.items() if f.height and f["PubDate"].is_not_null().all()]
    assert weekly_days and daily_days and max(weekly_days) < min(daily_days)
    # After the switch every session publishes (the previous session's applications).
    assert all(partitions[d].height for d in days if d > shift_trading_days(DAILY_FROM, 1))
