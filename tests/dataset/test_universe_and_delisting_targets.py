"""The stock universe as of t, and delisting-aware targets on the sandbox market."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from atft_pipeline import calendar
from atft_pipeline.dataset.assemble import (
    NO_MASTER_ROW,
    NOT_COMMON_STOCK,
    build_meta,
    universe_exclusions,
)
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.dataset.targets import compute_targets, last_traded_column, last_traded_counts
from atft_pipeline.features.catalog import HORIZONS
from atft_pipeline.sandbox.market import MarketConfig, generate_market

BARS, MASTER = "equities/bars/daily", "equities/master"


@pytest.fixture(scope="module")
def market():
    return generate_market(MarketConfig(seed=5, n_stocks=30, start=dt.date(2022, 1, 4), end=dt.date(2022, 12, 29)))


@pytest.fixture(scope="module")
def days(market):
    return calendar.trading_days(market.config.start, market.config.end)


def _with_bar_only_codes(tables: dict, codes: list[str]) -> dict:
    """Copies of an existing stock's bars under new codes that have no master row (ETFs)."""
    bars = tables[BARS]
    template = bars.filter(pl.col("Code") == bars["Code"][0])
    extra = [template.with_columns(pl.lit(code).alias("Code")) for code in codes]
    return {**tables, BARS: pl.concat([bars, *extra])}


def test_bar_only_codes_never_enter_the_dataset_and_are_counted(market, days):
    etfs = ["13060", "13210", "16700"]
    tables = _with_bar_only_codes(market.tables, etfs)
    raw = raw_frames_from_tables(tables)
    dates = days[-10:]
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, days).collect()
    assert not set(etfs) & set(meta["code"].to_list())
    stocks = market.tables[BARS].filter(pl.col("Date").is_in(dates))
    assert meta.height == stocks.height  # every stock's row is kept
    excluded = universe_exclusions(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, days)
    assert excluded == {
        NO_MASTER_ROW: {"codes": 3, "rows": 3 * len(dates)},
        NOT_COMMON_STOCK: {"codes": 0, "rows": 0},
    }


def test_product_category_decides_when_present_else_segment_and_sector(market, days):
    # The sandbox master carries ProdCat (2026 spec); the fallback is for history without it.
    master = market.tables[MASTER].drop("ProdCat", strict=False)
    codes = sorted(master["Code"].unique().to_list())
    reit, fund, pro_market = codes[:3]
    dates = days[-5:]
    # Without ProdCat: the "Others" sector 9999 and TOKYO PRO MARKET are not common stock.
    by_segment = master.with_columns(
        pl.when(pl.col("Code") == reit).then(pl.lit("9999")).otherwise(pl.col("S33")).alias("S33"),
        pl.when(pl.col("Code") == pro_market).then(pl.lit("0105")).otherwise(pl.col("Mkt")).alias("Mkt"),
    )
    raw = raw_frames_from_tables({**market.tables, MASTER: by_segment})
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, days).collect()
    assert {reit, pro_market}.isdisjoint(meta["code"].to_list()) and fund in meta["code"].to_list()
    # With ProdCat it decides: 013 REIT and 014 ETF out, 011 / 021 in, even in a 9999 sector;
    # a row without a category (older history) falls back to the segment rule.
    category = pl.when(pl.col("Code") == reit).then(pl.lit("013")).when(pl.col("Code") == fund).then(
        pl.lit("014")
    ).when(pl.col("Code") == pro_market).then(pl.lit(None, dtype=pl.String)).otherwise(pl.lit("011"))
    with_category = by_segment.with_columns(
        category.alias("ProdCat"),
        pl.when(pl.col("Code") == codes[3]).then(pl.lit("9999")).otherwise(pl.col("S33")).alias("S33"),
    )
    lazy_master = with_category.lazy()
    meta = build_meta(raw["raw_daily_quotes"], lazy_master, dates, days).collect()
    present = set(meta["code"].to_list())
    assert {reit, fund, pro_market}.isdisjoint(present) and codes[3] in present
    excluded = universe_exclusions(raw["raw_daily_quotes"], lazy_master, dates, days)
    assert excluded[NOT_COMMON_STOCK]["codes"] == 3 and excluded[NO_MASTER_ROW]["codes"] == 0


