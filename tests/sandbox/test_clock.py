"""The stand-in's simulated clock: what the API had published at a moment, and Adj* as of then."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import polars as pl
import pytest

from atft_pipeline.calendar import shift_trading_days
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.parsing import rows_to_frame
from atft_pipeline.sandbox.clock import parse_clock
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import CLOCK_HEADER, CLOCK_PATH, ServerSettings, create_app
from atft_pipeline.settings import SANDBOX_API_KEY

KEY = {"x-api-key": SANDBOX_API_KEY}
SPLIT_CODE = "54840"  # 1:2 split (AdjFactor 0.5) on SPLIT_DAY in the market below
SPLIT_DAY = dt.date(2024, 2, 20)


@pytest.fixture(scope="module")
def market():
    return generate_market(
        MarketConfig(
            seed=11,
            n_stocks=40,
            start=dt.date(2024, 1, 4),
            end=dt.date(2024, 6, 28),
            margin_interest_daily_from=dt.date(2024, 5, 1),
        )
    )


def _statements(market) -> pl.DataFrame:
    """The market's statements plus one filed after 18:00 and one without a time."""
    summary = market.tables["fins/summary"]
    first = summary.head(1)
    late = first.with_columns(
        pl.lit("20240305999001").alias("DiscNo"),
        pl.lit(dt.date(2024, 3, 5)).alias("DiscDate"),
        pl.lit("19:15:00").alias("DiscTime"),
    )
    untimed = first.with_columns(
        pl.lit("20240305999002").alias("DiscNo"),
        pl.lit(dt.date(2024, 3, 5)).alias("DiscDate"),
        pl.lit(None, pl.String).alias("DiscTime"),
    )
    early = first.with_columns(
        pl.lit("20240305999003").alias("DiscNo"),
        pl.lit(dt.date(2024, 3, 5)).alias("DiscDate"),
        pl.lit("15:00:00").alias("DiscTime"),
    )
    return pl.concat([summary, late, untimed, early])


@pytest.fixture(scope="module")
def app(market):
    tables = {**market.tables, "fins/summary": _statements(market)}
    options = ENDPOINTS["derivatives/bars/daily/options/225"]
    tables[options.path] = pl.DataFrame(
        {"Date": [dt.date(2024, 3, 5)], "Code": ["131040018"], "EmMrgnTrgDiv": ["001"]}
    ).select(
        pl.col(n) if n in ("Date", "Code", "EmMrgnTrgDiv") else pl.lit(None, t).alias(n)
        for n, t in options.schema().items()
    )
    return create_app(tables)


async def _get(app, path: str, clock: str | None = None, **params) -> httpx.Response:
    headers = dict(KEY) | ({CLOCK_HEADER: clock} if clock else {})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stand-in"
    ) as client:
        return await client.get(f"/v2/{path}", params=params, headers=headers)


async def _frame(app, path: str, clock: str | None = None, **params) -> pl.DataFrame:
    response = await _get(app, path, clock, **params)
    assert response.status_code == 200, response.text
    return rows_to_frame(ENDPOINTS[path], response.json()["data"], Plan.PREMIUM)


async def test_without_a_clock_answers_are_unchanged(market, app) -> None:
    """No header, no server clock: the same bytes as a server that has no clock at all."""
    plain = create_app({**market.tables})
    for path, params in (
        ("equities/bars/daily", {"date": "2024-02-19"}),
        ("markets/margin-interest", {"code": "54840"}),
        ("equities/master", {"date": "2024-03-01"}),
    ):
        ours, theirs = await _get(app, path, **params), await _get(plain, path, **params)
        assert ours.status_code == theirs.status_code == 200
        assert ours.content == theirs.content


async def test_bars_appear_after_the_close(app) -> None:
    day = "2024-03-05"
    assert (await _frame(app, "equities/bars/daily", f"{day}T16:29:59", date=day)).height == 0
    after = await _frame(app, "equities/bars/daily", f"{day}T16:30:00", date=day)
    assert after.height > 0 and set(after["Date"].to_list()) == {dt.date(2024, 3, 5)}


async def test_statements_arrive_with_the_18_00_and_24_30_updates(app) -> None:
    day = "2024-03-05"
    numbers = ("20240305999001", "20240305999002", "20240305999003")

    async def seen(clock: str) -> set[str]:
        frame = await _frame(app, "fins/summary", clock, date=day)
        return set(frame["DiscNo"].to_list()) & set(numbers)

    assert await seen(f"{day}T17:59") == set()
    # The 18:00 update: only documents disclosed by then; a 19:30 fetch stops here.
    assert await seen(f"{day}T19:30") == {"20240305999003"}
    # The 24:30 update brings the late filing and the one without a time.
    assert await seen("2024-03-06T00:29") == {"20240305999003"}
    assert await seen("2024-03-06T00:30") == set(numbers)


