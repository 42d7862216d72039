"""Price family against a plain-numpy recomputation from the bars table (every column), the
warm-up contract, halts and gaps, and real data.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import polars as pl
import pytest

from atft_pipeline.features import price
from atft_pipeline.features.registry import FeatureFamilyError
from tests.helpers import (
    BARS,
    assert_contract,
    assert_matches,
    assert_warmup,
    column_on,
    lag,
    real_slice,
    run,
    sandbox_tables,
    sessions_of,
    traded_bars,
    trailing,
)

FAMILY = price.FAMILY


# ---------------------------------------------------------------------------------------
# Reference: the price family in numpy
# ---------------------------------------------------------------------------------------


def series_reference(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    o, h, l, c, v, va = (s[k] for k in ("open", "high", "low", "close", "volume", "turnover"))
    prev = lag(c, 1)
    ret = c / prev - 1.0
    mean = np.mean
    ref = {f"logret_{k}d": np.log(c / lag(c, k)) for k in price.RETURN_HORIZONS}
    ref |= {
        "ret_1d": ret,
        "ret_5d": c / lag(c, 5) - 1.0,
        "gap_overnight": o / prev - 1.0,
        "ret_intraday": c / o - 1.0,
        "hl_range": h / l - 1.0,
        "close_location": np.where(h > l, (c - l) / np.where(h > l, h - l, 1.0), np.nan),
        "turnover_yen": va,
        "log_turnover": np.log1p(va),
        "log_turnover_20d": np.log1p(trailing(va, 20, mean)),
        "turnover_ratio_20": va / trailing(va, 20, mean),
        "volume_ratio_5_20": trailing(v, 5, mean) / trailing(v, 20, mean),
        "volume_ratio_20_60": trailing(v, 20, mean) / trailing(v, 60, mean),
        "amihud_20": trailing(np.abs(ret) / va, 20, mean) * 1e9,
        "log_price": np.log(s["raw_close"]),
        "dist_high_20": c / trailing(h, 20, np.max) - 1.0,
        "dist_low_20": c / trailing(l, 20, np.min) - 1.0,
        "dist_high_60": c / trailing(h, 60, np.max) - 1.0,
        "dist_low_60": c / trailing(l, 60, np.min) - 1.0,
        "range_pos_60": (c - trailing(l, 60, np.min))
        / (trailing(h, 60, np.max) - trailing(l, 60, np.min)),
        "overnight_ret_20": trailing(np.log(o / prev), 20, np.sum),
        "intraday_ret_20": trailing(np.log(c / o), 20, np.sum),
        "up_days_20": trailing(np.where(np.isnan(prev), np.nan, (c > prev) * 1.0), 20, mean),
        "volume_zscore_20": (np.log(v) - trailing(np.log(v), 20, mean))
        / trailing(np.log(v), 20, partial(np.std, ddof=1)),
    }
    return ref


def session_reference(bars: pl.DataFrame, code: str, sessions: list) -> dict[str, np.ndarray]:
    """Activity columns on every session the code has a row (halted rows included)."""
    rows = bars.filter(pl.col("Code") == code).sort("Date")
    index = {d: i for i, d in enumerate(sessions)}
    at = np.array([index[d] for d in rows["Date"]])
    traded = rows["C"].is_not_null().to_numpy()
    up, down = rows["UL"].fill_null(False).to_numpy(), rows["LL"].fill_null(False).to_numpy()

    def last_20(flags: np.ndarray) -> np.ndarray:
        counts = [flags[(at > s - 20) & (at <= s)].sum() for s in at]
        return np.where(at >= 19, counts, np.nan)

    first = at.min()
    age = np.where((first > 0) | (at >= price.AGE_CAP), np.minimum(at - first, 250), np.nan)
    return {
        "date": np.array(rows["Date"].to_list(), dtype=object),
        "limit_up": up * 1.0,
        "limit_down": down * 1.0,
        "limit_up_count_20": last_20(up),
        "limit_down_count_20": last_20(down),
        "age_days": age,
        "halted": (~traded) * 1.0,
        "days_traded_20": last_20(traded),
    }


def assert_price_matches(out: pl.DataFrame, bars: pl.DataFrame, sessions, codes) -> None:
    for code in codes:
        s = traded_bars(bars, code)
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = series_reference(s)
        for name, want in ref.items():
            want = np.where(np.isfinite(want), want, np.nan)
            assert_matches(column_on(out, code, name, s["date"]), want, f"{code} {name}")
        act = session_reference(bars, code, sessions)
        for name in price.SESSION_COLUMNS:
            assert_matches(column_on(out, code, name, act["date"]), act[name], f"{code} {name}")


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def case():
    tables = sandbox_tables()
    days = sessions_of(tables)
    return tables, days, run(FAMILY, tables, days, days)


@pytest.mark.slow
def test_every_column_matches_numpy(case):
    tables, days, out = case
    bars = tables[BARS]
    assert_price_matches(out, bars, days, sorted(bars["Code"].unique()))


def test_nulls_before_warm_up(case):
    tables, _, out = case
    assert_warmup(out, FAMILY, tables[BARS], skip=price.SESSION_COLUMNS)


def test_halted_row(case):
    """A halted row stays in the universe with its activity columns; price columns are null
    and the next bar's return runs from the last traded close."""
    tables, days, out = case
    bars = tables[BARS]
    halt = bars.filter(pl.col("C").is_null()).sort("Date").row(0, named=True)
    code, day = halt["Code"], halt["Date"]
    row = out.filter((pl.col("code") == code) & (pl.col("date") == day)).row(0, named=True)
    assert row["halted"] == 1.0 and row["days_traded_20"] <= 19.0
    assert all(row[c] is None for c in FAMILY.columns if c not in price.SESSION_COLUMNS)
    s = traded_bars(bars, code)
    after = int(np.searchsorted(s["date"], day))
    got = column_on(out, code, "logret_1d", [s["date"][after]])[0]
    assert got == pytest.approx(math.log(s["close"][after] / s["close"][after - 1]), rel=1e-6)