def _brute_force_targets(bars: pl.DataFrame, sessions: list[dt.date], dates: list[dt.date]):
    """The documented definition, one row at a time: entry close at t+1; exit at the close of
    t+1+h, or the last traded close in [t+1, t+1+h] once t+1+h has happened; else null."""
    index = {d: i for i, d in enumerate(sessions)}
    close = {}
    for date, code, adj in bars.select("Date", "Code", "AdjC").iter_rows():
        if adj is not None and np.isfinite(adj) and date in index:
            close[(code, index[date])] = adj
    happened = {i for (_, i) in close}
    out = {}
    for date, code in bars.filter(pl.col("Date").is_in(dates)).select("Date", "Code").iter_rows():
        t = index[date]
        entry = close.get((code, t + 1))
        for h in HORIZONS:
            k = t + 1 + h
            value, flag = None, False
            if entry is not None and k in happened:
                last = max(i for i in range(t + 1, k + 1) if (code, i) in close)
                value, flag = close[(code, last)] / entry - 1.0, last < k
            out[(date, code, h)] = (value, flag)
    return out


def test_delisting_inside_the_horizon_gets_the_last_traded_close(market, days):
    bars = market.tables[BARS]
    universe = market.hidden.universe
    delisted = [
        str(code) for code, last in zip(universe.codes, universe.delisting_day, strict=True)
        if last < len(days) - 1
    ]
    assert delisted, "the sandbox market delists some stocks"
    targets = compute_targets(bars.lazy(), days, days, flags=True).collect()
    expected = _brute_force_targets(bars, days, days)
    assert targets.height == len({(d, c) for d, c, _ in expected})
    for row in targets.iter_rows(named=True):
        for h in HORIZONS:
            value, flag = expected[(row["date"], row["code"], h)]
            got = row[f"target_{h}d"]
            assert (got is None) == (value is None), (row["date"], row["code"], h)
            if value is not None:
                assert got == pytest.approx(value, rel=1e-5)
            assert row[last_traded_column(f"target_{h}d")] == flag
    # Each delisted stock: rows whose horizon crosses its last session carry its last close.
    for code in delisted:
        last_day = bars.filter((pl.col("Code") == code) & pl.col("AdjC").is_not_null())["Date"].max()
        last = days.index(last_day)
        rows = targets.filter(pl.col("code") == code).sort("date")
        t = last - 5  # entry at t+1 = last - 4, exit at t+21 would be 16 sessions after delisting
        row = rows.filter(pl.col("date") == days[t]).row(0, named=True)
        entry = bars.filter((pl.col("Code") == code) & (pl.col("Date") == days[t + 1]))["AdjC"][0]
        final = bars.filter((pl.col("Code") == code) & (pl.col("Date") == last_day))["AdjC"][0]
        if entry is not None:
            assert row["target_20d"] == pytest.approx(final / entry - 1.0, rel=1e-5)
            assert row[last_traded_column("target_20d")]
    counts = last_traded_counts(targets)
    assert counts["target_20d"] >= counts["target_1d"] > 0


def test_targets_stay_null_until_the_exit_session_happens(market, days):
    bars = market.tables[BARS].filter(pl.col("Date") <= days[-3])
    future = [*days, *calendar.trading_days(days[-1] + dt.timedelta(days=1), dt.date(2023, 2, 28))]
    targets = compute_targets(bars.lazy(), future, days[-8:], flags=True).collect()
    expected = _brute_force_targets(bars, future, days[-8:])
    last = targets.filter(pl.col("date") == days[-5])
    # exit session days[-3] has happened: known wherever the brute force knows it
    got = dict(zip(last["code"].to_list(), last["target_1d"].to_list(), strict=True))
    assert got and all((got[c] is None) == (expected[(days[-5], c, 1)][0] is None) for c in got)
    assert last["target_1d"].is_not_null().sum() > 0.8 * last.height
    # the 5-day exit lies in the future: null, never a delisting return
    assert last["target_5d"].null_count() == last.height
    assert not last[last_traded_column("target_5d")].any()