async def test_cursor_returns_only_what_was_published_since(app) -> None:
    day = "2024-03-05"
    first = await _get(app, "fins/summary", f"{day}T19:30", date=day)
    cursor = first.json()["cursor"]
    assert {r["DiscNo"] for r in first.json()["data"]} >= {"20240305999003"}
    again = await _get(app, "fins/summary", "2024-03-06T04:00", date=day, cursor=cursor)
    assert again.status_code == 200
    assert sorted(r["DiscNo"] for r in again.json()["data"]) == [
        "20240305999001",
        "20240305999002",
    ]
    assert again.json()["cursor"] != cursor


async def test_index_options_appear_at_03_00_the_next_day(app) -> None:
    path, day = "derivatives/bars/daily/options/225", "2024-03-05"
    assert (await _frame(app, path, "2024-03-06T02:59", date=day)).height == 0
    assert (await _frame(app, path, "2024-03-06T03:00", date=day)).height == 1


async def test_margin_interest_published_by_regime(market, app) -> None:
    path = "markets/margin-interest"
    table = market.tables[path]
    weekly = table.filter(pl.col("PubDate").is_null()).get_column("Date").max()
    rows = table.filter(pl.col("Date") == weekly).height
    # A weekly application date is public 2 sessions later, after the close.
    publication = shift_trading_days(weekly, 2)
    day_before = shift_trading_days(publication, -1).isoformat()
    assert (await _frame(app, path, f"{day_before}T23:00", date=weekly.isoformat())).height == 0
    published = await _frame(app, path, f"{publication}T16:30", date=weekly.isoformat())
    assert published.height == rows > 0
    assert published["PubDate"].null_count() == rows  # the weekly regime has no PubDate
    # Daily regime: published_date D returns the applications of the previous session.
    by_pub = await _frame(app, path, "2024-05-10T16:30", published_date="2024-05-10")
    assert by_pub.height > 0
    assert set(by_pub["Date"].to_list()) == {dt.date(2024, 5, 9)}
    assert by_pub["LongVal"].null_count() == 0
    assert (await _frame(app, path, "2024-05-10T16:29", published_date="2024-05-10")).height == 0


async def test_adjusted_prices_are_as_known_at_the_clock(market, app) -> None:
    """Before the ex-date the old scale; after it earlier rows are re-adjusted (x 0.5)."""
    path = "equities/bars/daily"
    before = await _frame(app, path, "2024-02-19T17:00", code=SPLIT_CODE)
    after = await _frame(app, path, "2024-02-20T17:00", code=SPLIT_CODE)
    final = market.tables[path].filter(pl.col("Code") == SPLIT_CODE)
    assert before["Date"].max() == dt.date(2024, 2, 19)
    assert after["Date"].max() == SPLIT_DAY
    # Known on the 19th: nothing adjusted yet, Adj* equal raw.
    assert before["AdjC"].to_list() == before["C"].to_list()
    assert before["AdjVo"].to_list() == before["Vo"].to_list()
    # From the ex-date on, every earlier row is halved and its volume doubled.
    earlier = after.filter(pl.col("Date") < SPLIT_DAY)
    assert earlier["AdjC"].to_list() == pytest.approx((earlier["C"] * 0.5).to_list())
    assert earlier["AdjVo"].to_list() == pytest.approx((earlier["Vo"] * 2).to_list())
    # After the last session the clock agrees with the stored end-of-data adjustment.
    end = await _frame(app, path, "2024-07-01T09:00", code=SPLIT_CODE)
    for column in ("AdjO", "AdjH", "AdjL", "AdjC", "AdjVo", "MAdjC", "AAdjVo"):
        assert end[column].to_list() == pytest.approx(final[column].to_list(), rel=1e-12)
    # The ex-date jump exists in a day-by-day view, and disappears in the as-of-then view.
    jump_stored_daily = before["AdjC"][-1], after["AdjC"][-1]
    assert jump_stored_daily[1] / jump_stored_daily[0] < 0.6
    assert 0.8 < after["AdjC"][-1] / earlier["AdjC"][-1] < 1.25


