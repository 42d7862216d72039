"""``ml_dataset`` (trading-day partitions) and ``normalization_stats`` (group ``dataset``)."""

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    asset,
)

from assets.partitions import partition_dates, trading_day_lookback, trading_day_partitions
from assets.stage_output import write_stage_output
from atft_pipeline.names import DATASET_ASSET, STATS_ASSET, TARGETS_ASSET
from atft_pipeline.stages import dataset as stages
from atft_pipeline.stages.dataset import CATALOG_CHECK, META_SOURCES
from atft_pipeline.stages.scope import PipelineScope
from resources.storage import StorageResource

DATASET_GROUP = "dataset"


def build_dataset_asset(scope: PipelineScope) -> AssetsDefinition:
    history = trading_day_lookback(scope.config.dataset.min_history_days)

    @asset(
        name=DATASET_ASSET,
        group_name=DATASET_GROUP,
        partitions_def=trading_day_partitions(scope.start, scope.last_partition),
        deps=[
            *scope.feature_assets,
            TARGETS_ASSET,
            *(AssetDep(source, partition_mapping=history) for source in META_SOURCES),
        ],
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"polars", "parquet"},
        description="meta + every enabled feature family + targets; columns fixed by the catalog.",
        metadata={
            "feature_columns": len(scope.feature_columns),
            "enabled_families": MetadataValue.json(list(scope.families)),
            "disabled_families": MetadataValue.json(scope.disabled),
            "catalog_hash": scope.catalog_hash,
        },
        check_specs=[AssetCheckSpec(CATALOG_CHECK, asset=DATASET_ASSET, blocking=True)],
    )
    def ml_dataset(context: AssetExecutionContext, storage: StorageResource):
        output = stages.ml_dataset(storage.store(), partition_dates(context.partition_keys), scope)
        return write_stage_output(context, storage, output)

    return ml_dataset


def build_stats_asset(scope: PipelineScope) -> AssetsDefinition:
    @asset(
        name=STATS_ASSET,
        group_name=DATASET_GROUP,
        deps=[DATASET_ASSET],
        kinds={"polars", "parquet"},
        description="Per-feature median, MAD·1.4826, clip bounds and null fraction over every "
        "row of the training window (exact; fit on train only).",
    )
    def normalization_stats(context: AssetExecutionContext, storage: StorageResource):
        return write_stage_output(context, storage, stages.normalization_stats(storage.store(), scope))

    return normalization_stats
