"""Nikkei 225 index-option features (``raw_index_options``), market-level, broadcast to stocks.

Options of trade day D are published at 03:00 on D+1, so a row dated t uses the latest
options day strictly before t (``published`` = the session after D; a derivatives holiday
session counts from the last equity session before it).

Per options day, from settlement-time rows (``EmMrgnTrgDiv`` "002"; "001" rows are the
intraday emergency-margin recalculation) with a positive implied volatility:

- expiries are the distinct last trading days (``LTD``); the *front* expiry is the nearest
  one at least ``MIN_DAYS_TO_EXPIRY`` business days away, the *next* the one after it;
- ATM IV of an expiry: the strike nearest its underlying price, the mean of its put and call
  IV (whichever exist);
- skew: put IV at the strike nearest 95% of the underlying minus call IV nearest 105%, front
  expiry;
- put/call ratios of volume and open interest over every series of the day.

J-Quants publishes ``IV`` in percent; features are in decimal volatility units, like the
TOPIX realized volatility (close-to-close log returns, annualized with 245 sessions) used for
the variance-risk-premium proxy.
"""

from __future__ import annotations

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.margin_weekly import rolling_zscore
from atft_pipeline.features.common import raw_source, universe

MIN_DAYS_TO_EXPIRY = 5
PUT_MONEYNESS, CALL_MONEYNESS = 0.95, 1.05
RV_WINDOW = 20
Z_WINDOW = 60
VOLUME_WINDOW = 20
MAX_STALE_DAYS = 10  # an options series that stopped (e.g. a missing source) is not current
SESSIONS_PER_YEAR = 245
_PUT, _CALL = "1", "2"
_EMERGENCY_RECALCULATION = "001"


def _series(inputs: FeatureInputs) -> pl.LazyFrame:
    raw = raw_source(
        inputs,
        "options",
        "raw_index_options",
        ["Date", "PCDiv", "Strike", "LTD", "UnderPx", "IV", "Vo", "OI", "EmMrgnTrgDiv"],
    )
    return raw.filter(
        pl.col("Date").is_not_null()
        & (pl.col("EmMrgnTrgDiv") != _EMERGENCY_RECALCULATION).fill_null(True)
    ).with_columns((pl.col("IV") / 100.0).alias("iv"))


def _atm_by_expiry(series: pl.LazyFrame) -> pl.LazyFrame:
    """``Date, LTD, days, atm_iv, skew``: one row per options day and eligible expiry."""
    quoted = (
        series.filter(
            (pl.col("iv") > 0)
            & pl.col("Strike").is_not_null()
            & pl.col("LTD").is_not_null()
            & (pl.col("UnderPx") > 0)
            & pl.col("PCDiv").is_in([_PUT, _CALL])
        )
        .with_columns(
            pl.business_day_count(pl.col("Date"), pl.col("LTD")).alias("days"),
            pl.col("UnderPx").mean().over("Date", "LTD").alias("under"),
        )
        .filter(pl.col("days") >= MIN_DAYS_TO_EXPIRY)
    )
    expiry = ["Date", "LTD"]
    distance = (pl.col("Strike") - pl.col("under")).abs()
    atm_strike = pl.col("Strike").sort_by(distance, pl.col("Strike")).first()
    put = pl.col("PCDiv") == _PUT
    call = pl.col("PCDiv") == _CALL

    def nearest_iv(side: pl.Expr, target: float) -> pl.Expr:
        gap = (pl.col("Strike") / pl.col("under") - target).abs()
        return (
            pl.col("iv")
            .filter(side)
            .sort_by(gap.filter(side), pl.col("Strike").filter(side))
            .first()
        )

    return quoted.group_by(expiry).agg(
        pl.col("days").first(),
        pl.col("iv").filter(pl.col("Strike") == atm_strike).mean().alias("atm_iv"),
        (nearest_iv(put, PUT_MONEYNESS) - nearest_iv(call, CALL_MONEYNESS)).alias("skew"),
        nearest_iv(put, PUT_MONEYNESS).alias("put_iv"),
    )


