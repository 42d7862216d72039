"""Market family: the TOPIX regime, cross-sectional breadth and each stock's market exposure.

Three groups of columns:

- **TOPIX** (same value for every stock on a date): returns, realized volatility, z-score of
  the close against its trailing mean/std, drawdown from the 250-session high, trend flags
  (close above its 50/200-session SMA) and the volatility regime (20-session vol against its
  own 250-session median).
- **Breadth** (same value for every stock on a date), from the cross-section of
  ``raw_daily_quotes``: share of stocks up, advance-decline balance, share above their own
  SMA, share at a 20-session high/low, and the dispersion/skew/mean of today's returns.
- **Exposure** (per stock): rolling OLS of the stock's daily return on the *same-day* TOPIX
  return (beta 60/120, downside beta, alpha, idiosyncratic vol, correlation), relative
  strength and today's excess/residual return.

This module also holds the session grid and the per-stock return panel that the sector,
graph and earnings families build on (``session_index``, ``stock_panel``, ``topix_returns``):
one definition of "a return" for all four families.

Returns are simple returns of the split-adjusted close. Rolling windows count *sessions*:
the panel has one row per (code, session) between a code's first and last bar, so a day
missing from the feed is a null inside the window, never a silently longer window.
"""

from __future__ import annotations

import math

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.common import raw_source

TRADING_DAYS_PER_YEAR = 252
ANNUALIZE = math.sqrt(TRADING_DAYS_PER_YEAR)
SESSION = "session"  # 0-based index of a date in the window's session list
RETURN_HORIZONS = (1, 5, 20, 60)

# A per-stock rolling statistic needs this share of its window observed (else null): 40 of 60
# sessions, 14 of 20. Index-level (TOPIX) statistics need their full window.
MIN_OBS_SHARE = 2 / 3


def min_obs(window: int) -> int:
    return math.ceil(window * MIN_OBS_SHARE)


# --------------------------------------------------------------------------------------
# Shared panel (also used by sector, graph and earnings)
# --------------------------------------------------------------------------------------


BAR_COLUMNS = ("Date", "Code", "AdjC", "AdjVo", "C", "Vo", "Va")
TOPIX_COLUMNS = ("Date", "O", "H", "L", "C")


def session_index(inputs: FeatureInputs, family: str) -> pl.LazyFrame:
    """Every session of the window, ascending, numbered from 0 in column ``session``.

    Sessions are the calendar's trading days plus any date that has bars (a bar on a date the
    calendar lacks still counts, so no row is dropped).
    """
    calendar = pl.LazyFrame({"date": list(inputs.calendar)}, schema={"date": pl.Date})
    bar_dates = raw_source(inputs, family, "raw_daily_quotes", ["Date"]).select(
        pl.col("Date").alias("date")
    )
    return (
        pl.concat([calendar, bar_dates])
        .unique()
        .sort("date")
        .with_row_index(SESSION)
        .with_columns(pl.col(SESSION).cast(pl.Int64))
    )


def _positive(col: str) -> pl.Expr:
    """A price/volume column with NaN and non-positive values as null (they have no log/ratio)."""
    value = pl.col(col).fill_nan(None)
    return pl.when(value > 0).then(value).otherwise(None)


