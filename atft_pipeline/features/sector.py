"""Sector family: the stock against its 33-sector peers, sector momentum and market segment.

Membership is point-in-time: the sector and segment in force at t come from the latest
``raw_listed_info`` row with ``Date <= t`` (an as-of join on the master row's own date), so a
reclassification only moves the stock from the day the master shows it. Codes without a
master row yet, and the non-sector code ``9999`` (ETFs, REITs, ...), get null sector columns.

Which stocks a statistic averages over (nothing is excluded silently):
- sector-level columns (``sec_ret_*``, ``sec_vol_20d``, breadth, size, turnover, S17 and
  segment returns) are equal-weight over **all** members listed that day, the stock itself
  included, so every member of a sector sees the same value;
- ``sec_rel_ret_*`` subtracts the **leave-one-out** sector mean (the other members only), so
  a stock's own move does not dampen its relative return; null for a single-member sector;
- in-sector ranks and z-scores are over all members with a value (a rank needs the stock
  itself); ranks need ≥ 2 members, z-scores ≥ 3.
"""

from __future__ import annotations

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.market import (
    ANNUALIZE,
    RETURN_HORIZONS,
    SESSION,
    min_obs,
    stock_panel,
)
from atft_pipeline.features.common import raw_source
from atft_pipeline.jquants.reference import SECTOR33_OTHER

# TSE segments before and after the April 2022 reorganisation, grouped into the three tiers
# of the current structure (1st Section -> Prime, 2nd Section / JASDAQ Standard -> Standard,
# Mothers / JASDAQ Growth -> Growth) so the flags mean the same across the history.
# TOKYO PRO MARKET (0105) and "Others" (0109) belong to no tier.
SEGMENT_TIERS: dict[str, str] = {
    "0101": "prime",
    "0111": "prime",
    "0102": "standard",
    "0106": "standard",
    "0112": "standard",
    "0104": "growth",
    "0107": "growth",
    "0113": "growth",
}
TIERS = ("prime", "standard", "growth")

FAMILY_NAME = "sector"
MASTER_COLUMNS = ("Date", "Code", "S33", "S17", "Mkt")
RANK_MIN_MEMBERS = 2
ZSCORE_MIN_MEMBERS = 3
TURNOVER_WINDOW = 20


def sector_membership(inputs: FeatureInputs, frame: pl.LazyFrame, family: str) -> pl.LazyFrame:
    """Attach ``sector33``, ``sector17`` and ``segment_tier`` in force at each row's date.

    ``frame`` needs ``code`` and ``date`` (the result is in date order). The master row used
    is the latest one with ``Date <= date`` (``common.asof_published``).
    """
    in_a_sector = pl.col("S33").is_in(["", SECTOR33_OTHER]).not_()
    master = raw_source(inputs, family, "raw_listed_info", MASTER_COLUMNS).select(
        pl.col("Code").alias("code"),
        pl.col("Date").alias("published"),
        pl.when(in_a_sector).then(pl.col("S33")).alias("sector33"),
        pl.when(in_a_sector).then(pl.col("S17")).alias("sector17"),
        pl.col("Mkt").replace_strict(SEGMENT_TIERS, default=None, return_dtype=pl.String).alias(
            "segment_tier"
        ),
    )
    return common.asof_published(frame, master, "published").drop("published")


def _group_mean_return(
    frame: pl.LazyFrame, key: str, horizons: tuple[int, ...], prefix: str
) -> pl.LazyFrame:
    """Equal-weight mean of the members' n-session returns per (date, ``key``)."""
    return (
        frame.filter(pl.col(key).is_not_null())
        .group_by("date", key)
        .agg(pl.col(f"ret_{n}d").mean().alias(f"{prefix}_ret_{n}d") for n in horizons)
    )


def _in_sector_rank(col: str) -> pl.Expr:
    """Percentile rank in [0, 1] among the sector's members with a value (average ties)."""
    group = ["date", "sector33"]
    count = pl.col(col).count().over(group)
    rank = common.rank_average(pl.col(col)).over(group)
    return (
        pl.when(pl.col("sector33").is_not_null() & (count >= RANK_MIN_MEMBERS))
        .then((rank - 1.0) / (count - 1.0))
        .otherwise(None)
    )