async def test_master_snapshot_and_free_plan_delay_follow_the_clock(market) -> None:
    app = create_app(market.tables, settings=ServerSettings(plan=Plan.FREE))
    path = "equities/bars/daily"
    # On the Free plan the latest 12 weeks are hidden: at 2024-06-03 the window ends 03-11.
    inside = await _get(app, path, "2024-06-03T18:00", date="2024-03-11")
    outside = await _get(app, path, "2024-06-03T18:00", date="2024-03-12")
    assert inside.status_code == 200 and inside.json()["data"]
    assert outside.status_code == 400 and "2024-03-11" in outside.json()["message"]


async def test_server_clock_is_set_by_the_admin_endpoint(market) -> None:
    app = create_app(market.tables, settings=ServerSettings(clock=dt.datetime(2024, 3, 5, 12)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stand-in", headers=KEY
    ) as client:
        assert (await client.get(CLOCK_PATH)).json() == {"clock": "2024-03-05T12:00:00"}
        day = {"date": "2024-03-05"}
        assert (await client.get("/v2/equities/bars/daily", params=day)).json()["data"] == []
        moved = await client.put(CLOCK_PATH, content=json.dumps({"clock": "2024-03-05T08:00Z"}))
        assert moved.json() == {"clock": "2024-03-05T17:00:00"}  # UTC -> Tokyo
        assert (await client.get("/v2/equities/bars/daily", params=day)).json()["data"]
        bad = await client.put(CLOCK_PATH, content=json.dumps({"clock": "tomorrow"}))
        assert bad.status_code == 400
        assert (await client.delete(CLOCK_PATH)).json() == {"clock": None}
        # A request's own header wins over the server clock.
        early = {CLOCK_HEADER: "2024-03-05T09:00"}
        got = await client.get("/v2/equities/bars/daily", params=day, headers=early)
        assert got.json()["data"] == []
        assert (await client.get("/v2/equities/bars/daily", params=day, headers={
            CLOCK_HEADER: "soon"
        })).status_code == 400


def test_parse_clock_forms() -> None:
    assert parse_clock("2024-03-05") == dt.datetime(2024, 3, 5, 23, 59, 59)
    assert parse_clock("2024-03-05T19:30") == dt.datetime(2024, 3, 5, 19, 30)
    assert parse_clock("2024-03-05T10:30:00+00:00") == dt.datetime(2024, 3, 5, 19, 30)
    with pytest.raises(ValueError, match="ISO date or datetime"):
        parse_clock("19:30")


@pytest.mark.realdata
def test_real_replay_adjusted_as_of_the_clock(realdata_dir) -> None:
    """On the real replay: the day before an ex-date the latest row is unadjusted; after the
    last session the clock reproduces the stored (end-of-data) Adj* exactly."""
    from atft_pipeline.sandbox.query import EndpointTable, parse_query, plan_window
    from atft_pipeline.sandbox.replay import read_replay

    endpoint = ENDPOINTS["equities/bars/daily"]
    bars = read_replay(realdata_dir)[endpoint.path]
    table = EndpointTable(endpoint, bars)
    splits = bars.filter(pl.col("AdjFactor") != 1.0).sort("Date", "Code")
    window = plan_window(Plan.PREMIUM, dt.date(2019, 1, 4))
    for split in splits.gather_every(max(splits.height // 5, 1)).iter_rows(named=True):
        query = parse_query(endpoint, [("code", split["Code"])], window)
        ex_noon = dt.datetime.combine(split["Date"], dt.time(12))
        before = table.select(query, window, ex_noon)
        assert before["Date"].max() < split["Date"]
        last = before.row(before.height - 1, named=True)
        assert (last["AdjC"], last["AdjVo"]) == (last["C"], last["Vo"])
        after_end = table.select(query, window, dt.datetime(2019, 1, 4, 9))
        stored = bars.filter(pl.col("Code") == split["Code"]).sort("Date")
        for column in ("AdjO", "AdjH", "AdjL", "AdjC", "AdjVo"):
            assert after_end[column].to_list() == pytest.approx(
                stored[column].to_list(), rel=1e-12, nan_ok=True
            ), (split, column)


def test_serve_command_takes_a_clock(capsys) -> None:
    from assets.cli import build_parser

    args = build_parser().parse_args(["sandbox", "serve", "--clock", "2024-03-05T10:30Z"])
    assert args.clock == dt.datetime(2024, 3, 5, 19, 30)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sandbox", "serve", "--clock", "soon"])
    assert "--clock: clock must be an ISO date or datetime" in capsys.readouterr().err
