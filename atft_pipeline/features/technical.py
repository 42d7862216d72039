"""Technical family: moving-average distances, oscillators, channels and trend strength.

The indicator functions below are plain Polars expressions over *one* price series (a
stock's traded bars in date order); the family evaluates the accumulating ones per series
and the exact windows (shifts, min/max) on the whole column (see ``price``). They follow the
conventions of the ``ta`` package (0.11) exactly, so every value can be checked against it
after warm-up:

- ``ta`` seeds exponential averages with the first value (``ewm(adjust=False)``) and its
  RSI treats the first bar's missing change as 0, which Polars' ``ewm_mean(adjust=False)``
  reproduces; Wilder averages of ATR/ADX are seeded with the simple mean of their first n
  values (``wilder_mean``).
- Where ``ta`` fills its warm-up with 0 (ATR, ADX, +DI/-DI) or with partial windows
  (Keltner), the values here are null until the window is complete.

Indicators in price units (ATR, MACD, moving averages) are emitted scale-free (divided by
the close, or as distances close / average - 1), because adjusted price levels change when a
later split is applied; Bollinger width is ta's ``wband`` / 100. Williams %R (14) is exactly
``stoch_k_14 - 100``, so it has no column of its own.
"""

from __future__ import annotations

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.price import HALT_ROOM, SOURCES, bar_series, emit_series, per_series

SMA_WINDOWS = (5, 10, 20, 50, 100, 200)
EMA_SPANS = (5, 10, 12, 20, 26, 50)
SMA_PAIRS = ((5, 20), (20, 50), (50, 200))
YEAR = 250  # trading days in the 52-week high/low


def _position() -> pl.Expr:
    """0, 1, 2, ... along the series."""
    return pl.int_range(pl.len())


def sma(x: pl.Expr, n: int) -> pl.Expr:
    return x.rolling_mean(n)


def ema(x: pl.Expr, n: int) -> pl.Expr:
    """EMA with span n, seeded with the first value, null for the first n - 1 values."""
    return x.ewm_mean(span=n, adjust=False, min_samples=n)


def wilder_mean(x: pl.Expr, n: int, seed_at: int) -> pl.Expr:
    """Wilder's average (alpha = 1/n) seeded at position ``seed_at`` with the mean of the n
    values ending there; null before the seed."""
    seeded = (
        pl.when(_position() == seed_at)
        .then(x.rolling_mean(n))
        .when(_position() > seed_at)
        .then(x)
    )
    return seeded.ewm_mean(alpha=1.0 / n, adjust=False)


def true_range(high: pl.Expr, low: pl.Expr, close: pl.Expr) -> pl.Expr:
    """max(high, prev close) - min(low, prev close); high - low on the first bar."""
    prev = close.shift(1)
    return pl.max_horizontal(high, prev) - pl.min_horizontal(low, prev)


def rsi(close: pl.Expr, n: int) -> pl.Expr:
    """Wilder RSI: averages of gains and losses seeded with the first bar's change taken as
    0 (ta's convention); 100 when there are no losses."""
    change = close.diff()
    gain = pl.when(change > 0).then(change).otherwise(0.0)
    loss = pl.when(change < 0).then(-change).otherwise(0.0)
    avg_gain = gain.ewm_mean(alpha=1.0 / n, adjust=False, min_samples=n)
    avg_loss = loss.ewm_mean(alpha=1.0 / n, adjust=False, min_samples=n)
    return pl.when(avg_loss == 0).then(100.0).otherwise(100.0 - 100.0 / (1.0 + avg_gain / avg_loss))


def atr(high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int) -> pl.Expr:
    return wilder_mean(true_range(high, low, close), n, seed_at=n - 1)


