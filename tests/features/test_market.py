"""Market family: TOPIX regime, breadth and per-stock exposure against numpy/scipy brute force,
warm-up nulls, the session grid (days missing from the feed) and real data.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.features import market
from atft_pipeline.features.catalog import FeatureInputs
from tests.helpers import (
    BARS,
    TOPIX,
    Panel,
    assert_contract,
    real_tables,
    regression,
    run,
    sandbox_tables,
    sessions_of,
    window,
)

FAMILY = market.FAMILY
ANN = math.sqrt(252)


@pytest.fixture(scope="module")
def case():
    tables = sandbox_tables()
    days = sessions_of(tables)
    out = run(FAMILY, tables, days, days)
    return tables, days, out, Panel(tables[BARS], days)


def topix_close(tables, days) -> np.ndarray:
    by_day = dict(zip(tables[TOPIX]["Date"], tables[TOPIX]["C"], strict=True))
    return np.array([by_day.get(d, np.nan) for d in days], dtype=float)


def per_date(out: pl.DataFrame, column: str, days) -> np.ndarray:
    """A date-level column (same for every stock) as one value per session."""
    frame = out.group_by("date").agg(pl.col(column).first(), pl.col(column).n_unique().alias("_n"))
    assert (frame["_n"] == 1).all(), f"{column} differs across stocks on a date"
    got = dict(zip(frame["date"], frame[column], strict=True))
    return np.array([np.nan if got.get(d) is None else got[d] for d in days], dtype=float)


def assert_series(got: np.ndarray, want: np.ndarray, name: str, rtol=2e-6, atol=1e-6) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(want)), (
        f"{name}: null pattern differs at {np.flatnonzero(np.isnan(got) != np.isnan(want))[:5]}"
    )
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=atol, err_msg=name)


def test_topix_columns_match_numpy(case):
    tables, days, out, _ = case
    close = topix_close(tables, days)
    n = len(days)
    ret = np.full(n, np.nan)
    ret[1:] = close[1:] / close[:-1] - 1

    def std(w):
        return np.std(w, ddof=1)

    def trailing(values, length, fn):
        out_ = np.full(n, np.nan)
        for t in range(length - 1, n):
            out_[t] = fn(values[t - length + 1 : t + 1])
        return out_

    vol20 = trailing(ret, 20, std) * ANN
    vol60 = trailing(ret, 60, std) * ANN
    sma50 = trailing(close, 50, np.mean)
    sma200 = trailing(close, 200, np.mean)
    median = trailing(vol20, 250, np.median)
    want = {
        "mkt_ret_1d": ret,
        "mkt_ret_20d": np.r_[np.full(20, np.nan), close[20:] / close[:-20] - 1],
        "mkt_ret_60d": np.r_[np.full(60, np.nan), close[60:] / close[:-60] - 1],
        "mkt_vol_5d": trailing(ret, 5, std) * ANN,
        "mkt_vol_20d": vol20,
        "mkt_vol_60d": vol60,
        "mkt_vol_ratio_20_60": vol20 / vol60,
        "mkt_z_20d": (close - trailing(close, 20, np.mean)) / trailing(close, 20, std),
        "mkt_z_60d": (close - trailing(close, 60, np.mean)) / trailing(close, 60, std),
        "mkt_drawdown_250d": close / trailing(close, 250, np.max) - 1,
        "mkt_sma50_gap": close / sma50 - 1,
        "mkt_sma200_gap": close / sma200 - 1,
        "mkt_above_sma50": np.where(np.isnan(sma50), np.nan, close > sma50),
        "mkt_above_sma200": np.where(np.isnan(sma200), np.nan, close > sma200),
        "mkt_vol_regime": vol20 / median,
        "mkt_high_vol": np.where(np.isnan(median), np.nan, vol20 > median),
    }
    for column, expected in want.items():
        assert_series(per_date(out, column, days), expected, column)
    # warm-up: nulls, never zeros
    assert np.isnan(per_date(out, "mkt_vol_regime", days)[:269]).all()
    assert not np.isnan(per_date(out, "mkt_vol_regime", days)[269:]).any()


def test_breadth_matches_brute_force(case):
    tables, days, out, panel = case
    r = np.where(panel.listed, panel.ret1, np.nan)
    adv, dec = (r > 0).sum(axis=1), (r < 0).sum(axis=1)
    counted = np.isfinite(r).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ad = np.where(adv + dec > 0, (adv - dec) / (adv + dec), np.nan)
        up = np.where(counted > 0, adv / counted, np.nan)
    ad5 = np.array([np.mean(ad[t - 4 : t + 1]) if t >= 4 else np.nan for t in range(len(days))])
    sma20 = np.where(panel.listed, panel.sma_flag(20, 14), np.nan)

    def per_row(fn, min_count):
        return np.array([
            fn(row[np.isfinite(row)]) if np.isfinite(row).sum() >= min_count else np.nan
            for row in r
        ])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = {
            "mkt_breadth_up": up,
            "mkt_ad_5d": ad5,
            "mkt_breadth_sma20": np.nanmean(sma20, axis=1),
            "mkt_xs_ret_1d": np.nanmean(r, axis=1),
            "mkt_dispersion_1d": per_row(lambda x: np.std(x, ddof=1), 2),
            "mkt_xs_skew_1d": per_row(stats.skew, 3),
        }
    for column, expected in want.items():
        got = per_date(out, column, days)
        ok = np.isfinite(expected)
        np.testing.assert_allclose(got[ok], expected[ok], rtol=2e-6, atol=1e-6, err_msg=column)
        assert np.isnan(got[~ok]).all(), column


def test_exposure_matches_numpy_regressions(case):
    tables, days, out, panel = case
    m = np.full(len(days), np.nan)
    close = topix_close(tables, days)
    m[1:] = close[1:] / close[:-1] - 1
    checked = 0
    for t in (30, 45, 59, 75, 119, 150, 203, 290, 291, 360):
        for code in panel.codes[::3]:
            j = panel.code(code)
            if not panel.listed[t, j]:
                continue
            row = out.filter((pl.col("date") == days[t]) & (pl.col("code") == code)).row(
                0, named=True
            )
            y60, x60 = window(panel.ret1[:, j], t, 60), window(m, t, 60)
            fit60 = regression(y60, x60, 40)
            fit120 = regression(window(panel.ret1[:, j], t, 120), window(m, t, 120), 80)
            down = x60 < 0
            fit_down = regression(np.where(down, y60, np.nan), np.where(down, x60, np.nan), 15)
            pairs = {
                "mkt_beta_60d": fit60 and fit60["beta"],
                "mkt_alpha_60d": fit60 and fit60["alpha"],
                "mkt_idio_vol_60d": fit60 and fit60["resid_std"] * ANN,
                "mkt_corr_60d": fit60 and fit60["corr"],
                "mkt_beta_120d": fit120 and fit120["beta"],
                "mkt_downside_beta_60d": fit_down and fit_down["beta"],
                "mkt_excess_ret_1d": panel.ret1[t, j] - m[t],
                "mkt_resid_ret_1d": fit60 and panel.ret1[t, j] - fit60["beta"] * m[t],
                "mkt_rs_20d": panel.ret(20)[t, j] - (close[t] / close[t - 20] - 1),
            }
            for column, want in pairs.items():
                got = row[column]
                if want is None or not np.isfinite(want):
                    assert got is None, (column, days[t], code, got)
                else:
                    assert got == pytest.approx(want, rel=2e-5, abs=2e-6), (column, days[t], code)
                    checked += 1
    assert checked > 300


def test_missing_feed_day_is_a_gap_not_a_shorter_window(case):
    """A code with no bar row on two sessions: no row emitted there, the return after the gap
    is null (not a 3-session return), and the 60-session beta counts those sessions."""
    tables, days, out, panel = case
    code = panel.codes[1]
    assert out.filter((pl.col("code") == code) & pl.col("date").is_in(days[100:102])).is_empty()
    after_gap = out.filter((pl.col("date") == days[102]) & (pl.col("code") == code))
    assert after_gap["mkt_excess_ret_1d"].item() is None
    y = window(panel.ret1[:, panel.code(code)], 130, 60)
    assert np.isnan(y).sum() == 3


def test_missing_column_is_a_clear_error(case):
    tables, days, _, _ = case
    raw = raw_frames_from_tables(tables)
    raw["raw_topix"] = raw["raw_topix"].drop("C")
    with pytest.raises(ValueError, match="raw_topix.*'C'"):
        FAMILY.compute(FeatureInputs(raw=raw, dates=tuple(days), calendar=tuple(days))).collect()


@pytest.mark.realdata
def test_real_data(realdata_dir):
    tables = real_tables(realdata_dir, n_codes=150, n_days=300)
    days = sessions_of(tables)
    out = run(FAMILY, tables, days, days)
    assert_contract(out, FAMILY, tables, days)
    last = out.filter(pl.col("date") == days[-1])
    # real Japanese large caps: betas around 1, clearly positive correlation with TOPIX
    assert 0.6 < last["mkt_beta_120d"].median() < 1.4
    assert last["mkt_corr_60d"].median() > 0.3
    assert last["mkt_idio_vol_60d"].median() < 0.6
    # and the same numbers as a direct regression for a few codes
    panel = Panel(tables[BARS], days)
    close = topix_close(tables, days)
    m = np.r_[np.nan, close[1:] / close[:-1] - 1]
    t = len(days) - 1
    for code in panel.codes[:10]:
        fit = regression(window(panel.ret1[:, panel.code(code)], t, 120), window(m, t, 120), 80)
        got = last.filter(pl.col("code") == code)["mkt_beta_120d"].item()
        assert (got is None) if fit is None else got == pytest.approx(fit["beta"], rel=2e-5)
