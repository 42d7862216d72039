"""Price family: returns, gaps, ranges, liquidity, limit moves, listing age and trading activity.

This module also holds the bar-series machinery the technical and volatility families share.

A stock's *price series* is its traded bars in date order: a halted row (a bar row without
prices) is skipped instead of breaking every window that spans it, so the return on the
first bar after a halt runs from the last traded close. ``bar_series`` sorts the bars so each
series is one contiguous block and numbers its rows (``bar``). Expressions then run along a
series in one of two ways:

- anything that accumulates (rolling sums, means, variances and moments, exponential
  averages, cumulative sums) is evaluated on each series separately with ``per_series``:
  over the whole column, a rolling sum would carry rounding residue from one stock into the
  next, and a recursion would carry its state;
- shifts, rolling min/max and elementwise arithmetic are exact and run on the whole column.

Either way ``emit_series`` keeps a value only from ``bar >= FeatureSpec.lookback`` on, where
the window lies inside the series; before it the value is null (warm-up), never 0. A spec's
lookback is therefore exactly the first bar at which its feature is defined.

Windows count traded bars; the activity columns (``halted``, ``days_traded_20``, limit
counts, ``age_days``) count calendar sessions over every row of the universe instead. Every
window only looks back, so a row dated t uses bars dated <= t. Prices are split-adjusted and
only scale-free transforms of them are emitted (``log_price`` and the turnover columns use
raw yen values).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.market import SESSION, session_index

SOURCES = ("raw_daily_quotes",)

RETURN_HORIZONS = (1, 2, 3, 5, 10, 20, 60, 120, 250)
AGE_CAP = 250  # trading days; the family's lookback covers it, so a capped age is exact
# Sessions a bar window may span beyond its bars (halts, days missing from the feed) and
# still have a value: a window reaching further back than the family's lookback is null.
HALT_ROOM = 20
PER_BILLION_YEN = 1e9


def bar_series(inputs: FeatureInputs, family: str) -> pl.LazyFrame:
    """``common.bars`` sorted by (code, traded, date), with three more columns.

    ``series``: an id shared by the rows of one price series (a stock's traded bars; its
    halted rows form a series of their own, which ``emit_series`` masks);
    ``bar``: the row's position in its series (0 = first bar in the window);
    ``session``: the row's session number in the window (``market.session_index``).
    ``turnover`` falls back to raw ``C × Vo`` where the feed has no ``Va`` (as in the market
    family).
    """
    return (
        common.bars(inputs, family)
        .sort("code", "traded", "date")
        .with_columns(series=pl.struct("code", "traded").rle_id())
        .with_columns(bar=per_series(pl.int_range(pl.len(), dtype=pl.Int32)))
        .join(session_index(inputs, family), on="date", how="left", maintain_order="left")
    )


def per_series(expr: pl.Expr) -> pl.Expr:
    """Evaluate an accumulating ``expr`` separately on each price series of a
    ``bar_series`` frame (in date order within a series, so the window needs no sort)."""
    return expr.over("series")


def emit_series(
    frame: pl.LazyFrame,
    family: FeatureFamily,
    dates: Sequence[dt.date],
    session_columns: Iterable[str] = (),
) -> pl.LazyFrame:
    """``common.emit`` after keeping each price-series feature only on traded rows with at
    least ``lookback`` earlier bars in the series, the earliest of which lies within the
    family's ``lookback`` sessions.

    The second condition is the history rule: a window of bars spans more sessions than bars
    when the stock was halted or missing from the feed, and a nightly run reads only the
    family's lookback of sessions. A value whose bars reach further back is null in the
    backfill too, so a row never depends on history a nightly run does not have.

    ``session_columns`` are computed over every row of the universe (not along a price
    series) and are emitted as they are.
    """
    keep = set(session_columns)
    session = pl.col(SESSION)

    def within_history(bars_back: int) -> pl.Expr:
        # rows are contiguous per series, so a whole-column shift inside the series is exact
        first = session.shift(bars_back)
        return (pl.col("bar") >= bars_back) & (session - first <= family.lookback)

    masked = [
        pl.when(pl.col("traded") & within_history(spec.lookback))
        .then(pl.col(spec.name))
        .alias(spec.name)
        for spec in family.features
        if spec.name not in keep
    ]
    return common.emit(frame.with_columns(masked), family, dates)


def safe_log(x: pl.Expr) -> pl.Expr:
    """ln(x); null (not -inf/NaN) unless x is positive."""
    return pl.when(x > 0).then(x.log())


def log_ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """ln(num / den); null (not -inf/NaN) unless both are positive."""
    return pl.when((num > 0) & (den > 0)).then((num / den).log())


_SPECS: tuple[FeatureSpec, ...] = (
    *(
        FeatureSpec(f"logret_{h}d", f"log return of the adjusted close over {h} traded bars", h)
        for h in RETURN_HORIZONS
    ),
    FeatureSpec("ret_1d", "simple return of the adjusted close over 1 traded bar", 1),
    FeatureSpec("ret_5d", "simple return of the adjusted close over 5 traded bars", 5),
    FeatureSpec("gap_overnight", "open / previous close - 1 (overnight gap)", 1),
    FeatureSpec("ret_intraday", "close / open - 1 (open-to-close return)", 0),
    FeatureSpec("hl_range", "high / low - 1 (the day's range)", 0),
    FeatureSpec("close_location", "(close - low) / (high - low); null when high == low", 0),
    FeatureSpec("turnover_yen", "trading value in yen (Va; raw C x Vo where Va is absent)", 0),
    FeatureSpec("log_turnover", "ln(1 + trading value in yen)", 0),
    FeatureSpec("log_turnover_20d", "ln(1 + mean trading value over 20 bars)", 19),
    FeatureSpec("turnover_ratio_20", "trading value / its 20-bar mean", 19),
    FeatureSpec("volume_ratio_5_20", "mean adjusted volume over 5 bars / over 20 bars", 19),
    FeatureSpec("volume_ratio_20_60", "mean adjusted volume over 20 bars / over 60 bars", 59),
    FeatureSpec("amihud_20", "Amihud: 20-bar mean of abs(ret_1d) / trading value, per ¥1bn", 20),
    FeatureSpec("limit_up", "1 on a limit-up day (UL flag)", 0),
    FeatureSpec("limit_down", "1 on a limit-down day (LL flag)", 0),
    FeatureSpec("limit_up_count_20", "limit-up days among the last 20 sessions", 19),
    FeatureSpec("limit_down_count_20", "limit-down days among the last 20 sessions", 19),
    FeatureSpec(
        "age_days",
        f"sessions since the stock's first bar, capped at {AGE_CAP}; null while unknown",
        AGE_CAP,
    ),
    FeatureSpec("halted", "1 on a bar row without prices (trading halt / no trade)", 0),
    FeatureSpec("days_traded_20", "sessions with a traded bar among the last 20 sessions", 19),
    FeatureSpec("log_price", "ln(raw close C in yen), the price level", 0),
    FeatureSpec("dist_high_20", "close / max high over 20 bars - 1", 19),
    FeatureSpec("dist_low_20", "close / min low over 20 bars - 1", 19),
    FeatureSpec("dist_high_60", "close / max high over 60 bars - 1", 59),
    FeatureSpec("dist_low_60", "close / min low over 60 bars - 1", 59),
    FeatureSpec("range_pos_60", "(close - 60-bar low) / (60-bar high - 60-bar low)", 59),
    FeatureSpec("overnight_ret_20", "sum of log overnight gaps over 20 bars", 20),
    FeatureSpec("intraday_ret_20", "sum of log open-to-close returns over 20 bars", 19),
    FeatureSpec("up_days_20", "fraction of the last 20 bars with a positive return", 20),
    FeatureSpec("volume_zscore_20", "(ln volume - 20-bar mean) / 20-bar std of ln volume", 19),
)

# Computed over every row of the universe by calendar session, not over a price series.
SESSION_COLUMNS = (
    "limit_up",
    "limit_down",
    "limit_up_count_20",
    "limit_down_count_20",
    "age_days",
    "halted",
    "days_traded_20",
)
ACTIVITY_WINDOW = 20


def _session_features() -> list[pl.Expr]:
    """Activity over the last 20 calendar sessions; null until the window holds 20 sessions."""

    def count_20(flag: str) -> pl.Expr:
        total = common.by_code(
            pl.col(flag).cast(pl.Int32).rolling_sum_by(SESSION, f"{ACTIVITY_WINDOW}i")
        )
        return pl.when(pl.col(SESSION) >= ACTIVITY_WINDOW - 1).then(total)

    first = common.by_code(pl.col(SESSION).cum_min())
    age = pl.col(SESSION) - first
    # A stock already there on the window's first session has an unknown age until the
    # window is longer than the cap.
    known = (first > 0) | (pl.col(SESSION) >= AGE_CAP)
    return [
        pl.col("limit_up").cast(pl.Float32),
        pl.col("limit_down").cast(pl.Float32),
        count_20("limit_up").alias("limit_up_count_20"),
        count_20("limit_down").alias("limit_down_count_20"),
        pl.when(known).then(pl.min_horizontal(age, AGE_CAP)).alias("age_days"),
        (~pl.col("traded")).cast(pl.Float32).alias("halted"),
        count_20("traded").alias("days_traded_20"),
    ]


def _series_features() -> list[pl.Expr]:
    close, open_, high, low = (pl.col(c) for c in ("close", "open", "high", "low"))
    volume, turnover = pl.col("volume"), pl.col("turnover")
    prev_close, log_volume = close.shift(1), safe_log(volume)
    ret_1d = close / prev_close - 1.0

    def mean(x: pl.Expr, window: int) -> pl.Expr:
        return per_series(x.rolling_mean(window))

    high_20, low_20 = high.rolling_max(20), low.rolling_min(20)
    high_60, low_60 = high.rolling_max(60), low.rolling_min(60)
    return [
        *(log_ratio(close, close.shift(h)).alias(f"logret_{h}d") for h in RETURN_HORIZONS),
        ret_1d.alias("ret_1d"),
        (close / close.shift(5) - 1.0).alias("ret_5d"),
        (open_ / prev_close - 1.0).alias("gap_overnight"),
        (close / open_ - 1.0).alias("ret_intraday"),
        (high / low - 1.0).alias("hl_range"),
        common.safe_div(close - low, high - low).alias("close_location"),
        turnover.alias("turnover_yen"),
        turnover.log1p().alias("log_turnover"),
        mean(turnover, 20).log1p().alias("log_turnover_20d"),
        common.safe_div(turnover, mean(turnover, 20)).alias("turnover_ratio_20"),
        common.safe_div(mean(volume, 5), mean(volume, 20)).alias("volume_ratio_5_20"),
        common.safe_div(mean(volume, 20), mean(volume, 60)).alias("volume_ratio_20_60"),
        (mean(common.safe_div(ret_1d.abs(), turnover), 20) * PER_BILLION_YEN).alias("amihud_20"),
        safe_log(pl.col("raw_close")).alias("log_price"),
        (close / high_20 - 1.0).alias("dist_high_20"),
        (close / low_20 - 1.0).alias("dist_low_20"),
        (close / high_60 - 1.0).alias("dist_high_60"),
        (close / low_60 - 1.0).alias("dist_low_60"),
        common.safe_div(close - low_60, high_60 - low_60).alias("range_pos_60"),
        per_series(log_ratio(open_, prev_close).rolling_sum(20)).alias("overnight_ret_20"),
        per_series(log_ratio(close, open_).rolling_sum(20)).alias("intraday_ret_20"),
        mean((close > prev_close).cast(pl.Float64), 20).alias("up_days_20"),
        common.safe_div(
            log_volume - mean(log_volume, 20), per_series(log_volume.rolling_std(20))
        ).alias("volume_zscore_20"),
    ]


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    frame = bar_series(inputs, FAMILY.name)
    frame = frame.with_columns(*_series_features(), *_session_features())
    return emit_series(frame, FAMILY, inputs.dates, session_columns=SESSION_COLUMNS)


FAMILY = FeatureFamily(
    name="price",
    sources=SOURCES,
    lookback=AGE_CAP + HALT_ROOM,  # 250-bar returns over at most 250 + HALT_ROOM sessions
    features=_SPECS,
    compute=compute,
    description=(
        "Multi-horizon returns, gaps, daily range, turnover and volume ratios, Amihud "
        "illiquidity, price-limit hits, listing age and trading activity from daily bars."
    ),
)
