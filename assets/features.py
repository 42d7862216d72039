"""Feature-family assets (group ``features``) and ``targets``: one asset per family.

Each reads the stored raw partitions of its sources over its lookback window (trading days),
computes only the requested dates, and writes one file per date. The family contract (exact
catalog columns and dtypes, no NaN/inf) is enforced by ``compute_family``; a family that
fails, fails its run with the family named.
"""

import datetime as dt

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    TimeWindowPartitionMapping,
    asset,
)

from assets.partitions import partition_dates, trading_day_lookback, trading_day_partitions
from assets.stage_output import write_stage_output
from atft_pipeline.features.catalog import FeatureFamily
from atft_pipeline.names import TARGETS_ASSET
from atft_pipeline.stages import features as stages
from resources.storage import StorageResource

FEATURES_GROUP = "features"


def build_feature_asset(family: FeatureFamily, start: dt.date, last: dt.date | None = None) -> AssetsDefinition:
    @asset(
        name=family.asset,
        group_name=FEATURES_GROUP,
        partitions_def=trading_day_partitions(start, last),
        deps=[AssetDep(s, partition_mapping=trading_day_lookback(family.history)) for s in family.sources],
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"polars", "parquet"},
        description=f"{family.description} A partition reads up to {family.history} sessions "
        f"before it of {', '.join(family.sources)}: materialize those from {family.history} "
        "sessions earlier (`atft run` does) or the first partitions see less history.",
        metadata={
            "columns": len(family.features),
            "lookback_days": family.lookback,
            "history_days": family.history,
        },
    )
    def _feature_asset(context: AssetExecutionContext, storage: StorageResource):
        dates = partition_dates(context.partition_keys)
        output = stages.feature_family(storage.store(), family, dates, start)
        return write_stage_output(context, storage, output)

    return _feature_asset


def build_targets_asset(start: dt.date, last: dt.date | None = None) -> AssetsDefinition:
    @asset(
        name=TARGETS_ASSET,
        group_name=FEATURES_GROUP,
        partitions_def=trading_day_partitions(start, last),
        deps=[
            AssetDep(
                stages.TARGETS_SOURCE,
                partition_mapping=TimeWindowPartitionMapping(
                    start_offset=0, end_offset=stages.TARGET_REACH, allow_nonexistent_upstream_partitions=True
                ),
            )
        ],
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"polars", "parquet"},
        description="target_{1,5,10,20}d = AdjC(t+1+h)/AdjC(t+1) - 1 (entry at the close of "
        "t+1), null until known; re-materialize recent partitions as the future arrives.",
    )
    def targets(context: AssetExecutionContext, storage: StorageResource):
        output = stages.targets(storage.store(), partition_dates(context.partition_keys))
        return write_stage_output(context, storage, output)

    return targets
