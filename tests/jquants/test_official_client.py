"""The official client (``jquants-api-client`` 2.x, ``ClientV2``) against the stand-in server.

The official client selects its expected columns strictly (a missing one is a ``KeyError``)
and sends its own parameter spellings, so reading every endpoint both sides support without
error shows the stand-in answers the 2026-09 spec the way the API does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import jquantsapi
import polars as pl
import pytest

from atft_pipeline.jquants.endpoints import ENDPOINTS
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerHandle, create_app, serve_in_thread
from atft_pipeline.settings import SANDBOX_API_KEY

START, END = dt.date(2024, 1, 4), dt.date(2024, 4, 30)
DAILY_MARGIN_FROM = dt.date(2024, 4, 1)


def _compact(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


@pytest.fixture(scope="module")
def market():
    return generate_market(
        MarketConfig(
            seed=3, n_stocks=20, start=START, end=END, margin_interest_daily_from=DAILY_MARGIN_FROM
        )
    )


@pytest.fixture(scope="module")
def server(market) -> Iterator[ServerHandle]:
    with serve_in_thread(create_app(market.tables)) as handle:
        yield handle


@pytest.fixture
def official(server: ServerHandle):
    client = jquantsapi.ClientV2(api_key=SANDBOX_API_KEY)
    client.JQUANTS_API_BASE = server.base_url
    return client


def _day_with_rows(market, path: str, column: str) -> dt.date:
    return market.tables[path].drop_nulls(column).get_column(column).max()


def test_official_client_reads_every_shared_endpoint(market, official) -> None:
    tables = market.tables
    bars_day = _day_with_rows(market, "equities/bars/daily", "Date")
    statement_day = _day_with_rows(market, "fins/summary", "DiscDate")
    alert_day = _day_with_rows(market, "markets/margin-alert", "PubDate")
    report_day = _day_with_rows(market, "markets/short-sale-report", "DiscDate")
    option_day = _day_with_rows(market, "derivatives/bars/daily/options/225", "Date")
    margin = tables["markets/margin-interest"]
    weekly_day = margin.filter(pl.col("PubDate").is_null())["Date"].max()
    published_day = margin["PubDate"].max()

    def rows(path: str, column: str, day: dt.date) -> int:
        return tables[path].filter(pl.col(column) == day).height

    answers = {
        "equities/master": (official.get_eq_master(date=_compact(bars_day)), None),
        "equities/bars/daily": (
            official.get_eq_bars_daily(date_yyyymmdd=_compact(bars_day)),
            rows("equities/bars/daily", "Date", bars_day),
        ),
        "indices/bars/daily/topix": (
            official.get_idx_bars_daily_topix(
                from_yyyymmdd=_compact(START), to_yyyymmdd=_compact(END)
            ),
            tables["indices/bars/daily/topix"].height,
        ),
        "markets/calendar": (
            official.get_mkt_calendar(from_yyyymmdd=_compact(START), to_yyyymmdd=_compact(END)),
            None,
        ),
        "fins/summary": (
            official.get_fin_summary_cursor(date_yyyymmdd=_compact(statement_day))[0],
            rows("fins/summary", "DiscDate", statement_day),
        ),
        "equities/earnings-calendar": (official.get_eq_earnings_cal(), None),
        "markets/margin-interest": (
            official.get_mkt_margin_interest(date_yyyymmdd=_compact(weekly_day)),
            rows("markets/margin-interest", "Date", weekly_day),
        ),
        "markets/margin-alert": (
            official.get_mkt_margin_alert(date_yyyymmdd=_compact(alert_day)),
            rows("markets/margin-alert", "PubDate", alert_day),
        ),
        "markets/short-ratio": (
            official.get_mkt_short_ratio(date_yyyymmdd=_compact(bars_day)),
            rows("markets/short-ratio", "Date", bars_day),
        ),
        "markets/short-sale-report": (
            official.get_mkt_short_sale_report(disclosed_date=_compact(report_day)),
            rows("markets/short-sale-report", "DiscDate", report_day),
        ),
        "equities/investor-types": (
            official.get_eq_investor_types(
                from_yyyymmdd=_compact(START), to_yyyymmdd=_compact(END)
            ),
            tables["equities/investor-types"].height,
        ),
        "derivatives/bars/daily/options/225": (
            official.get_drv_bars_daily_opt_225(date_yyyymmdd=_compact(option_day)),
            rows("derivatives/bars/daily/options/225", "Date", option_day),
        ),
    }
    assert set(answers) == set(ENDPOINTS)  # every endpoint of our registry is read
    for path, (frame, expected_rows) in answers.items():
        assert len(frame) > 0, path
        if expected_rows is not None:
            assert len(frame) == expected_rows, path
    master = answers["equities/master"][0]
    assert master["ProdCat"].notna().all()
    summary = answers["fins/summary"][0]
    assert {"ShEq", "NCShEq", "ROE", "NCROE"} <= set(summary.columns)

    # The daily regime through the official client's published_date.
    daily = official.get_mkt_margin_interest(published_date_yyyymmdd=_compact(published_day))
    assert len(daily) == margin.filter(pl.col("PubDate") == published_day).height > 0
    assert daily["LongVal"].notna().all() and daily["PubDate"].notna().all()


def test_official_client_cursor_retrieval(market, official) -> None:
    day = _day_with_rows(market, "fins/summary", "DiscDate")
    frame, cursor = official.get_fin_summary_cursor(date_yyyymmdd=_compact(day))
    assert len(frame) > 0 and cursor
    # Nothing was published after the end of the data: the cursor's increment is empty.
    again, next_cursor = official.get_fin_summary_cursor(date_yyyymmdd=_compact(day), cursor=cursor)
    assert len(again) == 0 and next_cursor == cursor
