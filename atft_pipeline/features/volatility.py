"""Volatility family: realized and range-based volatility, higher moments and drawdowns.

Computed along each stock's price series (its traded bars, see ``price``) from
split-adjusted prices through log returns and log price ratios, which are scale-free.
Rolling statistics run per series; the drawdowns are built from exact shifts and maxima on
the whole column (see ``price``). Volatilities are annualized with sqrt(252).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.market import ANNUALIZE
from atft_pipeline.features.price import (
    HALT_ROOM,
    SOURCES,
    bar_series,
    emit_series,
    log_ratio,
    per_series,
    safe_log,
)

RV_WINDOWS = (5, 10, 20, 60, 120)
RANGE_WINDOW = 20
MOMENT_WINDOWS = (20, 60)
DRAWDOWN_WINDOWS = (20, 60)
VOL_OF_VOL_WINDOW = 60
PEAK_WINDOW = 60


def annualized(variance: pl.Expr) -> pl.Expr:
    """sqrt(daily variance * 252).

    Every variance here is non-negative in exact arithmetic; a negative value is rolling-sum
    rounding (~ -1e-20) of a zero variance.
    """
    return variance.clip(lower_bound=0.0).sqrt() * ANNUALIZE


def parkinson_variance(high: pl.Expr, low: pl.Expr, n: int) -> pl.Expr:
    return (log_ratio(high, low) ** 2).rolling_mean(n) / (4.0 * math.log(2.0))


def garman_klass_variance(
    open_: pl.Expr, high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int
) -> pl.Expr:
    range_term = 0.5 * log_ratio(high, low) ** 2
    body_term = (2.0 * math.log(2.0) - 1.0) * log_ratio(close, open_) ** 2
    return (range_term - body_term).rolling_mean(n)


def rogers_satchell_term(open_: pl.Expr, high: pl.Expr, low: pl.Expr, close: pl.Expr) -> pl.Expr:
    """One day's Rogers-Satchell variance term (drift-free, >= 0)."""
    upper = log_ratio(high, close) * log_ratio(high, open_)
    lower = log_ratio(low, close) * log_ratio(low, open_)
    return upper + lower


def yang_zhang_variance(
    open_: pl.Expr, high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int
) -> pl.Expr:
    """Overnight variance + k * open-to-close variance + (1 - k) * Rogers-Satchell, with
    Yang and Zhang's k = 0.34 / (1.34 + (n + 1) / (n - 1)); sample variances (ddof 1)."""
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    overnight = log_ratio(open_, close.shift(1)).rolling_var(n)
    open_to_close = log_ratio(close, open_).rolling_var(n)
    rs = rogers_satchell_term(open_, high, low, close).rolling_mean(n)
    return overnight + k * open_to_close + (1.0 - k) * rs


def with_max_drawdowns(frame: pl.LazyFrame, windows: Sequence[int]) -> pl.LazyFrame:
    """Add ``max_drawdown_{n}``: the largest peak-to-trough fall of the close within the last
    n bars, as a return (<= 0).

    Over a stretch of bars, (max log close, min log close, largest drop) combine
    associatively: drop(A then B) = max(drop A, drop B, max A - min B). Stretches of 2^k bars
    are built by doubling and a window is the concatenation of the stretches of its binary
    digits, so a window costs O(log n) column operations instead of O(n) rolling maxima.

    ``frame`` must hold each price series contiguously in date order, as ``bar_series``
    returns it; like every windowed expression, the value is valid from bar n - 1.
    """
    levels = max(windows).bit_length()
    log_close = safe_log(pl.col("close"))
    frame = frame.with_columns(
        log_close.alias("_hi_0"), log_close.alias("_lo_0"), pl.lit(0.0).alias("_drop_0")
    )

    def merge(earlier: tuple[pl.Expr, ...], later: tuple[pl.Expr, ...]) -> tuple[pl.Expr, ...]:
        (hi_a, lo_a, drop_a), (hi_b, lo_b, drop_b) = earlier, later
        return (
            pl.max_horizontal(hi_a, hi_b),
            pl.min_horizontal(lo_a, lo_b),
            pl.max_horizontal(drop_a, drop_b, hi_a - lo_b),
        )

    def stretch(level: int, offset: int) -> tuple[pl.Expr, ...]:
        """The 2^level bars ending ``offset`` bars before the current one."""
        return tuple(pl.col(f"_{s}_{level}").shift(offset) for s in ("hi", "lo", "drop"))

    for level in range(1, levels):
        half = 1 << (level - 1)
        merged = merge(stretch(level - 1, half), stretch(level - 1, 0))
        frame = frame.with_columns(
            e.alias(f"_{s}_{level}") for e, s in zip(merged, ("hi", "lo", "drop"), strict=True)
        )

    drawdowns = []
    for n in windows:
        bits = [b for b in range(n.bit_length()) if n >> b & 1]
        acc, offset = stretch(bits[0], 0), 1 << bits[0]
        for bit in bits[1:]:
            acc = merge(stretch(bit, offset), acc)
            offset += 1 << bit
        drawdowns.append(((-acc[2]).exp() - 1.0).alias(f"max_drawdown_{n}"))
    helpers = [f"_{s}_{level}" for level in range(levels) for s in ("hi", "lo", "drop")]
    return frame.with_columns(drawdowns).drop(helpers)


