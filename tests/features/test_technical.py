"""Technical family against the ``ta`` package (0.11) after warm-up, numpy for the columns ta
lacks, warm-up nulls and real data.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
import ta

from atft_pipeline.features import technical
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

FAMILY = technical.FAMILY
LOOKBACK = {spec.name: spec.lookback for spec in FAMILY.features}


def ta_reference(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every column ta can produce, in our scale (the module docstring's normalizations)."""
    high, low, close, volume = (pd.Series(s[k]) for k in ("high", "low", "close", "volume"))
    sma = {n: ta.trend.SMAIndicator(close, n).sma_indicator() for n in technical.SMA_WINDOWS}
    ema = {n: ta.trend.EMAIndicator(close, n).ema_indicator() for n in technical.EMA_SPANS}
    macd = ta.trend.MACD(close)
    bands = ta.volatility.BollingerBands(close)
    directional = ta.trend.ADXIndicator(high, low, close)
    money_flow = ta.volume.ChaikinMoneyFlowIndicator(high, low, close, volume)
    stoch = ta.momentum.StochasticOscillator(high, low, close)
    ref = {f"dist_sma_{n}": close / sma[n] - 1 for n in technical.SMA_WINDOWS}
    ref |= {f"dist_ema_{n}": close / ema[n] - 1 for n in technical.EMA_SPANS}
    for a, b in technical.SMA_PAIRS:
        ref[f"sma_spread_{a}_{b}"] = sma[a] / sma[b] - 1
        ref[f"sma_cross_{a}_{b}"] = np.sign(sma[a] - sma[b])
    ref |= {
        "sma_20_slope_5": sma[20] / sma[20].shift(5) - 1,
        "rsi_2": ta.momentum.RSIIndicator(close, 2).rsi(),
        "rsi_14": ta.momentum.RSIIndicator(close, 14).rsi(),
        "macd": macd.macd() / close,
        "macd_signal": macd.macd_signal() / close,
        "macd_hist": macd.macd_diff() / close,
        "bb_pctb_20": bands.bollinger_pband(),
        "bb_width_20": bands.bollinger_wband() / 100,
        "natr_14": ta.volatility.AverageTrueRange(high, low, close).average_true_range()
        / close
        * 100,
        "adx_14": directional.adx(),
        "plus_di_14": directional.adx_pos(),
        "minus_di_14": directional.adx_neg(),
        "stoch_k_14": stoch.stoch(),
        "stoch_d_14_3": stoch.stoch_signal(),
        "cci_20": ta.trend.CCIIndicator(high, low, close).cci(),
        "mfi_14": ta.volume.MFIIndicator(high, low, close, volume).money_flow_index(),
        "cmf_20": money_flow.chaikin_money_flow(),
        "uo": ta.momentum.UltimateOscillator(high, low, close).ultimate_oscillator(),
        "donchian_pos_20": ta.volatility.DonchianChannel(high, low, close).donchian_channel_pband(),
        "keltner_pos_20": ta.volatility.KeltnerChannel(high, low, close).keltner_channel_pband(),
        "roc_10": ta.momentum.ROCIndicator(close, 10).roc(),
        "roc_20": ta.momentum.ROCIndicator(close, 20).roc(),
    }
    return {name: np.asarray(values, dtype=float) for name, values in ref.items()}