def _in_sector_z(col: str) -> pl.Expr:
    group = ["date", "sector33"]
    count = pl.col(col).count().over(group)
    deviation = pl.col(col) - pl.col(col).mean().over(group)
    z = common.safe_div(deviation, pl.col(col).std().over(group))
    return pl.when(pl.col("sector33").is_not_null() & (count >= ZSCORE_MIN_MEMBERS)).then(z)


def _leave_one_out_mean(col: str) -> pl.Expr:
    """Mean of ``col`` over the other members of the stock's sector that day."""
    group = ["date", "sector33"]
    total = pl.col(col).sum().over(group)
    count = pl.col(col).count().over(group)
    return (
        pl.when(pl.col("sector33").is_not_null() & pl.col(col).is_not_null() & (count >= 2))
        .then((total - pl.col(col)) / (count - 1.0))
        .otherwise(None)
    )


_F = FeatureSpec
_INT = pl.Int8
_RANKED = {
    "ret_1d": ("sec_rank_ret_1d", "sec_z_ret_1d", "1-session return", 1),
    "ret_5d": ("sec_rank_ret_5d", "sec_z_ret_5d", "5-session return", 5),
    "ret_20d": ("sec_rank_ret_20d", "sec_z_ret_20d", "20-session return", 20),
    "ret_60d": ("sec_rank_ret_60d", "sec_z_ret_60d", "60-session return", 60),
    "volume_ratio": ("sec_rank_volume_ratio", "sec_z_volume_ratio", "volume ratio", 21),
    "vol_20d": ("sec_rank_vol_20d", "sec_z_vol_20d", "20-session realized vol", 20),
}

FEATURES: tuple[FeatureSpec, ...] = (
    *(_F(f"sec_ret_{n}d", f"equal-weight S33 sector return over {n} sessions (all members)", n)
      for n in RETURN_HORIZONS),
    _F("sec_mom_rank_20d", "percentile rank of the sector's 20-session return among sectors", 20),
    _F("sec_mom_rank_60d", "percentile rank of the sector's 60-session return among sectors", 60),
    _F("sec_vol_20d", "annualized std of the sector's daily equal-weight return, 20 sessions", 21),
    *(_F(f"sec_rel_ret_{n}d", f"{n}-session return minus the leave-one-out sector mean", n)
      for n in RETURN_HORIZONS),
    *(spec for col, (rank, z, what, lb) in _RANKED.items() for spec in (
        _F(rank, f"in-sector percentile rank of the {what}", lb),
        _F(z, f"in-sector z-score of the {what}", lb),
    )),
    _F("sec_breadth_up", "share of sector members up today", 1),
    _F("sec_breadth_sma20", "share of sector members above their own 20-session SMA", 20),
    _F("sec_size", "number of sector members listed today", 0),
    _F("sec_rel_turnover", "sector share of market turnover over its previous 20-session mean",
       TURNOVER_WINDOW),
    _F("sec_turnover_share", "stock turnover as a share of its sector's turnover today", 0),
    _F("sec_s17_ret_5d", "equal-weight S17 sector return over 5 sessions", 5),
    _F("sec_s17_ret_20d", "equal-weight S17 sector return over 20 sessions", 20),
    *(_F(f"sec_seg_{tier}", f"1 if the market segment is in the {tier} tier", 0, _INT)
      for tier in TIERS),
    _F("sec_seg_ret_5d", "equal-weight return of the stock's segment tier over 5 sessions", 5),
    _F("sec_seg_ret_20d", "equal-weight return of the stock's segment tier over 20 sessions", 20),
)


def _by_sector(expr: pl.Expr) -> pl.Expr:
    return expr.over("sector33", order_by=SESSION)


def _percentile_among_sectors(col: str) -> pl.Expr:
    count = pl.col(col).count().over(SESSION)
    rank = common.rank_average(pl.col(col)).over(SESSION)
    return pl.when(count >= RANK_MIN_MEMBERS).then((rank - 1.0) / (count - 1.0)).otherwise(None)


