"""Raw J-Quants sources: one trading-day-partitioned asset per source (group ``raw``).

Each partition holds exactly what the API returns for that date. A single-run backfill fetches
its whole range with the client's bounded concurrency and writes one file per partition; the
``jquants`` pool caps simultaneous API-calling steps across runs.
"""

import datetime as dt

from dagster import AssetCheckSpec, AssetExecutionContext, AssetsDefinition, BackfillPolicy, asset

from assets.partitions import partition_dates, trading_day_partitions
from assets.stage_output import write_stage_output
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.sources import RAW_SOURCES, RawSource
from atft_pipeline.names import CALENDAR_ASSET
from atft_pipeline.stages import raw as stages
from atft_pipeline.stages.raw import SCHEMA_CHECK, WARNINGS_CHECK
from resources.jquants import JQuantsResource
from resources.storage import StorageResource

RAW_GROUP = "raw"
JQUANTS_POOL = "jquants"


def build_raw_asset(source: RawSource, start: dt.date, plan: Plan, last: dt.date | None = None) -> AssetsDefinition:
    entitled = plan.covers(source.plan)

    @asset(
        name=source.asset,
        group_name=RAW_GROUP,
        partitions_def=trading_day_partitions(start, last),
        backfill_policy=BackfillPolicy.single_run(),
        pool=JQUANTS_POOL,
        kinds={"polars", "parquet"},
        description=f"{source.endpoint.description} Partition = {source.date_semantics}.",
        metadata={
            "endpoint": f"/{source.endpoint.path}",
            "min_plan": source.plan.value,
            "entitled": entitled,
            **({"disabled_reason": stages.entitlement_note(source, plan)} if not entitled else {}),
        },
        check_specs=[
            AssetCheckSpec(
                SCHEMA_CHECK,
                asset=source.asset,
                blocking=True,
                description="pandera schema: types, unique keys, domain rules, partition date",
            ),
            AssetCheckSpec(
                WARNINGS_CHECK,
                asset=source.asset,
                description="non-blocking data-quality rules (code tables, identities, ranges)",
            ),
        ],
    )
    def _raw_asset(context: AssetExecutionContext, jquants: JQuantsResource, storage: StorageResource):
        days = partition_dates(context.partition_keys)
        output = stages.raw_source(storage.store(), jquants.client, source, days)
        return write_stage_output(context, storage, output)

    return _raw_asset


def build_calendar_asset() -> AssetsDefinition:
    @asset(
        name=CALENDAR_ASSET,
        group_name=RAW_GROUP,
        pool=JQUANTS_POOL,
        kinds={"polars", "parquet"},
        description=ENDPOINTS["markets/calendar"].description
        + " Checked against the XTKS exchange calendar.",
        check_specs=[AssetCheckSpec(SCHEMA_CHECK, asset=CALENDAR_ASSET, blocking=True)],
    )
    def raw_trading_calendar(
        context: AssetExecutionContext, jquants: JQuantsResource, storage: StorageResource
    ):
        return write_stage_output(context, storage, stages.trading_calendar(storage.store(), jquants.client))

    return raw_trading_calendar


def build_raw_assets(start: dt.date, plan: Plan, last: dt.date | None = None) -> list[AssetsDefinition]:
    return [build_raw_asset(s, start, plan, last) for s in RAW_SOURCES.values()] + [build_calendar_asset()]