def numpy_reference(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns ta has no indicator for."""
    high, low, close, volume = (s[k] for k in ("high", "low", "close", "volume"))
    obv = ta.volume.OnBalanceVolumeIndicator(pd.Series(close), pd.Series(volume))
    obv = obv.on_balance_volume().to_numpy()
    steps = np.arange(20.0)
    slope = trailing(obv, 20, lambda y, axis: np.polyfit(steps, y.T, 1)[0])
    return {
        "obv_slope_20": slope / trailing(volume, 20, np.mean),
        "dist_high_250": close / trailing(high, 250, np.max) - 1,
        "dist_low_250": close / trailing(low, 250, np.min) - 1,
    }


def first_compared_bar(name: str) -> int:
    # ta's +DI/-DI leave their first value (bar 14) at 0; it is checked separately.
    return LOOKBACK[name] + (1 if name in ("plus_di_14", "minus_di_14") else 0)


def assert_technical_matches(out: pl.DataFrame, bars: pl.DataFrame, codes) -> None:
    for code in codes:
        s = traded_bars(bars, code)
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = ta_reference(s) | numpy_reference(s)
        assert set(ref) == set(FAMILY.columns)
        for name, want in ref.items():
            got = column_on(out, code, name, s["date"])
            start = first_compared_bar(name)
            want = np.where(np.isfinite(want), want, np.nan)
            assert_matches(got[start:], want[start:], f"{code} {name}", rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def case():
    tables = sandbox_tables()
    days = sessions_of(tables)
    return tables, days, run(FAMILY, tables, days, days)


@pytest.mark.slow
def test_matches_ta_after_warm_up(case):
    tables, _, out = case
    bars = tables[BARS]
    assert_technical_matches(out, bars, sorted(bars["Code"].unique()))


def test_ta_relatives(case):
    """Williams %R is %K - 100 (not a column of its own); ATR, SMA and EMA come back from
    the scale-free columns; +DI/-DI on their first bar are the seed sums' ratio."""
    tables, _, out = case
    bars = tables[BARS]
    for code in sorted(bars["Code"].unique())[:8]:
        s = traded_bars(bars, code)
        high, low, close = (pd.Series(s[k]) for k in ("high", "low", "close"))
        col = {name: column_on(out, code, name, s["date"]) for name in FAMILY.columns}
        williams = ta.momentum.WilliamsRIndicator(high, low, close).williams_r().to_numpy()
        assert_matches(col["stoch_k_14"][13:] - 100, williams[13:], "williams", atol=1e-5)
        atr = ta.volatility.AverageTrueRange(high, low, close).average_true_range().to_numpy()
        assert_matches(col["natr_14"][13:] * s["close"][13:] / 100, atr[13:], "atr")
        for n in technical.SMA_WINDOWS:
            sma = ta.trend.SMAIndicator(close, n).sma_indicator().to_numpy()
            assert_matches(s["close"][n:] / (1 + col[f"dist_sma_{n}"][n:]), sma[n:], f"sma {n}")
        for n in technical.EMA_SPANS:
            ema = ta.trend.EMAIndicator(close, n).ema_indicator().to_numpy()
            assert_matches(s["close"][n:] / (1 + col[f"dist_ema_{n}"][n:]), ema[n:], f"ema {n}")
        tr = np.maximum(s["high"], lag(s["close"], 1)) - np.minimum(s["low"], lag(s["close"], 1))
        up, down = np.diff(s["high"]), -np.diff(s["low"])
        plus = np.where((up > down) & (up > 0), up, 0.0)[:14].sum()
        minus = np.where((down > up) & (down > 0), down, 0.0)[:14].sum()
        assert col["plus_di_14"][14] == pytest.approx(100 * plus / tr[1:15].sum(), rel=1e-6)
        assert col["minus_di_14"][14] == pytest.approx(100 * minus / tr[1:15].sum(), rel=1e-6)


def test_obv_expression_matches_ta(case):
    tables, _, _ = case
    s = traded_bars(tables[BARS], sorted(tables[BARS]["Code"].unique())[3])
    frame = pl.DataFrame({"close": s["close"], "volume": s["volume"]})
    got = frame.select(technical.obv(pl.col("close"), pl.col("volume")).alias("obv"))["obv"]
    want = ta.volume.OnBalanceVolumeIndicator(pd.Series(s["close"]), pd.Series(s["volume"]))
    np.testing.assert_allclose(got, want.on_balance_volume().to_numpy(), rtol=1e-12)


def test_nulls_before_warm_up(case):
    tables, _, out = case
    assert_warmup(out, FAMILY, tables[BARS])


@pytest.mark.realdata
def test_real_data(realdata_dir):
    tables, calendar = real_slice(realdata_dir)
    bars = tables[BARS]
    out = run(FAMILY, tables, calendar, calendar)
    assert_contract(out, FAMILY, tables, calendar)
    assert_technical_matches(out, bars, sorted(bars["Code"].unique())[:12])
    last = out.filter(pl.col("date") == calendar[-1])
    assert last["rsi_14"].is_between(0, 100).all() and last["adx_14"].is_between(0, 100).all()
