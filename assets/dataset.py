"""``ml_dataset`` (trading-day partitions) and ``normalization_stats`` (group ``dataset``)."""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from assets.features import by_date, lookback_window
from assets.layout import DATASET_ASSET, STATS_ASSET, TARGETS_ASSET
from assets.partitions import partition_dates, trading_day_lookback, trading_day_partitions
from atft_pipeline.config import PipelineConfig
from atft_pipeline.dataset.assemble import assemble_dataset, build_meta, universe_exclusions
from atft_pipeline.dataset.normalization import compute_normalization_stats, stats_hash
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.features.catalog import FeatureCatalog
from resources.storage import StorageResource

DATASET_GROUP = "dataset"
CATALOG_CHECK = "columns_equal_catalog"


def build_dataset_asset(
    catalog: FeatureCatalog, enabled: list[str], disabled: dict[str, str], start: dt.date,
    config: PipelineConfig,
) -> AssetsDefinition:
    history = config.dataset.min_history_days
    families = [catalog.family(n) for n in enabled]
    expected = catalog.expected_columns(enabled)

    @asset(
        name=DATASET_ASSET,
        group_name=DATASET_GROUP,
        partitions_def=trading_day_partitions(start),
        deps=[
            *(f.asset for f in families),
            TARGETS_ASSET,
            AssetDep("raw_daily_quotes", partition_mapping=trading_day_lookback(history)),
            AssetDep("raw_listed_info", partition_mapping=trading_day_lookback(history)),
        ],
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description="meta + every enabled feature family + targets; columns fixed by the catalog.",
        metadata={
            "feature_columns": len(catalog.feature_columns(enabled)),
            "enabled_families": MetadataValue.json(enabled),
            "disabled_families": MetadataValue.json(disabled),
            "catalog_hash": catalog.hash(enabled),
        },
        check_specs=[AssetCheckSpec(CATALOG_CHECK, asset=DATASET_ASSET, blocking=True)],
    )
    def ml_dataset(context: AssetExecutionContext, storage: StorageResource):
        store = storage.store()
        dates = partition_dates(context.partition_keys)
        keys = [d.isoformat() for d in dates]
        window = lookback_window(dates, history, start)
        meta = build_meta(
            store.scan("raw_daily_quotes", window), store.scan("raw_listed_info", window),
            dates, window, history,
        )
        excluded = universe_exclusions(
            store.scan("raw_daily_quotes", window), store.scan("raw_listed_info", window), dates, window
        )
        frames = {f.name: store.scan(f.asset, keys).collect() for f in families}
        dataset = assemble_dataset(meta, frames, store.scan(TARGETS_ASSET, keys), catalog, enabled)
        yield Output(
            by_date(dataset, dates),
            metadata={
                "rows": dataset.height,
                "columns": dataset.width,
                "feature_columns": len(catalog.feature_columns(enabled)),
                "universe_rows": int(dataset["universe"].sum()),
                "excluded_codes": MetadataValue.json(excluded),  # not stocks as of the date
                "catalog_hash": catalog.hash(enabled),
            },
        )
        yield AssetCheckResult(
            check_name=CATALOG_CHECK,
            passed=dataset.columns == expected,
            metadata={"columns": dataset.width, "expected": len(expected)},
        )

    return ml_dataset


def resolve_splits(config: PipelineConfig, days: list[dt.date]) -> SplitConfig:
    return config.splits.resolve(days)


def build_stats_asset(catalog: FeatureCatalog, enabled: list[str], config: PipelineConfig) -> AssetsDefinition:
    columns = catalog.feature_columns(enabled)

    @asset(
        name=STATS_ASSET,
        group_name=DATASET_GROUP,
        deps=[DATASET_ASSET],
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description="Per-feature median, MAD·1.4826, clip bounds and null fraction over every "
        "row of the training window (exact; fit on train only).",
    )
    def normalization_stats(context: AssetExecutionContext, storage: StorageResource):
        store = storage.store()
        stored = [dt.date.fromisoformat(k) for k in store.partitions(DATASET_ASSET)]
        if not stored:
            raise Failure("normalization_stats: ml_dataset has no stored partitions")
        splits = resolve_splits(config, stored)
        train_keys = [d.isoformat() for d in stored if splits.train.contains(d)]
        rows = store.scan(DATASET_ASSET, train_keys)
        stats = compute_normalization_stats(rows.filter("universe"), columns)
        n_rows = int(stats["rows"][0]) if stats.height else 0
        return Output(
            stats,
            metadata={
                "train_start": str(splits.train.start),
                "train_end": str(splits.train.end),
                "train_dates": len(train_keys),
                "row_count": n_rows,
                "features": stats.height,
                "stats_hash": stats_hash(stats),
            },
        )

    return normalization_stats
