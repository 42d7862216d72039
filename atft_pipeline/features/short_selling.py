"""Short-selling features: sector short ratio and disclosed large short positions.

``raw_short_selling`` is keyed by 33-sector (``S33``) and trade date (published 16:30 that
day). Turnover splits into selling excluding short sales, short sales with price restriction
and short sales without; the *short ratio* is short turnover / total turnover. A stock gets the
series of its sector in force at t: the latest ``raw_listed_info`` row dated on or before t
(``listed_info_asof``), never a later snapshot.

``raw_short_selling_positions`` are reports of positions >= 0.5% of shares outstanding, known
from their ``DiscDate``. At t a holder's (``SSName``, ``DICName``, ``FundName``) position is its
latest report disclosed by t; a report below 0.5% closes the position, and a position whose
latest report is older than ``POSITION_MAX_AGE_DAYS`` is dropped (without a later report the
holder is no longer known to hold it, and the result must not depend on how far back the
window reaches). Positions are summed as changes: +ratio from a report's DiscDate, −ratio from
the DiscDate of the holder's next report (or its expiry), accumulated in integer millionths of
a percent so the running sum returns exactly to 0 when every position is closed.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.margin_weekly import cs_rank, rolling_zscore
from atft_pipeline.features.common import asof_bar, raw_source, universe

REPORT_THRESHOLD = 0.005  # positions below 0.5% of shares outstanding are not reported
POSITION_MAX_AGE_DAYS = 365
_RATIO_UNITS = 100_000_000  # ratios summed exactly as integers of 1e-8
_HOLDER = ("SSName", "DICName", "FundName")


def listed_info_asof(
    inputs: FeatureInputs, family: str, panel: pl.LazyFrame, columns: dict[str, str]
) -> pl.LazyFrame:
    """Attach master fields in force at each (date, code): the code's latest
    ``raw_listed_info`` row dated on or before ``date``. ``columns`` maps field -> name."""
    master = (
        raw_source(inputs, family, "raw_listed_info", ["Date", "Code", *columns])
        .rename({"Date": "date", "Code": "code", **columns})
        .filter(pl.col("date").is_not_null() & pl.col("code").is_not_null())
        .sort("code", "date", maintain_order=True)
        .unique(subset=["code", "date"], keep="last", maintain_order=True)
    )
    return asof_bar(panel, "date", master)


def _sector_ratios(inputs: FeatureInputs) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(per sector and date, market per date) short-ratio series with their statistics."""
    raw = raw_source(
        inputs,
        "short_selling",
        "raw_short_selling",
        ["Date", "S33", "SellExShortVa", "ShrtWithResVa", "ShrtNoResVa"],
    ).filter(pl.col("Date").is_not_null() & pl.col("S33").is_not_null())
    flows = (
        raw.group_by("Date", "S33")
        .agg(
            pl.col("ShrtWithResVa").sum().alias("restricted"),
            (pl.col("ShrtWithResVa") + pl.col("ShrtNoResVa")).sum().alias("short"),
            (pl.col("SellExShortVa") + pl.col("ShrtWithResVa") + pl.col("ShrtNoResVa"))
            .sum()
            .alias("total"),
        )
        .rename({"Date": "date", "S33": "sector33"})
    )

    def by_sector(expr: pl.Expr) -> pl.Expr:
        return expr.over("sector33", order_by="date")

    ratio = common.safe_div(pl.col("short"), pl.col("total"))
    sectors = flows.with_columns(ratio.alias("r")).select(
        "date",
        "sector33",
        pl.col("r").alias("shrt_sec_ratio"),
        by_sector(pl.col("r").rolling_mean(5, min_samples=5)).alias("shrt_sec_ratio_ma5"),
        by_sector(pl.col("r").rolling_mean(20, min_samples=20)).alias("shrt_sec_ratio_ma20"),
        by_sector(rolling_zscore(pl.col("r"), 60)).alias("shrt_sec_ratio_z60"),
        by_sector(pl.col("r") - pl.col("r").shift(20)).alias("shrt_sec_ratio_chg20"),
        common.safe_div(pl.col("restricted"), pl.col("short")).alias("shrt_sec_restricted_share"),
    )
    market = (
        flows.group_by("date")
        .agg(pl.col("short").sum(), pl.col("total").sum())
        .sort("date")
        .with_columns(ratio.alias("r"))
        .select(
            "date",
            pl.col("r").alias("shrt_mkt_ratio"),
            pl.col("r").rolling_mean(20, min_samples=20).alias("shrt_mkt_ratio_ma20"),
            rolling_zscore(pl.col("r"), 60).alias("shrt_mkt_ratio_z60"),
        )
    )
    return sectors, market