_SPECS: tuple[FeatureSpec, ...] = (
    *(
        FeatureSpec(f"rv_{n}", f"realized vol of daily log returns over {n} bars, annualized", n)
        for n in RV_WINDOWS
    ),
    FeatureSpec("parkinson_20", "Parkinson high-low volatility over 20 bars, annualized", 19),
    FeatureSpec("garman_klass_20", "Garman-Klass OHLC volatility over 20 bars, annualized", 19),
    FeatureSpec("rogers_satchell_20", "Rogers-Satchell volatility over 20 bars, annualized", 19),
    FeatureSpec("yang_zhang_20", "Yang-Zhang volatility over 20 bars, annualized", 20),
    FeatureSpec("vol_of_vol_60", "sample std over 60 bars of rv_5 (volatility of volatility)", 64),
    *(
        FeatureSpec(f"downside_vol_{n}", f"downside semi-deviation over {n} bars, annualized", n)
        for n in MOMENT_WINDOWS
    ),
    *(
        FeatureSpec(f"skew_{n}", f"sample skewness (bias-corrected), log returns, {n} bars", n)
        for n in MOMENT_WINDOWS
    ),
    *(
        FeatureSpec(f"kurt_{n}", f"sample excess kurtosis (bias-corrected), {n} bars", n)
        for n in MOMENT_WINDOWS
    ),
    *(
        FeatureSpec(f"max_drawdown_{n}", f"largest peak-to-trough fall within {n} bars", n - 1)
        for n in DRAWDOWN_WINDOWS
    ),
    FeatureSpec("drawdown_60", "close / max close over 60 bars - 1", PEAK_WINDOW - 1),
    FeatureSpec("vol_ratio_5_60", "rv_5 / rv_60", 60),
)


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    open_, high, low, close = (pl.col(c) for c in ("open", "high", "low", "close"))
    ret = log_ratio(close, close.shift(1))
    n = RANGE_WINDOW

    def vol(variance: pl.Expr) -> pl.Expr:
        return annualized(per_series(variance))

    frame = bar_series(inputs, FAMILY.name).with_columns(
        *(vol(ret.rolling_var(w)).alias(f"rv_{w}") for w in RV_WINDOWS),
        vol(parkinson_variance(high, low, n)).alias(f"parkinson_{n}"),
        vol(garman_klass_variance(open_, high, low, close, n)).alias(f"garman_klass_{n}"),
        vol(rogers_satchell_term(open_, high, low, close).rolling_mean(n)).alias(
            f"rogers_satchell_{n}"
        ),
        vol(yang_zhang_variance(open_, high, low, close, n)).alias(f"yang_zhang_{n}"),
        *(
            vol((ret.clip(upper_bound=0.0) ** 2).rolling_mean(w)).alias(f"downside_vol_{w}")
            for w in MOMENT_WINDOWS
        ),
        *(per_series(ret.rolling_skew(w, bias=False)).alias(f"skew_{w}") for w in MOMENT_WINDOWS),
        *(
            per_series(ret.rolling_kurtosis(w, fisher=True, bias=False)).alias(f"kurt_{w}")
            for w in MOMENT_WINDOWS
        ),
        (close / close.rolling_max(PEAK_WINDOW) - 1.0).alias(f"drawdown_{PEAK_WINDOW}"),
    )
    frame = frame.with_columns(
        per_series(pl.col("rv_5").rolling_std(VOL_OF_VOL_WINDOW)).alias(
            f"vol_of_vol_{VOL_OF_VOL_WINDOW}"
        ),
        common.safe_div(pl.col("rv_5"), pl.col("rv_60")).alias("vol_ratio_5_60"),
    )
    frame = with_max_drawdowns(frame, DRAWDOWN_WINDOWS)
    return emit_series(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="volatility",
    sources=SOURCES,
    lookback=max(RV_WINDOWS) + HALT_ROOM,  # 120-bar realized vol over <= 140 sessions
    features=_SPECS,
    compute=compute,
    description=(
        "Realized and range-based (Parkinson, Garman-Klass, Rogers-Satchell, Yang-Zhang) "
        "volatility, vol of vol, downside vol, skewness, kurtosis and drawdowns."
    ),
)