def stock_panel(inputs: FeatureInputs, family: str) -> pl.LazyFrame:
    """One row per (code, session) from the code's first to its last bar, sorted by code, date.

    Columns:
    - ``listed``: the code has a bar row that day (the family universe); grid rows added for
      days missing from the feed have ``listed = False`` and null prices.
    - ``close`` (adjusted, null on halts), ``close_ff`` (last known adjusted close),
      ``volume`` (adjusted), ``turnover`` (yen: ``Va``, else raw ``C × Vo`` where the feed
      has no ``Va``).
    - ``ret_1d``: close-to-close over exactly one session (null if either close is missing),
      the series every rolling statistic uses.
    - ``ret_{5,20,60}d``: from the last known close on or before t-n to today's close (null
      when today has no close).
    - ``vol_20d``: annualized std of ``ret_1d`` over 20 sessions.
    - ``above_sma20`` / ``above_sma50``: close above its own 20/50-session mean.
    - ``at_high_20d`` / ``at_low_20d``: close at its 20-session high/low.
    - ``volume_ratio``: volume over its mean of the previous 20 sessions.

    Every rolling statistic needs ``min_obs(window)`` observed values, else it is null.
    """
    sessions = session_index(inputs, family)
    quotes = (
        raw_source(inputs, family, "raw_daily_quotes", BAR_COLUMNS)
        .select(
            pl.col("Date").alias("date"),
            pl.col("Code").alias("code"),
            _positive("AdjC").alias("close"),
            pl.col("AdjVo").fill_nan(None).alias("volume"),
            common.trading_value().fill_nan(None).alias("turnover"),
            pl.lit(True).alias("listed"),
        )
        .join(sessions, on="date", how="inner")
    )
    spans = quotes.group_by("code").agg(
        pl.col(SESSION).min().alias("_first"), pl.col(SESSION).max().alias("_last")
    )
    grid = (
        spans.select("code", pl.int_ranges("_first", pl.col("_last") + 1).alias(SESSION))
        .explode(SESSION)
        .join(sessions, on=SESSION, how="inner")
    )
    close = pl.col("close")
    close_ff = pl.col("close_ff")

    def trailing(expr: pl.Expr, stat: str, window: int) -> pl.Expr:
        return common.by_code(getattr(expr, f"rolling_{stat}")(window, min_samples=min_obs(window)))

    return (
        grid.join(quotes.drop("date"), on=["code", SESSION], how="left")
        .with_columns(pl.col("listed").fill_null(False))
        .sort("code", "date")
        .with_columns(common.by_code(close.forward_fill()).alias("close_ff"))
        .with_columns(
            (close / common.by_code(close.shift(1)) - 1.0).alias("ret_1d"),
            *[
                pl.when(close.is_not_null())
                .then(close / common.by_code(close_ff.shift(n)) - 1.0)
                .alias(f"ret_{n}d")
                for n in RETURN_HORIZONS[1:]
            ],
            _above(close, trailing(close, "mean", 20)).alias("above_sma20"),
            _above(close, trailing(close, "mean", 50)).alias("above_sma50"),
            _at(close, trailing(close, "max", 20)).alias("at_high_20d"),
            _at(close, trailing(close, "min", 20)).alias("at_low_20d"),
            common.safe_div(
                pl.col("volume"), trailing(pl.col("volume").shift(1), "mean", 20)
            ).alias("volume_ratio"),
        )
        .with_columns((trailing(pl.col("ret_1d"), "std", 20) * ANNUALIZE).alias("vol_20d"))
    )


def _above(value: pl.Expr, level: pl.Expr) -> pl.Expr:
    return pl.when(value.is_not_null() & level.is_not_null()).then(value > level)


def _at(value: pl.Expr, level: pl.Expr) -> pl.Expr:
    return pl.when(value.is_not_null() & level.is_not_null()).then(value == level)


def topix_returns(inputs: FeatureInputs, family: str) -> pl.LazyFrame:
    """TOPIX on the session grid: ``date``, ``session``, ``tpx_open/high/low/close`` and
    ``tpx_ret_{1,5,20,60}d`` (simple returns over n sessions; null where a close is missing)."""
    topix = raw_source(inputs, family, "raw_topix", TOPIX_COLUMNS).select(
        pl.col("Date").alias("date"),
        _positive("O").alias("tpx_open"),
        _positive("H").alias("tpx_high"),
        _positive("L").alias("tpx_low"),
        _positive("C").alias("tpx_close"),
    )
    close = pl.col("tpx_close")
    return (
        session_index(inputs, family)
        .join(topix, on="date", how="left")
        .sort(SESSION)
        .with_columns(
            (close / close.shift(n) - 1.0).alias(f"tpx_ret_{n}d") for n in RETURN_HORIZONS
        )
    )


# --------------------------------------------------------------------------------------
# Rolling regression on the market
# --------------------------------------------------------------------------------------


def rolling_regression(
    y: str, x: str, window: int, tag: str, where: pl.Expr | None = None
) -> list[pl.Expr]:
    """Per-code rolling sums for an OLS of ``y`` on ``x`` over ``window`` sessions.

    Only sessions where both are observed (and ``where`` holds) enter; the sums are named
    ``_{tag}_{n,sx,sy,sxx,syy,sxy}``. ``regression_stats`` turns them into beta, alpha, ...
    """
    valid = pl.col(y).is_not_null() & pl.col(x).is_not_null()
    if where is not None:
        valid = valid & where.fill_null(False)
    xv = pl.when(valid).then(pl.col(x)).otherwise(0.0)
    yv = pl.when(valid).then(pl.col(y)).otherwise(0.0)
    terms = {
        "n": valid.cast(pl.Float64),
        "sx": xv,
        "sy": yv,
        "sxx": xv * xv,
        "syy": yv * yv,
        "sxy": xv * yv,
    }
    return [
        common.by_code(expr.rolling_sum(window, min_samples=1)).alias(f"_{tag}_{name}")
        for name, expr in terms.items()
    ]