def _positions(inputs: FeatureInputs) -> pl.LazyFrame:
    """``code, date`` + running totals, one row per date on which any of them changes:
    ``open_units`` (sum of open positions in 1e-8), ``open_holders``, ``reports`` (cumulative
    count of reports) and ``last_report`` (latest DiscDate)."""
    raw = raw_source(
        inputs,
        "short_selling",
        "raw_short_selling_positions",
        ["DiscDate", "CalcDate", "Code", *_HOLDER, "ShrtPosToSO"],
    ).rename({"DiscDate": "known", "Code": "code"})
    reports = (
        raw.filter(pl.col("known").is_not_null() & pl.col("code").is_not_null())
        .with_columns(*[pl.col(c).fill_null("") for c in _HOLDER])
        .sort("code", *_HOLDER, "known", "CalcDate", "ShrtPosToSO", maintain_order=True)
        .unique(subset=["code", *_HOLDER, "known"], keep="last", maintain_order=True)
    )
    next_report = pl.col("known").shift(-1).over(["code", *_HOLDER], order_by="known")
    expiry = pl.col("known") + dt.timedelta(days=POSITION_MAX_AGE_DAYS)
    open_ratio = pl.when(pl.col("ShrtPosToSO") >= REPORT_THRESHOLD).then(pl.col("ShrtPosToSO"))
    spans = reports.select(
        "code",
        pl.col("known").alias("start"),
        pl.min_horizontal(next_report, expiry).alias("end"),
        (open_ratio * _RATIO_UNITS).round().cast(pl.Int64).fill_null(0).alias("units"),
    ).filter(pl.col("units") > 0)
    zero = pl.lit(0, pl.Int64)
    events = pl.concat(
        [
            spans.select(
                "code",
                pl.col("start").alias("date"),
                "units",
                pl.lit(1, pl.Int64).alias("holders"),
                zero.alias("n"),
            ),
            spans.select(
                "code",
                pl.col("end").alias("date"),
                -pl.col("units"),
                pl.lit(-1, pl.Int64).alias("holders"),
                zero.alias("n"),
            ),
            reports.select(
                "code",
                pl.col("known").alias("date"),
                zero.alias("units"),
                zero.alias("holders"),
                pl.lit(1, pl.Int64).alias("n"),
            ),
        ]
    )
    running = {"partition_by": "code", "order_by": "date"}
    return (
        events.group_by("code", "date")
        .agg(pl.col("units").sum(), pl.col("holders").sum(), pl.col("n").sum())
        .select(
            "code",
            "date",
            pl.col("units").cum_sum().over(**running).alias("open_units"),
            pl.col("holders").cum_sum().over(**running).alias("open_holders"),
            pl.col("n").cum_sum().over(**running).alias("reports"),
            pl.when(pl.col("n") > 0)
            .then(pl.col("date"))
            .forward_fill()
            .over(**running)
            .alias("last_report"),
        )
    )


