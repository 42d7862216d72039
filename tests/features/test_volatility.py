"""Volatility family against numpy/scipy brute force (every column), the drawdown algorithm on
arbitrary windows, warm-up nulls and real data.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.features import volatility
from tests.helpers import (
    BARS,
    assert_contract,
    run,
    sandbox_tables,
    sessions_of,
    assert_matches,
    assert_warmup,
    column_on,
    lag,
    real_slice,
    traded_bars,
    trailing,
)

FAMILY = volatility.FAMILY
ANN = math.sqrt(252)


def max_drawdown_pairs(close: np.ndarray) -> float:
    """Largest fall within ``close``, by brute force over every (peak, trough) pair."""
    return min(close[j] / close[i] - 1.0 for j in range(len(close)) for i in range(j + 1))


def max_drawdown(blocks: np.ndarray, axis: int) -> np.ndarray:
    """Largest fall from the running peak within each window."""
    return (blocks / np.maximum.accumulate(blocks, axis=axis)).min(axis=axis) - 1.0


def reference(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    o, h, l, c = (s[k] for k in ("open", "high", "low", "close"))
    r = np.log(c / lag(c, 1))

    sample_std, sample_var = partial(np.std, ddof=1), partial(np.var, ddof=1)

    def vol(daily_variance):
        return np.sqrt(daily_variance * 252)

    rv = {n: trailing(r, n, sample_std) * ANN for n in volatility.RV_WINDOWS}
    rs_term = np.log(h / c) * np.log(h / o) + np.log(l / c) * np.log(l / o)
    k = 0.34 / (1.34 + 21 / 19)
    yang_zhang = (
        trailing(np.log(o / lag(c, 1)), 20, sample_var)
        + k * trailing(np.log(c / o), 20, sample_var)
        + (1 - k) * trailing(rs_term, 20, np.mean)
    )
    gk_term = 0.5 * np.log(h / l) ** 2 - (2 * math.log(2) - 1) * np.log(c / o) ** 2
    ref = {f"rv_{n}": rv[n] for n in volatility.RV_WINDOWS}
    ref |= {
        "parkinson_20": vol(trailing(np.log(h / l) ** 2, 20, np.mean) / (4 * math.log(2))),
        "garman_klass_20": vol(trailing(gk_term, 20, np.mean)),
        "rogers_satchell_20": vol(trailing(rs_term, 20, np.mean)),
        "yang_zhang_20": vol(yang_zhang),
        "vol_of_vol_60": trailing(rv[5], 60, sample_std),
        "drawdown_60": c / trailing(c, 60, np.max) - 1,
        "vol_ratio_5_60": rv[5] / rv[60],
    }
    for n in volatility.MOMENT_WINDOWS:
        ref[f"downside_vol_{n}"] = vol(trailing(np.minimum(r, 0.0) ** 2, n, np.mean))
        ref[f"skew_{n}"] = trailing(r, n, partial(stats.skew, bias=False))
        ref[f"kurt_{n}"] = trailing(r, n, partial(stats.kurtosis, bias=False))
    for n in volatility.DRAWDOWN_WINDOWS:
        ref[f"max_drawdown_{n}"] = trailing(c, n, max_drawdown)
    return ref


def assert_volatility_matches(out: pl.DataFrame, bars: pl.DataFrame, codes) -> None:
    for code in codes:
        s = traded_bars(bars, code)
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = reference(s)
        assert set(ref) == set(FAMILY.columns)
        for name, want in ref.items():
            want = np.where(np.isfinite(want), want, np.nan)
            assert_matches(column_on(out, code, name, s["date"]), want, f"{code} {name}")


@pytest.fixture(scope="module")
def case():
    tables = sandbox_tables()
    days = sessions_of(tables)
    return tables, days, run(FAMILY, tables, days, days)


def test_every_column_matches_numpy_and_scipy(case):
    tables, _, out = case
    bars = tables[BARS]
    assert_volatility_matches(out, bars, sorted(bars["Code"].unique()))


@pytest.mark.parametrize("windows", [(1, 2, 3), (5, 7, 20), (31, 32, 33), (45, 60, 63)])
def test_max_drawdown_on_any_window(windows):
    """The doubling algorithm equals brute force on every window length, per series."""
    rng = np.random.default_rng(sum(windows))
    lengths = [90, 3, 70]
    close = np.exp(np.cumsum(rng.normal(0, 0.03, sum(lengths))))
    frame = pl.LazyFrame(
        {"series": np.repeat(np.arange(3), lengths), "close": close}
    ).with_columns(bar=pl.int_range(pl.len()).over("series"))
    got = volatility.with_max_drawdowns(frame, windows).collect()
    for n in windows:
        for series, start in zip(range(3), np.cumsum([0, *lengths[:-1]]), strict=True):
            c = close[start : start + lengths[series]]
            g = got.filter(pl.col("series") == series)[f"max_drawdown_{n}"].to_numpy()
            want = [max_drawdown_pairs(c[i - n + 1 : i + 1]) for i in range(n - 1, len(c))]
            np.testing.assert_allclose(g[n - 1 :], want, rtol=1e-12, atol=1e-15)


def test_nulls_before_warm_up(case):
    tables, _, out = case
    assert_warmup(out, FAMILY, tables[BARS])


@pytest.mark.realdata
def test_real_data(realdata_dir):
    tables, calendar = real_slice(realdata_dir)
    bars = tables[BARS]
    out = run(FAMILY, tables, calendar, calendar)
    assert_contract(out, FAMILY, tables, calendar)
    assert_volatility_matches(out, bars, sorted(bars["Code"].unique())[:12])
    last = out.filter(pl.col("date") == calendar[-1])
    # liquid Japanese stocks: annualized vol mostly between 10% and 80%
    assert 0.1 < last["rv_60"].median() < 0.8
    assert (last["max_drawdown_60"] <= 0).all() and (last["rv_20"] >= 0).all()