def regression_stats(tag: str, min_n: int) -> dict[str, pl.Expr]:
    """beta, alpha (intercept = mean residual around the slope), residual std (n-2 dof)
    and correlation from the sums of ``rolling_regression``; null below ``min_n`` points."""
    n, sx, sy = pl.col(f"_{tag}_n"), pl.col(f"_{tag}_sx"), pl.col(f"_{tag}_sy")
    cxx = pl.col(f"_{tag}_sxx") - sx * sx / n
    cyy = pl.col(f"_{tag}_syy") - sy * sy / n
    cxy = pl.col(f"_{tag}_sxy") - sx * sy / n
    beta = common.safe_div(cxy, cxx)
    ssr = (cyy - beta * cxy).clip(lower_bound=0.0)
    mature = n >= min_n

    def when_mature(expr: pl.Expr) -> pl.Expr:
        return pl.when(mature).then(expr).otherwise(None)

    return {
        "beta": when_mature(beta),
        "alpha": when_mature((sy - beta * sx) / n),
        "resid_std": when_mature((ssr / (n - 2.0)).sqrt()),
        "corr": when_mature(common.safe_div(cxy, (cxx * cyy).clip(lower_bound=0.0).sqrt())),
    }


# --------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------

_F = FeatureSpec
_INT = pl.Int8

FEATURES: tuple[FeatureSpec, ...] = (
    # TOPIX
    _F("mkt_ret_1d", "TOPIX close-to-close return today", 1),
    _F("mkt_ret_5d", "TOPIX return over 5 sessions", 5),
    _F("mkt_ret_20d", "TOPIX return over 20 sessions", 20),
    _F("mkt_ret_60d", "TOPIX return over 60 sessions", 60),
    _F("mkt_gap_1d", "TOPIX open over previous close minus 1 (overnight move)", 1),
    _F("mkt_range_1d", "TOPIX (high - low) / close today", 0),
    _F("mkt_vol_5d", "TOPIX realized vol, 5 sessions, annualized", 5),
    _F("mkt_vol_20d", "TOPIX realized vol, 20 sessions, annualized", 20),
    _F("mkt_vol_60d", "TOPIX realized vol, 60 sessions, annualized", 60),
    _F("mkt_vol_ratio_20_60", "TOPIX 20-session vol over 60-session vol", 60),
    _F("mkt_z_20d", "TOPIX close z-score vs its 20-session mean/std", 20),
    _F("mkt_z_60d", "TOPIX close z-score vs its 60-session mean/std", 60),
    _F("mkt_drawdown_250d", "TOPIX close over its 250-session high minus 1", 250),
    _F("mkt_sma50_gap", "TOPIX close over its 50-session SMA minus 1", 50),
    _F("mkt_sma200_gap", "TOPIX close over its 200-session SMA minus 1", 200),
    _F("mkt_above_sma50", "1 if TOPIX closes above its 50-session SMA", 50, _INT),
    _F("mkt_above_sma200", "1 if TOPIX closes above its 200-session SMA", 200, _INT),
    _F("mkt_vol_regime", "TOPIX 20-session vol over its 250-session median", 270),
    _F("mkt_high_vol", "1 if TOPIX 20-session vol is above its 250-session median", 270, _INT),
    # breadth
    _F("mkt_breadth_up", "share of stocks with a positive return today", 1),
    _F("mkt_ad_5d", "mean over 5 sessions of (advancers - decliners) / (adv + dec)", 5),
    _F("mkt_ad_20d", "mean over 20 sessions of (advancers - decliners) / (adv + dec)", 20),
    _F("mkt_breadth_sma20", "share of stocks closing above their own 20-session SMA", 20),
    _F("mkt_breadth_sma50", "share of stocks closing above their own 50-session SMA", 50),
    _F("mkt_breadth_high_20d", "share of stocks closing at their 20-session high", 20),
    _F("mkt_breadth_low_20d", "share of stocks closing at their 20-session low", 20),
    _F("mkt_xs_ret_1d", "equal-weight mean of today's stock returns", 1),
    _F("mkt_dispersion_1d", "cross-sectional std of today's stock returns", 1),
    _F("mkt_xs_skew_1d", "cross-sectional skewness of today's stock returns", 1),
    # exposure (per stock)
    _F("mkt_beta_60d", "OLS beta of daily return on same-day TOPIX return, 60 sessions", 60),
    _F("mkt_beta_120d", "OLS beta of daily return on same-day TOPIX return, 120 sessions", 120),
    _F("mkt_downside_beta_60d", "beta over the TOPIX down days of the last 60 sessions", 60),
    _F("mkt_alpha_60d", "OLS intercept (mean daily residual), 60 sessions", 60),
    _F("mkt_idio_vol_60d", "residual std of the 60-session regression, annualized", 60),
    _F("mkt_corr_60d", "correlation of daily return with TOPIX, 60 sessions", 60),
    _F("mkt_rs_5d", "stock 5-session return minus TOPIX 5-session return", 5),
    _F("mkt_rs_20d", "stock 20-session return minus TOPIX 20-session return", 20),
    _F("mkt_rs_60d", "stock 60-session return minus TOPIX 60-session return", 60),
    _F("mkt_excess_ret_1d", "stock return minus TOPIX return today", 1),
    _F("mkt_resid_ret_1d", "stock return minus 60-session beta times TOPIX return today", 60),
)