def test_limit_and_listing_columns(case):
    tables, days, out = case
    bars = tables[BARS]
    hit = bars.filter(pl.col("UL")).sort("Date").row(0, named=True)
    row = out.filter((pl.col("code") == hit["Code"]) & (pl.col("date") == hit["Date"]))
    assert row["limit_up"].item() == 1.0 and row["limit_up_count_20"].item() in (None, 1.0)
    first = bars.group_by("Code").agg(pl.col("Date").min().alias("first"))
    # listed inside the window: the age is known from the first day
    code = first.filter(pl.col("first") > days[0]).sort("Code")["Code"][0]
    assert out.filter(pl.col("code") == code).sort("date")["age_days"][0] == 0.0
    # there from the start: unknown until the window is longer than the cap, then capped
    code = first.filter(pl.col("first") == days[0]).sort("Code")["Code"][0]
    ages = out.filter(pl.col("code") == code).sort("date").select("date", "age_days")
    early = ages.filter(pl.col("date") < days[price.AGE_CAP])["age_days"]
    assert early.null_count() == early.len() > 0
    assert (ages.filter(pl.col("date") >= days[price.AGE_CAP])["age_days"] == price.AGE_CAP).all()


def test_missing_column_is_a_clear_error(case):
    tables, days, _ = case
    broken = {**tables, BARS: tables[BARS].drop("AdjC")}
    with pytest.raises(FeatureFamilyError, match="raw_daily_quotes.*AdjC"):
        run(FAMILY, broken, days, days)


@pytest.mark.realdata
def test_real_data(realdata_dir):
    tables, calendar = real_slice(realdata_dir)
    bars = tables[BARS]
    out = run(FAMILY, tables, calendar, calendar)
    assert_contract(out, FAMILY, tables, calendar)
    assert out["halted"].sum() == bars["C"].null_count() > 0
    # the sparse feed days: only the codes with a row there are emitted
    sparse = bars.group_by("Date").len().filter(pl.col("len") <= 2)["Date"].to_list()
    assert sparse and out.filter(pl.col("date").is_in(sparse)).height == bars.filter(
        pl.col("Date").is_in(sparse)
    ).height
    # real Va is absent: the trading value falls back to C × Vo
    assert out["turnover_yen"].null_count() == out["halted"].sum()
    assert_price_matches(out, bars, calendar, sorted(bars["Code"].unique())[:15])
