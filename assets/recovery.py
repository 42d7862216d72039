"""Missing-cache recovery: re-materialize exactly the partitions whose stored files are gone.

Dagster's materialization records say which partitions exist; the storage says which files
do. A partition recorded as materialized whose file is missing or unreadable gets one run of
that asset and that partition only — never a re-download of other sources.
"""


from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from atft_pipeline.storage import lost_partitions
from resources.storage import StorageResource

RECOVERY_SENSOR = "missing_partition_recovery"


def build_recovery_sensor(asset_names: list[str], interval_s: int):
    @sensor(
        name=RECOVERY_SENSOR,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=[AssetKey(a) for a in asset_names],
        description="Requests a run for each materialized partition whose Parquet file is "
        "missing or unreadable (that asset, that partition only).",
    )
    def missing_partition_recovery(context: SensorEvaluationContext, storage: StorageResource):
        store = storage.store()
        requests: list[RunRequest] = []
        for name in asset_names:
            key = AssetKey(name)
            recorded = context.instance.get_materialized_partitions(key)
            for partition in lost_partitions(store, name, recorded):
                requests.append(
                    RunRequest(
                        run_key=f"recover:{name}:{partition}:{_latest_storage_id(context, key, partition)}",
                        asset_selection=[key],
                        partition_key=partition,
                        tags={"atft/reason": "missing-file-recovery"},
                    )
                )
        if not requests:
            return SkipReason("every materialized partition has a readable file")
        context.log.info(f"requesting {len(requests)} partition re-materializations")
        return SensorResult(run_requests=requests)

    return missing_partition_recovery


def _latest_storage_id(context: SensorEvaluationContext, key: AssetKey, partition: str) -> int:
    """Ties a request to the materialization it replaces, so a later loss is requested again."""
    result = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    return result.records[0].storage_id if result.records else 0