def _sector_level(members: pl.LazyFrame) -> pl.LazyFrame:
    """Per (session, sector33): returns, momentum ranks, vol, breadth, size, turnover.

    The daily aggregates are put on the full (session × sector) grid before the rolling
    statistics, so a session where a sector has no listed member is a gap in its window
    rather than a silently longer window.
    """
    ret = pl.col("ret_1d")
    with_sector = members.filter(pl.col("sector33").is_not_null())
    daily = with_sector.group_by(SESSION, "sector33").agg(
        *(pl.col(f"ret_{n}d").mean().alias(f"sec_ret_{n}d") for n in RETURN_HORIZONS),
        common.safe_div((ret > 0).sum().cast(pl.Float64), ret.count().cast(pl.Float64)).alias(
            "sec_breadth_up"
        ),
        pl.col("above_sma20").cast(pl.Float64).mean().alias("sec_breadth_sma20"),
        pl.len().cast(pl.Float64).alias("sec_size"),
        pl.col("turnover").sum().alias("_sec_turnover"),
    )
    market_turnover = members.group_by(SESSION).agg(
        pl.col("turnover").sum().alias("_mkt_turnover")
    )
    grid = common.session_span(members, SESSION).join(
        with_sector.select("sector33").unique(), how="cross"
    )
    share = pl.col("_turnover_share")
    previous_share = share.shift(1).rolling_mean(
        TURNOVER_WINDOW, min_samples=min_obs(TURNOVER_WINDOW)
    )
    sector_vol = pl.col("sec_ret_1d").rolling_std(20, min_samples=min_obs(20)) * ANNUALIZE
    return (
        grid.join(daily, on=[SESSION, "sector33"], how="left")
        .join(market_turnover, on=SESSION, how="left")
        .with_columns(
            common.safe_div(pl.col("_sec_turnover"), pl.col("_mkt_turnover")).alias(
                "_turnover_share"
            )
        )
        .with_columns(
            _percentile_among_sectors("sec_ret_20d").alias("sec_mom_rank_20d"),
            _percentile_among_sectors("sec_ret_60d").alias("sec_mom_rank_60d"),
            _by_sector(sector_vol).alias("sec_vol_20d"),
            common.safe_div(share, _by_sector(previous_share)).alias("sec_rel_turnover"),
        )
        .drop("_mkt_turnover", "_turnover_share")
    )


def compute_sector(inputs: FeatureInputs) -> pl.LazyFrame:
    # materialized once: stock-level, sector-level, S17 and segment statistics all read it
    members = (
        sector_membership(
            inputs, stock_panel(inputs, FAMILY_NAME).filter(pl.col("listed")), FAMILY_NAME
        )
        .collect()
        .lazy()
    )
    stock_level = members.with_columns(
        *(
            (pl.col(f"ret_{n}d") - _leave_one_out_mean(f"ret_{n}d")).alias(f"sec_rel_ret_{n}d")
            for n in RETURN_HORIZONS
        ),
        *(
            expr
            for col, (rank, z, _, _) in _RANKED.items()
            for expr in (_in_sector_rank(col).alias(rank), _in_sector_z(col).alias(z))
        ),
        *(
            pl.when(pl.col("segment_tier").is_not_null())
            .then(pl.col("segment_tier") == tier)
            .cast(_INT)
            .alias(f"sec_seg_{tier}")
            for tier in TIERS
        ),
    )
    frame = (
        stock_level.join(_sector_level(members), on=[SESSION, "sector33"], how="left")
        .with_columns(
            common.safe_div(pl.col("turnover"), pl.col("_sec_turnover")).alias(
                "sec_turnover_share"
            )
        )
        .join(
            _group_mean_return(members, "sector17", (5, 20), "sec_s17"),
            on=["date", "sector17"],
            how="left",
        )
        .join(
            _group_mean_return(members, "segment_tier", (5, 20), "sec_seg"),
            on=["date", "segment_tier"],
            how="left",
        )
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name=FAMILY_NAME,
    sources=("raw_daily_quotes", "raw_listed_info"),
    lookback=60,
    features=FEATURES,
    compute=compute_sector,
    description="point-in-time S33/S17 sector and segment returns, relative returns and ranks",
)
