"""Investor-flow features (``raw_trades_spec``: weekly trading by investor type and section).

Values are thousand yen per week and market section. Net buying (``Bal`` = buy − sell) of an
investor type is normalized by the section's total trading (``TotTot``), so weeks and sections
of different size compare.

Point in time: a week is known from its ``PubDate``; a correction (same ``Section`` /
``StDate`` / ``EnDate``, newer ``PubDate``) replaces it only from its own ``PubDate``. The series
is therefore rebuilt on every publication date *s* of a section from the versions published on
or before *s* (latest per week), and the statistics of that state are joined to the days
``>= s``. Corrections of older weeks thus update the 4-week sums and 52-week z-scores from
their publication on, never before.

Sections: the April 2022 market restructuring renamed the sections, so each series is a
*tier* that continues across it — TSE1st→TSEPrime ("prime"), TSE2nd→TSEStandard
("standard"), TSEMothers→TSEGrowth ("growth"), and TSEJASDAQ ("jasdaq", until 2022-04). A
stock gets the tier of its market segment in force at t (``raw_listed_info`` as of t); JASDAQ
issues belong to the jasdaq tier before the restructuring and to standard/growth after it.
Features of the prime tier are also broadcast to every stock as the market-wide flow.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.short_selling import listed_info_asof
from atft_pipeline.features.common import raw_source, universe

MARKET_RESTRUCTURING = dt.date(2022, 4, 4)
Z_WEEKS = 52
SUM_WEEKS = 4
MAX_STALE_DAYS = 28  # a weekly series older than four weeks is not current
# Weeks kept per state: enough for Z_WEEKS published weeks even with year-end gaps.
_STATE_SPAN = dt.timedelta(days=7 * (Z_WEEKS + 10))

_SECTION_TIER = {
    "TSE1st": "prime",
    "TSEPrime": "prime",
    "TSE2nd": "standard",
    "TSEStandard": "standard",
    "TSEMothers": "growth",
    "TSEGrowth": "growth",
    "TSEJASDAQ": "jasdaq",
}
# Market segment code (equities/master ``Mkt``) -> tier, before / from the restructuring.
_SEGMENT_TIER_BEFORE = {
    "0101": "prime",
    "0111": "prime",
    "0102": "standard",
    "0112": "standard",
    "0104": "growth",
    "0113": "growth",
    "0106": "jasdaq",
    "0107": "jasdaq",
}
_SEGMENT_TIER_FROM = {
    "0101": "prime",
    "0111": "prime",
    "0102": "standard",
    "0112": "standard",
    "0106": "standard",
    "0104": "growth",
    "0113": "growth",
    "0107": "growth",
}
MARKET_TIER = "prime"
# (feature stem, J-Quants prefix, description)
_INVESTORS = (
    ("frgn", "Frgn", "foreigners"),
    ("ind", "Ind", "individuals"),
    ("trstbnk", "TrstBnk", "trust banks"),
    ("invtr", "InvTr", "investment trusts"),
    ("prop", "Prop", "proprietary trading"),
)


def _tier_states(inputs: FeatureInputs) -> pl.LazyFrame:
    """Per (tier, publication date s): statistics of the weekly series as known on s."""
    fields = ["PubDate", "StDate", "EnDate", "Section", "TotTot", "FrgnTot"]
    fields += [f"{prefix}Bal" for _, prefix, _ in _INVESTORS]
    versions = (
        raw_source(inputs, "flow", "raw_trades_spec", fields)
        .with_columns(
            pl.col("Section")
            .replace_strict(_SECTION_TIER, default=None, return_dtype=pl.String)
            .alias("tier")
        )
        .filter(
            pl.col("tier").is_not_null()
            & pl.col("PubDate").is_not_null()
            & pl.col("EnDate").is_not_null()
        )
        .sort("tier", "EnDate", "StDate", "PubDate", maintain_order=True)
        .unique(subset=["tier", "StDate", "EnDate", "PubDate"], keep="last", maintain_order=True)
    )
    states = versions.select("tier", pl.col("PubDate").alias("s")).unique()
    known = (
        states.join(versions, on="tier")
        .filter((pl.col("PubDate") <= pl.col("s")) & (pl.col("EnDate") > pl.col("s") - _STATE_SPAN))
        .with_columns(
            pl.col("PubDate").min().over("tier", "s", "StDate", "EnDate").alias("first_pub")
        )
        .sort("tier", "s", "EnDate", "StDate", "PubDate", maintain_order=True)
        .unique(subset=["tier", "s", "StDate", "EnDate"], keep="last", maintain_order=True)
    )

    def newest(expr: pl.Expr) -> pl.Expr:
        return expr.sort_by("EnDate").last()

    def last_weeks(expr: pl.Expr, n: int) -> pl.Expr:
        return expr.sort_by("EnDate").tail(n)

    total = pl.col("TotTot")
    aggs = [
        newest(pl.col("first_pub")).alias("published"),
        common.safe_div(newest(pl.col("FrgnTot")), newest(total)).alias("flow_frgn_share"),
    ]
    for stem, prefix, _ in _INVESTORS:
        bal = pl.col(f"{prefix}Bal")
        ratio = common.safe_div(bal, total)
        recent = last_weeks(ratio, Z_WEEKS)
        aggs += [
            newest(ratio).alias(f"flow_{stem}_net"),
            pl.when(last_weeks(bal, SUM_WEEKS).count() == SUM_WEEKS)
            .then(
                common.safe_div(
                    last_weeks(bal, SUM_WEEKS).sum(), last_weeks(total, SUM_WEEKS).sum()
                )
            )
            .alias(f"flow_{stem}_net_4w"),
            pl.when(recent.count() == Z_WEEKS)
            .then(common.safe_div(newest(ratio) - recent.mean(), recent.std()))
            .alias(f"flow_{stem}_net_z52"),
        ]
    return known.group_by("tier", "s").agg(aggs)


_TIER_FEATURES = (
    *[
        spec
        for stem, _, who in _INVESTORS
        for spec in (
            FeatureSpec(
                f"flow_{stem}_net", f"Latest week's net buying of {who} / section total trading", 10
            ),
            FeatureSpec(
                f"flow_{stem}_net_4w",
                f"4-week net buying of {who} / 4-week section total trading",
                25,
            ),
            FeatureSpec(
                f"flow_{stem}_net_z52",
                f"Z-score of the weekly net-buying ratio of {who} over 52 weeks",
                270,
            ),
        )
    ],
    FeatureSpec(
        "flow_frgn_share", "Foreigners' share of the section's total trading, latest week", 10
    ),
    FeatureSpec(
        "flow_weeks_since_pub",
        "Weeks since the newest week of the section's series was published",
        10,
    ),
)
_MARKET_FEATURES = (
    (
        "flow_frgn_net",
        "flow_mkt_frgn_net",
        "Latest week's net buying of foreigners / total, prime tier (market-wide)",
    ),
    (
        "flow_frgn_net_4w",
        "flow_mkt_frgn_net_4w",
        "4-week net buying of foreigners / total, prime tier (market-wide)",
    ),
    (
        "flow_ind_net_4w",
        "flow_mkt_ind_net_4w",
        "4-week net buying of individuals / total, prime tier (market-wide)",
    ),
)
FEATURES = (
    *_TIER_FEATURES,
    *[FeatureSpec(name, desc, 25) for _, name, desc in _MARKET_FEATURES],
)
_STATE_COLUMNS = [spec.name for spec in _TIER_FEATURES if spec.name != "flow_weeks_since_pub"]


def _daily_by_tier(inputs: FeatureInputs) -> pl.LazyFrame:
    """``date, tier`` + the tier's features in force on each session (null when stale)."""
    dates = pl.LazyFrame({"date": list(inputs.calendar)}, schema={"date": pl.Date})
    tiers = pl.LazyFrame({"tier": sorted(set(_SECTION_TIER.values()))})
    daily = common.asof_published(
        dates.join(tiers, how="cross"), _tier_states(inputs), "s", by="tier"
    )
    age = (pl.col("date") - pl.col("published")).dt.total_days()
    fresh = age.is_not_null() & (age <= MAX_STALE_DAYS)
    return daily.select(
        "date",
        "tier",
        *[pl.when(fresh).then(pl.col(c)).alias(c) for c in _STATE_COLUMNS],
        pl.when(fresh).then(age / 7.0).alias("flow_weeks_since_pub"),
    )


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    panel = listed_info_asof(inputs, "flow", universe(inputs, "flow"), {"Mkt": "mkt"})
    segment = pl.col("mkt")
    tier = (
        pl.when(pl.col("date") >= MARKET_RESTRUCTURING)
        .then(segment.replace_strict(_SEGMENT_TIER_FROM, default=None, return_dtype=pl.String))
        .otherwise(
            segment.replace_strict(_SEGMENT_TIER_BEFORE, default=None, return_dtype=pl.String)
        )
    )
    daily = _daily_by_tier(inputs)
    market = daily.filter(pl.col("tier") == MARKET_TIER).select(
        "date", *[pl.col(src).alias(dst) for src, dst, _ in _MARKET_FEATURES]
    )
    frame = (
        panel.with_columns(tier.alias("tier"))
        .join(daily, on=["date", "tier"], how="left")
        .join(market, on="date", how="left")
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="flow",
    sources=("raw_daily_quotes", "raw_listed_info", "raw_trades_spec"),
    lookback=280,
    features=FEATURES,
    compute=compute,
    description=(
        "Weekly investor-type flows by market section (by PubDate, corrections from their own "
        "date): net buying of foreigners, individuals, trust banks, investment trusts and "
        "proprietary desks over total trading, 4-week sums, 52-week z-scores and staleness, "
        "for the stock's section and market-wide."
    ),
)
