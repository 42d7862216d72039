"""``ml_dataset`` assembly: meta + every enabled family + targets, schema fixed by the catalog."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import polars as pl

from atft_pipeline.features.catalog import FeatureCatalog
from atft_pipeline.jquants.reference import SECTOR33_OTHER


class DatasetSchemaError(ValueError):
    """The assembled dataset does not have exactly the catalog's columns."""


# The stock universe (docs/evaluation.md): product categories 011 Domestic Stocks and
# 021 Foreign Stocks where the master has ``ProdCat``; otherwise a listing in a stock market
# segment (TOKYO PRO MARKET and "Others" excluded) with a real 33-sector code.
STOCK_PRODUCT_CATEGORIES: tuple[str, ...] = ("011", "021")
STOCK_MARKET_SEGMENTS: tuple[str, ...] = (
    "0101", "0102", "0104", "0106", "0107", "0111", "0112", "0113",
)
NO_MASTER_ROW, NOT_COMMON_STOCK = "no_master_row", "not_common_stock"


def _labelled_rows(
    bars: pl.LazyFrame,
    listed: pl.LazyFrame,
    dates: Sequence[dt.date],
    calendar: Sequence[dt.date],
) -> pl.LazyFrame:
    """Bar rows on ``dates`` with their master row in force (``_master``), their sessions of
    history and ``_excluded``: why the code is not a stock that day (null when it is)."""
    sessions = pl.LazyFrame({"Date": list(calendar)}, schema={"Date": pl.Date}).with_row_index("i")
    rows = (
        bars.select("Date", "Code", pl.col("C").is_not_null().alias("traded"))
        .join(sessions, on="Date", how="inner")
        .with_columns(
            (pl.col("i") - pl.col("i").min().over("Code")).alias("history")  # sessions since first bar
        )
        .filter(pl.col("Date").is_in(list(dates)))
    )
    has_category = "ProdCat" in listed.collect_schema().names()
    master = (
        listed.select(
            "Date", "Code", "S33", "Mkt",
            pl.col("ProdCat") if has_category else pl.lit(None, dtype=pl.String).alias("ProdCat"),
            pl.lit(True).alias("_master"),
        )
        .unique(subset=["Date", "Code"], keep="last")
        .sort("Date")
    )
    by_segment = pl.col("Mkt").is_in(STOCK_MARKET_SEGMENTS) & (
        pl.col("S33") != SECTOR33_OTHER
    ).fill_null(True)
    stock = (
        pl.when(pl.col("ProdCat").is_not_null())
        .then(pl.col("ProdCat").is_in(STOCK_PRODUCT_CATEGORIES))
        .otherwise(by_segment)
    )
    return (
        rows.sort("Date")
        # both sides sorted by Date just above; polars cannot verify it within by-groups
        .join_asof(master, on="Date", by="Code", strategy="backward", check_sortedness=False)
        .with_columns(
            pl.when(pl.col("_master").is_null())
            .then(pl.lit(NO_MASTER_ROW))
            .when(~stock.fill_null(False))
            .then(pl.lit(NOT_COMMON_STOCK))
            .alias("_excluded")
        )
    )


def build_meta(
    bars: pl.LazyFrame,
    listed: pl.LazyFrame,
    dates: Sequence[dt.date],
    calendar: Sequence[dt.date],
    min_history_days: int = 20,
) -> pl.LazyFrame:
    """``date, code, sector33, market_segment, universe`` for every stock's bar row on ``dates``.

    Only stocks as of each date enter: a code needs a master row dated on or before the date
    (bars alone — ETFs, funds — are not enough) whose product category, or before ``ProdCat``
    its market segment and sector, says common stock (``STOCK_PRODUCT_CATEGORIES``,
    ``STOCK_MARKET_SEGMENTS``). ``universe_exclusions`` counts what was left out. Sector and
    segment come from that master row in force on the date: history is never re-labelled with
    a later snapshot. A stock is in the universe when it traded that day and has at least
    ``min_history_days`` sessions of bars before it.
    """
    return (
        _labelled_rows(bars, listed, dates, calendar)
        .filter(pl.col("_excluded").is_null())
        .select(
            pl.col("Date").alias("date"),
            pl.col("Code").alias("code"),
            pl.col("S33").fill_null(SECTOR33_OTHER).alias("sector33"),
            pl.col("Mkt").alias("market_segment"),
            (pl.col("traded") & (pl.col("history") >= min_history_days)).alias("universe"),
        )
        .sort("date", "code")
    )


def universe_exclusions(
    bars: pl.LazyFrame,
    listed: pl.LazyFrame,
    dates: Sequence[dt.date],
    calendar: Sequence[dt.date],
) -> dict[str, dict[str, int]]:
    """What ``build_meta`` leaves out: per reason (``no_master_row``, ``not_common_stock``)
    the number of distinct codes and of (date, code) bar rows."""
    counts = (
        _labelled_rows(bars, listed, dates, calendar)
        .filter(pl.col("_excluded").is_not_null())
        .group_by("_excluded")
        .agg(pl.col("Code").n_unique().alias("codes"), pl.len().alias("rows"))
        .collect()
    )
    found = {r["_excluded"]: {"codes": r["codes"], "rows": r["rows"]} for r in counts.iter_rows(named=True)}
    return {reason: found.get(reason, {"codes": 0, "rows": 0}) for reason in (NO_MASTER_ROW, NOT_COMMON_STOCK)}


def assemble_dataset(
    meta: pl.LazyFrame | pl.DataFrame,
    families: Mapping[str, pl.DataFrame],
    targets: pl.LazyFrame | pl.DataFrame,
    catalog: FeatureCatalog,
    enabled: Sequence[str],
) -> pl.DataFrame:
    """Join meta, the enabled families and the targets on (date, code); exact catalog columns.

    A family missing from ``families`` or one extra family is an error naming it: the dataset
    never silently narrows or pads.
    """
    missing = [f for f in enabled if f not in families]
    extra = [f for f in families if f not in enabled]
    if missing or extra:
        raise DatasetSchemaError(
            f"ml_dataset: families missing {missing}, unexpected {extra} (enabled: {list(enabled)})"
        )
    frame = meta.lazy()
    for name in enabled:
        frame = frame.join(families[name].lazy(), on=["date", "code"], how="left")
    frame = frame.join(targets.lazy(), on=["date", "code"], how="left")
    expected = catalog.expected_columns(enabled)
    result = frame.collect()
    check_dataset_columns(result.columns, catalog, enabled)
    return result.select(expected).sort(["date", "code"])  # row order is part of the result


def check_dataset_columns(columns: Sequence[str], catalog: FeatureCatalog, enabled: Sequence[str]) -> None:
    """Raise unless ``columns`` are exactly the catalog's expected set for ``enabled``."""
    expected = catalog.expected_columns(enabled)
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    if missing or extra:
        owners = {c: fam.name for fam, spec in catalog.specs(enabled) for c in [spec.name]}
        by_family = sorted({owners.get(c, "meta/targets") for c in missing})
        raise DatasetSchemaError(
            f"ml_dataset columns differ from the catalog: {len(missing)} missing "
            f"(families {by_family}: {missing[:8]}), {len(extra)} unexpected ({extra[:8]})"
        )