FAMILY_NAME = "market"
# Minimum observations for the per-stock regressions.
BETA_MIN_OBS = {60: min_obs(60), 120: min_obs(120)}
DOWNSIDE_MIN_OBS = 15  # TOPIX down days (of ~30 expected in 60 sessions)
VOL_REGIME_WINDOW = 250


def _topix_features(inputs: FeatureInputs) -> pl.LazyFrame:
    close = pl.col("tpx_close")
    ret = pl.col("tpx_ret_1d")

    def vol(window: int) -> pl.Expr:
        return ret.rolling_std(window, min_samples=window) * ANNUALIZE

    def z(window: int) -> pl.Expr:
        return common.safe_div(
            close - close.rolling_mean(window, min_samples=window),
            close.rolling_std(window, min_samples=window),
        )

    sma50 = close.rolling_mean(50, min_samples=50)
    sma200 = close.rolling_mean(200, min_samples=200)
    return (
        topix_returns(inputs, FAMILY_NAME)
        .with_columns(
            pl.col("tpx_ret_1d").alias("mkt_ret_1d"),
            pl.col("tpx_ret_5d").alias("mkt_ret_5d"),
            pl.col("tpx_ret_20d").alias("mkt_ret_20d"),
            pl.col("tpx_ret_60d").alias("mkt_ret_60d"),
            (pl.col("tpx_open") / close.shift(1) - 1.0).alias("mkt_gap_1d"),
            ((pl.col("tpx_high") - pl.col("tpx_low")) / close).alias("mkt_range_1d"),
            vol(5).alias("mkt_vol_5d"),
            vol(20).alias("mkt_vol_20d"),
            vol(60).alias("mkt_vol_60d"),
            z(20).alias("mkt_z_20d"),
            z(60).alias("mkt_z_60d"),
            (close / close.rolling_max(250, min_samples=250) - 1.0).alias("mkt_drawdown_250d"),
            (close / sma50 - 1.0).alias("mkt_sma50_gap"),
            (close / sma200 - 1.0).alias("mkt_sma200_gap"),
            _above(close, sma50).cast(_INT).alias("mkt_above_sma50"),
            _above(close, sma200).cast(_INT).alias("mkt_above_sma200"),
        )
        .with_columns(
            common.safe_div(pl.col("mkt_vol_20d"), pl.col("mkt_vol_60d")).alias(
                "mkt_vol_ratio_20_60"
            ),
            common.safe_div(
                pl.col("mkt_vol_20d"),
                pl.col("mkt_vol_20d").rolling_median(
                    VOL_REGIME_WINDOW, min_samples=VOL_REGIME_WINDOW
                ),
            ).alias("mkt_vol_regime"),
        )
        .with_columns(
            pl.when(pl.col("mkt_vol_regime").is_not_null())
            .then(pl.col("mkt_vol_regime") > 1.0)
            .cast(_INT)
            .alias("mkt_high_vol")
        )
        .drop(SESSION)
    )


