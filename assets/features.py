"""Feature-family assets (group ``features``) and ``targets``: one asset per family.

Each reads the stored raw partitions of its sources over its lookback window (trading days),
computes only the requested dates, and writes one file per date. The family contract (exact
catalog columns and dtypes, no NaN/inf) is enforced by ``compute_family``; a family that
fails, fails its run with the family named.
"""

import datetime as dt

import polars as pl
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from assets.layout import TARGETS_ASSET
from assets.partitions import partition_dates, trading_day_lookback, trading_day_partitions
from atft_pipeline import calendar
from atft_pipeline.dataset.raw_frames import load_raw_window
from atft_pipeline.dataset.targets import compute_targets, last_traded_counts
from atft_pipeline.features.catalog import HORIZONS, TARGET_COLUMNS, FeatureFamily
from atft_pipeline.features.registry import compute_family
from resources.storage import StorageResource

FEATURES_GROUP = "features"
TARGET_REACH = 1 + max(HORIZONS)  # sessions after t that targets look at


def lookback_window(dates: list[dt.date], lookback: int, first_partition: dt.date) -> list[dt.date]:
    """Trading days from ``lookback`` sessions before the first date (not before the first
    partition) to the last date."""
    start = max(calendar.shift_trading_days(dates[0], -lookback), first_partition)
    return calendar.trading_days(start, dates[-1])


def by_date(frame: pl.DataFrame, dates: list[dt.date]) -> dict[str, pl.DataFrame]:
    """One frame per requested date (empty frames for dates without rows)."""
    parts = {d: g for (d,), g in frame.partition_by("date", as_dict=True).items()}
    return {d.isoformat(): parts.get(d, frame.clear()) for d in dates}


def build_feature_asset(family: FeatureFamily, start: dt.date) -> AssetsDefinition:
    @asset(
        name=family.asset,
        group_name=FEATURES_GROUP,
        partitions_def=trading_day_partitions(start),
        deps=[AssetDep(s, partition_mapping=trading_day_lookback(family.lookback)) for s in family.sources],
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description=family.description,
        metadata={"columns": len(family.features), "lookback_days": family.lookback},
    )
    def _feature_asset(context: AssetExecutionContext, storage: StorageResource):
        dates = partition_dates(context.partition_keys)
        window = lookback_window(dates, family.lookback, start)
        raw = load_raw_window(storage.store(), family.sources, window)
        frame = compute_family(family, raw, dates, window)
        null_share = frame.select(family.columns).null_count().sum_horizontal().item() / max(
            frame.height * len(family.columns), 1
        )
        return Output(
            by_date(frame, dates),
            metadata={
                "rows": frame.height,
                "columns": len(family.columns),
                "codes": frame["code"].n_unique(),
                "null_share": round(null_share, 4),
                "history_days": len(window),
            },
        )

    return _feature_asset


def build_targets_asset(start: dt.date) -> AssetsDefinition:
    @asset(
        name=TARGETS_ASSET,
        group_name=FEATURES_GROUP,
        partitions_def=trading_day_partitions(start),
        deps=[
            AssetDep(
                "raw_daily_quotes",
                partition_mapping=TimeWindowPartitionMapping(
                    start_offset=0, end_offset=TARGET_REACH, allow_nonexistent_upstream_partitions=True
                ),
            )
        ],
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description="target_{1,5,10,20}d = AdjC(t+1+h)/AdjC(t+1) - 1 (entry at the close of "
        "t+1), null until known; re-materialize recent partitions as the future arrives.",
    )
    def targets(context: AssetExecutionContext, storage: StorageResource):
        store = storage.store()
        dates = partition_dates(context.partition_keys)
        ahead = calendar.trading_days(dates[0], calendar.shift_trading_days(dates[-1], TARGET_REACH))
        stored = set(store.partitions("raw_daily_quotes"))
        window = [d for d in ahead if d.isoformat() in stored]
        flagged = compute_targets(store.scan("raw_daily_quotes", window), ahead, dates, flags=True).collect()
        frame = flagged.select("date", "code", *TARGET_COLUMNS)
        known = {c: int(frame[c].is_not_null().sum()) for c in TARGET_COLUMNS}
        # rows whose exit is the last traded close (delisted / halted inside the horizon)
        last_traded = {f"last_traded_{c}": n for c, n in last_traded_counts(flagged).items()}
        return Output(
            by_date(frame, dates),
            metadata={"rows": frame.height, **{f"known_{k}": v for k, v in known.items()}, **last_traded},
        )

    return targets