_SECTOR_FEATURES = (
    ("shrt_sec_ratio", "Short-selling turnover / total turnover of the stock's 33-sector", 0),
    ("shrt_sec_ratio_ma5", "5-session mean of the sector short ratio", 5),
    ("shrt_sec_ratio_ma20", "20-session mean of the sector short ratio", 20),
    ("shrt_sec_ratio_z60", "Z-score of the sector short ratio over 60 sessions", 60),
    ("shrt_sec_ratio_chg20", "Sector short ratio minus its value 20 sessions earlier", 20),
    (
        "shrt_sec_restricted_share",
        "Share of the sector's short turnover under the price restriction",
        0,
    ),
)
_MARKET_FEATURES = (
    ("shrt_mkt_ratio", "Market-wide short-selling ratio (all sectors)", 0),
    ("shrt_mkt_ratio_ma20", "20-session mean of the market short ratio", 20),
    ("shrt_mkt_ratio_z60", "Z-score of the market short ratio over 60 sessions", 60),
)

FEATURES = (
    *[FeatureSpec(n, d, lb) for n, d, lb in _SECTOR_FEATURES],
    FeatureSpec("shrt_sec_ratio_rel", "Sector short ratio minus the market short ratio"),
    *[FeatureSpec(n, d, lb) for n, d, lb in _MARKET_FEATURES],
    FeatureSpec(
        "shrt_pos_sum",
        "Sum of open disclosed short positions (fraction of shares outstanding)",
        250,
    ),
    FeatureSpec("shrt_pos_holders", "Number of holders with an open disclosed short position", 250),
    FeatureSpec("shrt_pos_sum_chg20", "Change of shrt_pos_sum over 20 sessions", 270),
    FeatureSpec(
        "shrt_pos_reports_20d", "Short-position reports disclosed in the last 20 sessions", 20
    ),
    FeatureSpec(
        "shrt_pos_days_since_report",
        "Calendar days since the latest short-position report (null if none within "
        f"{POSITION_MAX_AGE_DAYS} days)",
        250,
    ),
    FeatureSpec("shrt_pos_sum_rank", "Cross-sectional percentile rank of shrt_pos_sum", 250),
)


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    panel = listed_info_asof(
        inputs, "short_selling", universe(inputs, "short_selling"), {"S33": "sector33"}
    )
    sectors, market = _sector_ratios(inputs)
    positions = _positions(inputs)
    frame = (
        panel.join(sectors, on=["date", "sector33"], how="left")
        .join(market, on="date", how="left")
        .pipe(asof_bar, "date", positions)
    )
    units = pl.col("open_units").fill_null(0)
    pos_sum = units.cast(pl.Float64) / _RATIO_UNITS
    reports = pl.col("reports").fill_null(0).cast(pl.Float64)
    age = (pl.col("date") - pl.col("last_report")).dt.total_days()
    frame = frame.with_columns(
        (pl.col("shrt_sec_ratio") - pl.col("shrt_mkt_ratio")).alias("shrt_sec_ratio_rel"),
        pos_sum.alias("shrt_pos_sum"),
        pl.col("open_holders").fill_null(0).cast(pl.Float64).alias("shrt_pos_holders"),
        common.by_code(pos_sum - pos_sum.shift(20)).alias("shrt_pos_sum_chg20"),
        common.by_code(reports - reports.shift(20)).alias("shrt_pos_reports_20d"),
        pl.when(age <= POSITION_MAX_AGE_DAYS).then(age).alias("shrt_pos_days_since_report"),
        cs_rank(pos_sum).alias("shrt_pos_sum_rank"),
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="short_selling",
    sources=(
        "raw_daily_quotes",
        "raw_listed_info",
        "raw_short_selling",
        "raw_short_selling_positions",
    ),
    lookback=270,
    features=FEATURES,
    compute=compute,
    description=(
        "Short-selling ratio of the stock's 33-sector (point-in-time sector) and of the "
        "market with its means, z-scores and changes; open disclosed large short positions "
        "(latest report per holder, >= 0.5%), holders, changes, report activity and age."
    ),
)