def directional_movement(
    high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int
) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Wilder averages of (true range, +DM, -DM), seeded at position n with bars 1..n (the
    first bar has no move)."""
    moved = _position() >= 1
    up, down = high.diff(), -low.diff()
    plus_dm = pl.when((up > down) & (up > 0)).then(up).otherwise(0.0)
    minus_dm = pl.when((down > up) & (down > 0)).then(down).otherwise(0.0)
    return tuple(
        wilder_mean(pl.when(moved).then(x), n, seed_at=n)
        for x in (true_range(high, low, close), plus_dm, minus_dm)
    )


def directional_index(avg_dm: pl.Expr, avg_tr: pl.Expr) -> pl.Expr:
    """+DI or -DI: 100 * average move / average true range; 0 for a flat series, as in ta."""
    return pl.when(avg_tr > 0).then(100.0 * avg_dm / avg_tr).when(avg_tr == 0).then(0.0)


def adx(plus_di: pl.Expr, minus_di: pl.Expr, n: int) -> pl.Expr:
    """Wilder average of DX, seeded with the mean of the first n DX values (position 2n - 1)."""
    total = plus_di + minus_di
    spread = 100.0 * (plus_di - minus_di).abs()
    dx = pl.when(total > 0).then(spread / total).when(total == 0).then(0.0)
    return wilder_mean(dx, n, seed_at=2 * n - 1)


def stochastic_k(high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int) -> pl.Expr:
    lowest, highest = low.rolling_min(n), high.rolling_max(n)
    return 100.0 * common.safe_div(close - lowest, highest - lowest)


def typical_price(high: pl.Expr, low: pl.Expr, close: pl.Expr) -> pl.Expr:
    return (high + low + close) / 3.0


def cci(typical: pl.Expr, typical_mean: pl.Expr, n: int, constant: float = 0.015) -> pl.Expr:
    """(typical - its n-bar mean) / (constant * mean absolute deviation around that mean).

    The deviation is around each window's own mean, so it is a sum over the n lags; pass the
    typical price and its n-bar mean as columns so the lags share them.
    """
    mad = pl.sum_horizontal((typical.shift(k) - typical_mean).abs() for k in range(n)) / n
    return common.safe_div(typical - typical_mean, constant * mad)


def mfi(typical: pl.Expr, volume: pl.Expr, n: int) -> pl.Expr:
    """Money flow index: 100 * positive flow / total flow over n bars (first bar's flow is 0)."""
    prev = typical.shift(1)
    direction = pl.when(typical > prev).then(1.0).when(typical < prev).then(-1.0).otherwise(0.0)
    flow = typical * volume * direction
    positive = pl.when(flow >= 0).then(flow).otherwise(0.0).rolling_sum(n)
    negative = pl.when(flow < 0).then(-flow).otherwise(0.0).rolling_sum(n)
    return 100.0 * common.safe_div(positive, positive + negative)


def obv(close: pl.Expr, volume: pl.Expr) -> pl.Expr:
    """On-balance volume: cumulative volume signed by the close's direction (ta's convention:
    an unchanged close and the first bar count as up; a missing volume adds nothing)."""
    return pl.when(close < close.shift(1)).then(-volume).otherwise(volume).fill_null(0.0).cum_sum()


def obv_slope(obv_: pl.Expr, volume: pl.Expr, n: int) -> pl.Expr:
    """Least-squares slope of OBV over the last n bars per bar, over the mean volume.

    The centred weights sum to zero, so the slope does not depend on where OBV started.
    """
    centred = [k - (n - 1) / 2.0 for k in range(n)]
    slope = obv_.rolling_sum(n, weights=centred) / sum(c * c for c in centred)
    return common.safe_div(slope, volume.rolling_mean(n))


def channel_position(value: pl.Expr, lower: pl.Expr, upper: pl.Expr) -> pl.Expr:
    return common.safe_div(value - lower, upper - lower)


def keltner_position(high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int) -> pl.Expr:
    """Close within ta's original Keltner channel: n-bar means of (4H - 2L + C)/3 and
    (-2H + 4L + C)/3."""
    upper = ((4.0 * high - 2.0 * low + close) / 3.0).rolling_mean(n)
    lower = ((-2.0 * high + 4.0 * low + close) / 3.0).rolling_mean(n)
    return channel_position(close, lower, upper)


def chaikin_money_flow(
    high: pl.Expr, low: pl.Expr, close: pl.Expr, volume: pl.Expr, n: int
) -> pl.Expr:
    location = (
        pl.when(high != low).then(((close - low) - (high - close)) / (high - low)).otherwise(0.0)
    )
    return common.safe_div((location * volume).rolling_sum(n), volume.rolling_sum(n))


def ultimate_oscillator(
    high: pl.Expr, low: pl.Expr, close: pl.Expr, windows: tuple[int, int, int] = (7, 14, 28)
) -> pl.Expr:
    """Weighted (4, 2, 1) average of buying pressure / true range over three windows, x100."""
    prev = close.shift(1)
    buying = pl.when(prev.is_not_null()).then(close - pl.min_horizontal(low, prev))
    tr = true_range(high, low, close)
    ratios = [common.safe_div(buying.rolling_sum(w), tr.rolling_sum(w)) for w in windows]
    return 100.0 * (4.0 * ratios[0] + 2.0 * ratios[1] + ratios[2]) / 7.0


def roc(close: pl.Expr, n: int) -> pl.Expr:
    """Rate of change in percent."""
    return 100.0 * (close / close.shift(n) - 1.0)


_SPECS: tuple[FeatureSpec, ...] = (
    *(FeatureSpec(f"dist_sma_{n}", f"close / SMA{n} - 1", n - 1) for n in SMA_WINDOWS),
    *(FeatureSpec(f"dist_ema_{n}", f"close / EMA{n} - 1 (span {n})", n - 1) for n in EMA_SPANS),
    *(
        FeatureSpec(f"sma_spread_{a}_{b}", f"SMA{a} / SMA{b} - 1", b - 1)
        for a, b in SMA_PAIRS
    ),
    *(
        FeatureSpec(f"sma_cross_{a}_{b}", f"sign(SMA{a} - SMA{b}): +1 above, -1 below", b - 1)
        for a, b in SMA_PAIRS
    ),
    FeatureSpec("sma_20_slope_5", "SMA20 / SMA20 five bars earlier - 1", 24),
    FeatureSpec("rsi_2", "RSI over 2 bars (Wilder)", 1),
    FeatureSpec("rsi_14", "RSI over 14 bars (Wilder)", 13),
    FeatureSpec("macd", "MACD line (EMA12 - EMA26) / close", 25),
    FeatureSpec("macd_signal", "MACD signal line (EMA9 of the MACD line) / close", 33),
    FeatureSpec("macd_hist", "MACD histogram (line - signal) / close", 33),
    FeatureSpec("bb_pctb_20", "Bollinger %b: (close - lower) / (upper - lower), 20 bars, 2 sd", 19),
    FeatureSpec("bb_width_20", "Bollinger width (upper - lower) / middle (ta's wband / 100)", 19),
    FeatureSpec("natr_14", "ATR14 / close x 100 (normalized average true range)", 13),
    FeatureSpec("adx_14", "average directional index over 14 bars", 27),
    FeatureSpec("plus_di_14", "+DI over 14 bars", 14),
    FeatureSpec("minus_di_14", "-DI over 14 bars", 14),
    FeatureSpec("stoch_k_14", "stochastic %K over 14 bars (Williams %R 14 = %K - 100)", 13),
    FeatureSpec("stoch_d_14_3", "stochastic %D: 3-bar mean of %K 14", 15),
    FeatureSpec("cci_20", "commodity channel index over 20 bars", 19),
    FeatureSpec("mfi_14", "money flow index over 14 bars", 13),
    FeatureSpec("obv_slope_20", "20-bar regression slope of OBV per bar / mean volume", 19),
    FeatureSpec("cmf_20", "Chaikin money flow over 20 bars", 19),
    FeatureSpec("uo", "ultimate oscillator (7, 14, 28 bars)", 28),
    FeatureSpec("donchian_pos_20", "close within the 20-bar high-low (Donchian) channel", 19),
    FeatureSpec("keltner_pos_20", "close within the 20-bar Keltner channel (ta original)", 19),
    FeatureSpec("dist_high_250", f"close / {YEAR}-bar high - 1 (52-week high)", YEAR - 1),
    FeatureSpec("dist_low_250", f"close / {YEAR}-bar low - 1 (52-week low)", YEAR - 1),
    FeatureSpec("roc_10", "rate of change over 10 bars, percent", 10),
    FeatureSpec("roc_20", "rate of change over 20 bars, percent", 20),
)


def _per_series_columns() -> list[pl.Expr]:
    """Accumulating indicators, and the averages several features share."""
    close, high, low, volume = (pl.col(c) for c in ("close", "high", "low", "volume"))
    typical = pl.col("_typical")
    avg_tr, avg_plus, avg_minus = directional_movement(high, low, close, 14)
    return [
        *(per_series(sma(close, n)).alias(f"_sma_{n}") for n in SMA_WINDOWS),
        *(per_series(ema(close, n)).alias(f"_ema_{n}") for n in EMA_SPANS),
        per_series(close.rolling_std(20, ddof=0)).alias("_std_20"),
        per_series(typical.rolling_mean(20)).alias("_typical_sma_20"),
        per_series(atr(high, low, close, 14)).alias("_atr_14"),
        per_series(avg_tr).alias("_dm_tr"),
        per_series(avg_plus).alias("_dm_plus"),
        per_series(avg_minus).alias("_dm_minus"),
        per_series(rsi(close, 2)).alias("rsi_2"),
        per_series(rsi(close, 14)).alias("rsi_14"),
        per_series(mfi(typical, volume, 14)).alias("mfi_14"),
        per_series(stochastic_k(high, low, close, 14).rolling_mean(3)).alias("stoch_d_14_3"),
        per_series(obv_slope(obv(close, volume), volume, 20)).alias("obv_slope_20"),
        per_series(chaikin_money_flow(high, low, close, volume, 20)).alias("cmf_20"),
        per_series(ultimate_oscillator(high, low, close)).alias("uo"),
        per_series(keltner_position(high, low, close, 20)).alias("keltner_pos_20"),
    ]


def _features() -> list[pl.Expr]:
    """Exact windows (shifts, min/max) and arithmetic over the columns above."""
    close, high, low = (pl.col(c) for c in ("close", "high", "low"))
    sma_of = {n: pl.col(f"_sma_{n}") for n in SMA_WINDOWS}
    macd_line = pl.col("_ema_12") - pl.col("_ema_26")
    macd_signal = per_series(ema(macd_line, 9))
    std_20 = pl.col("_std_20")
    low_20, high_20 = low.rolling_min(20), high.rolling_max(20)
    plus_di = directional_index(pl.col("_dm_plus"), pl.col("_dm_tr"))
    minus_di = directional_index(pl.col("_dm_minus"), pl.col("_dm_tr"))
    return [
        *((common.safe_div(close, sma_of[n]) - 1.0).alias(f"dist_sma_{n}") for n in SMA_WINDOWS),
        *(
            (common.safe_div(close, pl.col(f"_ema_{n}")) - 1.0).alias(f"dist_ema_{n}")
            for n in EMA_SPANS
        ),
        *(
            (common.safe_div(sma_of[a], sma_of[b]) - 1.0).alias(f"sma_spread_{a}_{b}")
            for a, b in SMA_PAIRS
        ),
        *((sma_of[a] - sma_of[b]).sign().alias(f"sma_cross_{a}_{b}") for a, b in SMA_PAIRS),
        (common.safe_div(sma_of[20], sma_of[20].shift(5)) - 1.0).alias("sma_20_slope_5"),
        common.safe_div(macd_line, close).alias("macd"),
        common.safe_div(macd_signal, close).alias("macd_signal"),
        common.safe_div(macd_line - macd_signal, close).alias("macd_hist"),
        common.safe_div(close - (sma_of[20] - 2.0 * std_20), 4.0 * std_20).alias("bb_pctb_20"),
        common.safe_div(4.0 * std_20, sma_of[20]).alias("bb_width_20"),
        (100.0 * common.safe_div(pl.col("_atr_14"), close)).alias("natr_14"),
        plus_di.alias("plus_di_14"),
        minus_di.alias("minus_di_14"),
        per_series(adx(plus_di, minus_di, 14)).alias("adx_14"),
        stochastic_k(high, low, close, 14).alias("stoch_k_14"),
        cci(pl.col("_typical"), pl.col("_typical_sma_20"), 20).alias("cci_20"),
        channel_position(close, low_20, high_20).alias("donchian_pos_20"),
        (close / high.rolling_max(YEAR) - 1.0).alias("dist_high_250"),
        (close / low.rolling_min(YEAR) - 1.0).alias("dist_low_250"),
        roc(close, 10).alias("roc_10"),
        roc(close, 20).alias("roc_20"),
    ]


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    typical = typical_price(pl.col("high"), pl.col("low"), pl.col("close")).alias("_typical")
    frame = (
        bar_series(inputs, FAMILY.name)
        .with_columns(typical)
        .with_columns(_per_series_columns())
        .with_columns(_features())
    )
    return emit_series(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="technical",
    sources=SOURCES,
    lookback=YEAR + HALT_ROOM,  # 52-week high/low
    recursive=True,  # EMAs, Wilder averages and OBV start from the window's first bar
    features=_SPECS,
    compute=compute,
    description=(
        "Moving-average distances and crosses, RSI, MACD, Bollinger, ATR, ADX, stochastic, "
        "CCI, MFI, OBV slope, Chaikin money flow, ultimate oscillator and channel positions "
        "(conventions of the ta package)."
    ),
)