def _daily(inputs: FeatureInputs) -> pl.LazyFrame:
    """One row per options day with every feature (before the publication shift)."""
    series = _series(inputs)
    expiries = _atm_by_expiry(series)
    term = expiries.group_by("Date").agg(
        pl.col("atm_iv").sort_by("LTD").first().alias("front_iv"),
        pl.col("atm_iv").sort_by("LTD").slice(1, 1).first().alias("next_iv"),
        pl.col("skew").sort_by("LTD").first().alias("skew"),
        pl.col("put_iv").sort_by("LTD").first().alias("put_iv"),
        pl.col("days").sort_by("LTD").first().alias("days"),
    )
    activity = series.group_by("Date").agg(
        pl.col("Vo").filter(pl.col("PCDiv") == _PUT).sum().alias("put_vo"),
        pl.col("Vo").filter(pl.col("PCDiv") == _CALL).sum().alias("call_vo"),
        pl.col("OI").filter(pl.col("PCDiv") == _PUT).sum().alias("put_oi"),
        pl.col("OI").filter(pl.col("PCDiv") == _CALL).sum().alias("call_oi"),
        pl.col("Vo").sum().alias("volume"),
    )
    topix = (
        raw_source(inputs, "options", "raw_topix", ["Date", "C"])
        .filter(pl.col("Date").is_not_null())
        .sort("Date")
    )
    log_ret = pl.col("C").log().diff()
    realized = topix.select(
        "Date",
        (log_ret.rolling_std(RV_WINDOW, min_samples=RV_WINDOW) * SESSIONS_PER_YEAR**0.5).alias(
            "rv"
        ),
    )
    iv = pl.col("front_iv")
    return (
        activity.join(term, on="Date", how="left")
        .join(realized, on="Date", how="left")
        .sort("Date")
        .select(
            "Date",
            iv.alias("opt_atm_iv"),
            (pl.col("next_iv") - iv).alias("opt_term_slope"),
            pl.col("skew").alias("opt_skew_25d"),
            (pl.col("put_iv") - iv).alias("opt_put_skew"),
            common.safe_div(pl.col("put_vo"), pl.col("call_vo")).alias("opt_put_call_vol_ratio"),
            common.safe_div(pl.col("put_oi"), pl.col("call_oi")).alias("opt_put_call_oi_ratio"),
            (iv - iv.shift(1)).alias("opt_atm_iv_chg_1d"),
            (iv - iv.shift(5)).alias("opt_atm_iv_chg_5d"),
            rolling_zscore(iv, Z_WINDOW).alias("opt_atm_iv_z60"),
            (iv - pl.col("rv")).alias("opt_vrp"),
            pl.col("days").cast(pl.Float64).alias("opt_days_to_expiry"),
            common.safe_div(
                pl.col("volume"),
                pl.col("volume").rolling_mean(VOLUME_WINDOW, min_samples=VOLUME_WINDOW),
            ).alias("opt_volume_ratio_20"),
        )
    )


FEATURES = (
    FeatureSpec(
        "opt_atm_iv",
        "ATM implied vol of the front expiry (>= 5 business days), previous options day",
        1,
    ),
    FeatureSpec("opt_term_slope", "Next-expiry ATM IV minus front-expiry ATM IV", 1),
    FeatureSpec("opt_skew_25d", "Front-expiry put IV at ~95% moneyness minus call IV at ~105%", 1),
    FeatureSpec("opt_put_skew", "Front-expiry put IV at ~95% moneyness minus ATM IV", 1),
    FeatureSpec("opt_put_call_vol_ratio", "Put volume / call volume, all series", 1),
    FeatureSpec("opt_put_call_oi_ratio", "Put open interest / call open interest, all series", 1),
    FeatureSpec("opt_atm_iv_chg_1d", "Change of the front ATM IV over 1 options day", 2),
    FeatureSpec("opt_atm_iv_chg_5d", "Change of the front ATM IV over 5 options days", 6),
    FeatureSpec("opt_atm_iv_z60", "Z-score of the front ATM IV over 60 options days", Z_WINDOW + 1),
    FeatureSpec(
        "opt_vrp",
        "Front ATM IV minus TOPIX 20-session realized vol (variance risk premium proxy)",
        RV_WINDOW + 1,
    ),
    FeatureSpec("opt_days_to_expiry", "Business days from the options day to the front expiry", 1),
    FeatureSpec("opt_volume_ratio_20", "Total option volume / its 20-day mean", VOLUME_WINDOW + 1),
)


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    daily = common.add_sessions(_daily(inputs), "Date", 1, inputs.calendar, "published")
    # Several options days published on the same session (derivatives holiday trading):
    # the latest one is in force.
    daily = (
        daily.filter(pl.col("published").is_not_null())
        .sort("published", "Date", maintain_order=True)
        .unique(subset=["published"], keep="last", maintain_order=True)
        .drop("Date")
    )
    sessions = pl.LazyFrame({"date": list(inputs.calendar)}, schema={"date": pl.Date})
    by_session = sessions.join_asof(daily, left_on="date", right_on="published")
    age = (pl.col("date") - pl.col("published")).dt.total_days()
    fresh = age.is_not_null() & (age <= MAX_STALE_DAYS)
    by_session = by_session.select(
        "date", *[pl.when(fresh).then(pl.col(c)).alias(c) for c in FAMILY.columns]
    )
    panel = universe(inputs, "options")
    frame = panel.join(by_session, on="date", how="left")
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="options",
    sources=("raw_daily_quotes", "raw_topix", "raw_index_options"),
    lookback=Z_WINDOW + 5,
    features=FEATURES,
    compute=compute,
    description=(
        "Nikkei 225 options of the previous options day (published 03:00 the next day): "
        "front ATM implied vol, term slope, skew, put/call volume and OI ratios, IV changes "
        "and z-score, and IV minus TOPIX realized vol; market-level, broadcast to stocks."
    ),
)
