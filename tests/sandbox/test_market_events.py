"""The events a nightly simulation must cross, planted in a window at the end of the market:
splits and reverse splits, late filings, restatements, the margin-interest regime switch —
deterministic, and leaving everything before the window as it was."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from pydantic import ValidationError

from atft_pipeline import calendar
from atft_pipeline.sandbox.embedded import (
    SANDBOX_EVENTS_FROM,
    SANDBOX_MARGIN_DAILY_FROM,
    sandbox_market_config,
)
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.settings import SANDBOX_END, SANDBOX_START

BARS, FINS, MARGIN = "equities/bars/daily", "fins/summary", "markets/margin-interest"
PLAIN = MarketConfig(n_stocks=60, start=dt.date(2022, 1, 4), end=dt.date(2023, 6, 30))
WINDOW_START = dt.date(2023, 4, 28)
EVENTS = PLAIN.model_copy(
    update={"event_window_start": WINDOW_START, "margin_interest_daily_from": dt.date(2023, 5, 22)}
)


@pytest.fixture(scope="module")
def markets():
    return generate_market(PLAIN), generate_market(EVENTS)


def _late(fins: pl.DataFrame) -> pl.DataFrame:
    time = pl.col("DiscTime")
    return fins.filter(time.is_null() | (time.str.slice(0, 5) > "18:00"))


def _restatements(fins: pl.DataFrame) -> pl.DataFrame:
    """Statements re-disclosing a period (code, document type, period end) disclosed before."""
    reports = fins.filter(pl.col("DocType").str.contains("FinancialStatements"))
    first = pl.col("DiscDate").min().over("Code", "DocType", "CurPerEn")
    return reports.filter(pl.col("DiscDate") > first)


def test_window_holds_every_event(markets):
    _, market = markets
    in_window = pl.col("DiscDate") >= WINDOW_START
    splits = market.tables[BARS].filter(
        (pl.col("Date") >= WINDOW_START) & (pl.col("AdjFactor") != 1.0)
    )
    assert splits.height >= 3
    assert (splits["AdjFactor"] < 1).any() and (splits["AdjFactor"] > 1).any()
    fins = market.tables[FINS].filter(in_window)
    assert _late(fins).height >= 3
    assert fins["DiscTime"].null_count() >= 1
    assert _restatements(market.tables[FINS]).filter(in_window).height >= 3
    margin = market.tables[MARGIN].filter(pl.col("Date") >= WINDOW_START)
    assert margin["PubDate"].null_count() > 0 and margin["PubDate"].is_not_null().any()


def test_nothing_before_the_window_changes(markets):
    plain, market = markets
    assert _late(plain.tables[FINS].filter(pl.col("DiscDate") >= WINDOW_START)).is_empty()
    before = {BARS: "Date", FINS: "DiscDate"}
    for path, date in before.items():
        # stored Adj* are adjusted to the end of the data: a split in the window rescales them
        raw = [c for c in plain.tables[path].columns if "Adj" not in c or c == "AdjFactor"]
        assert market.tables[path].filter(pl.col(date) < WINDOW_START).select(raw).equals(
            plain.tables[path].filter(pl.col(date) < WINDOW_START).select(raw)
        ), path
    assert market.oracle.filter(pl.col("date") < WINDOW_START).equals(
        plain.oracle.filter(pl.col("date") < WINDOW_START)
    )


def test_events_are_deterministic_and_the_oracle_replays(markets):
    _, market = markets
    again = generate_market(EVENTS)
    for path, table in market.tables.items():
        assert again.tables[path].equals(table), path
    assert market.replay_oracle().equals(market.oracle)


def test_window_must_lie_inside_the_market():
    with pytest.raises(ValidationError, match="event_window_start"):
        MarketConfig.model_validate(PLAIN.model_dump() | {"event_window_start": dt.date(2024, 1, 4)})


def test_the_sandbox_market_crosses_every_event_in_its_last_40_sessions():
    """The configuration ``atft demo`` and nightly simulations serve: splits, late filings,
    restatements, the regime switch and a holiday week inside the last 40 sessions."""
    config = sandbox_market_config()
    last_40 = calendar.trading_days(SANDBOX_START, SANDBOX_END)[-40:]
    assert config.event_window_start == SANDBOX_EVENTS_FROM <= last_40[0]
    assert last_40[0] < SANDBOX_MARGIN_DAILY_FROM < last_40[-1]
    weekdays = [
        last_40[0] + dt.timedelta(days=k) for k in range((last_40[-1] - last_40[0]).days)
    ]
    holidays = [d for d in weekdays if d.weekday() < 5 and d not in set(last_40)]
    assert holidays  # 2023-11-03 and 2023-11-23
    tables = generate_market(config).tables
    in_last_40 = pl.col("DiscDate") >= last_40[0]
    splits = tables[BARS].filter((pl.col("Date") >= last_40[0]) & (pl.col("AdjFactor") != 1.0))
    assert splits.height >= 3 and (splits["AdjFactor"] > 1).any()
    assert _late(tables[FINS].filter(in_last_40)).height >= 3
    assert _restatements(tables[FINS]).filter(in_last_40).height >= 3