def _breadth_features(panel: pl.LazyFrame) -> pl.LazyFrame:
    """Per date, over the listed stocks with a return today (SMA/high shares: with a mature
    SMA/high), then rolled over sessions for the advance-decline means."""
    ret = pl.col("ret_1d")

    def share(flag: str) -> pl.Expr:
        return pl.col(flag).cast(pl.Float64).mean()  # nulls (immature SMA, no close) skipped

    daily = (
        panel.filter(pl.col("listed"))
        .group_by(SESSION, "date")
        .agg(
            common.safe_div((ret > 0).sum().cast(pl.Float64), ret.count().cast(pl.Float64)).alias(
                "mkt_breadth_up"
            ),
            common.safe_div(
                ((ret > 0).sum().cast(pl.Float64) - (ret < 0).sum().cast(pl.Float64)),
                ((ret > 0).sum() + (ret < 0).sum()).cast(pl.Float64),
            ).alias("_ad"),
            share("above_sma20").alias("mkt_breadth_sma20"),
            share("above_sma50").alias("mkt_breadth_sma50"),
            share("at_high_20d").alias("mkt_breadth_high_20d"),
            share("at_low_20d").alias("mkt_breadth_low_20d"),
            ret.mean().alias("mkt_xs_ret_1d"),
            ret.std().alias("mkt_dispersion_1d"),
            ret.skew().alias("mkt_xs_skew_1d"),
        )
        .sort(SESSION)
    )
    # Sessions without any listed stock would shorten the rolling window; the breadth series is
    # put on the full session range first so the 5/20-session means span sessions.
    all_sessions = common.session_span(daily, SESSION)
    return (
        all_sessions.join(daily, on=SESSION, how="left")
        .sort(SESSION)
        .with_columns(
            pl.col("_ad").rolling_mean(5, min_samples=5).alias("mkt_ad_5d"),
            pl.col("_ad").rolling_mean(20, min_samples=20).alias("mkt_ad_20d"),
        )
        .drop("_ad", "date")
    )


def _exposure_features(panel: pl.LazyFrame, topix: pl.LazyFrame) -> pl.LazyFrame:
    tpx = topix.select(
        "date", *(pl.col(f"tpx_ret_{n}d") for n in RETURN_HORIZONS)
    )
    frame = (
        panel.join(tpx, on="date", how="left")
        .sort("code", "date")
        .with_columns(
            *rolling_regression("ret_1d", "tpx_ret_1d", 60, "b60"),
            *rolling_regression("ret_1d", "tpx_ret_1d", 120, "b120"),
            *rolling_regression("ret_1d", "tpx_ret_1d", 60, "d60", where=pl.col("tpx_ret_1d") < 0),
        )
    )
    b60 = regression_stats("b60", BETA_MIN_OBS[60])
    b120 = regression_stats("b120", BETA_MIN_OBS[120])
    d60 = regression_stats("d60", DOWNSIDE_MIN_OBS)
    return frame.with_columns(
        b60["beta"].alias("mkt_beta_60d"),
        b120["beta"].alias("mkt_beta_120d"),
        d60["beta"].alias("mkt_downside_beta_60d"),
        b60["alpha"].alias("mkt_alpha_60d"),
        (b60["resid_std"] * ANNUALIZE).alias("mkt_idio_vol_60d"),
        b60["corr"].alias("mkt_corr_60d"),
        *[
            (pl.col(f"ret_{n}d") - pl.col(f"tpx_ret_{n}d")).alias(f"mkt_rs_{n}d")
            for n in RETURN_HORIZONS[1:]
        ],
        (pl.col("ret_1d") - pl.col("tpx_ret_1d")).alias("mkt_excess_ret_1d"),
        (pl.col("ret_1d") - b60["beta"] * pl.col("tpx_ret_1d")).alias("mkt_resid_ret_1d"),
    )


def compute_market(inputs: FeatureInputs) -> pl.LazyFrame:
    # materialized once: the regression and the breadth both read it
    panel = stock_panel(inputs, FAMILY_NAME).collect().lazy()
    topix = _topix_features(inputs)
    frame = (
        _exposure_features(panel, topix)
        .filter(pl.col("listed"))
        .join(topix.drop(*(f"tpx_ret_{n}d" for n in RETURN_HORIZONS)), on="date", how="left")
        .join(_breadth_features(panel), on=SESSION, how="left")
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name=FAMILY_NAME,
    sources=("raw_daily_quotes", "raw_topix"),
    lookback=VOL_REGIME_WINDOW + 20,
    features=FEATURES,
    compute=compute_market,
    description="TOPIX regime, market breadth and per-stock beta/correlation/relative strength",
)
