"""``ml_dataset`` assembly: meta + every enabled family + targets, schema fixed by the catalog."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import polars as pl

from atft_pipeline.features.catalog import FeatureCatalog
from atft_pipeline.jquants.reference import SECTOR33_OTHER


class DatasetSchemaError(ValueError):
    """The assembled dataset does not have exactly the catalog's columns."""


def build_meta(
    bars: pl.LazyFrame,
    listed: pl.LazyFrame,
    dates: Sequence[dt.date],
    calendar: Sequence[dt.date],
    min_history_days: int = 20,
) -> pl.LazyFrame:
    """``date, code, sector33, market_segment, universe`` for every bar row on ``dates``.

    Sector and segment come from the listed-info row in force on that date (the latest master
    row dated on or before it): history is never re-labelled with a later snapshot. A stock is
    in the universe when it traded that day and has at least ``min_history_days`` sessions of
    bars before it.
    """
    sessions = pl.LazyFrame({"Date": list(calendar)}, schema={"Date": pl.Date}).with_row_index("i")
    rows = (
        bars.select("Date", "Code", pl.col("C").is_not_null().alias("traded"))
        .join(sessions, on="Date", how="inner")
        .with_columns(
            (pl.col("i") - pl.col("i").min().over("Code")).alias("history")  # sessions since first bar
        )
        .filter(pl.col("Date").is_in(list(dates)))
    )
    master = (
        listed.select("Date", "Code", "S33", "Mkt")
        .unique(subset=["Date", "Code"], keep="last")
        .sort("Date")
    )
    return (
        rows.sort("Date")
        .join_asof(master, on="Date", by="Code", strategy="backward")
        .select(
            pl.col("Date").alias("date"),
            pl.col("Code").alias("code"),
            pl.col("S33").fill_null(SECTOR33_OTHER).alias("sector33"),
            pl.col("Mkt").alias("market_segment"),
            (pl.col("traded") & (pl.col("history") >= min_history_days)).alias("universe"),
        )
        .sort("date", "code")
    )


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

