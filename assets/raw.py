"""Raw J-Quants sources: one trading-day-partitioned asset per source (group ``raw``).

Each partition holds exactly what the API returns for that date. A single-run backfill fetches
its whole range with the client's bounded concurrency and writes one file per partition; the
``jquants`` pool caps simultaneous API-calling steps across runs.
"""


import time

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from assets.layout import CALENDAR_ASSET
from assets.partitions import partition_dates, trading_day_partitions
from atft_pipeline import calendar
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.sources import RAW_SOURCES, RawSource
from atft_pipeline.validation import validate_raw
from atft_pipeline.validation.gate import gate_raw_partitions
from resources.jquants import JQuantsResource
from resources.storage import StorageResource

RAW_GROUP = "raw"
JQUANTS_POOL = "jquants"
SCHEMA_CHECK = "raw_schema"
WARNINGS_CHECK = "raw_data_warnings"


def _entitlement_note(source: RawSource, plan: Plan) -> str:
    return (
        f"{source.asset} is disabled: plan '{plan.value}' does not include "
        f"/{source.endpoint.path} (needs '{source.plan.value}' or above)"
    )


def build_raw_asset(source: RawSource, start, plan: Plan) -> AssetsDefinition:
    entitled = plan.covers(source.plan)

    @asset(
        name=source.asset,
        group_name=RAW_GROUP,
        partitions_def=trading_day_partitions(start),
        backfill_policy=BackfillPolicy.single_run(),
        pool=JQUANTS_POOL,
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description=f"{source.endpoint.description} Partition = {source.date_semantics}.",
        metadata={
            "endpoint": f"/{source.endpoint.path}",
            "min_plan": source.plan.value,
            "entitled": entitled,
            **({"disabled_reason": _entitlement_note(source, plan)} if not entitled else {}),
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
    def _raw_asset(
        context: AssetExecutionContext, jquants: JQuantsResource, storage: StorageResource
    ):
        if not entitled or not jquants.plan_enum.covers(source.plan):
            raise Failure(_entitlement_note(source, jquants.plan_enum))
        days = partition_dates(context.partition_keys)
        started = time.perf_counter()
        frames, stats = jquants.fetch_days(source, days)
        duration = time.perf_counter() - started
        # --- validate before writing: blocked days are quarantined, never stored ---
        store = storage.store()
        gate = gate_raw_partitions(store, source.asset, frames, frames.failed, jquants.plan_enum)
        if gate.blocked:
            for day, frame in gate.accepted.items():
                store.write(source.asset, day, frame)
                context.log_event(
                    AssetMaterialization(source.asset, partition=day.isoformat(), metadata={"rows": frame.height})
                )
            raise Failure(
                f"{source.asset}: {len(gate.blocked)} of {len(days)} partition(s) blocked and "
                f"quarantined ({len(gate.accepted)} stored):\n{gate.describe_blocked()}"
            )
        # --- end of validate-before-write ---
        results = gate.results
        failed = [r for r in results if not r.passed]
        all_rows = pl.concat(list(frames.values()), how="vertical")
        yield Output(
            {day.isoformat(): frame for day, frame in frames.items()},
            metadata={
                "partitions": len(days),
                "rows": all_rows.height,
                "codes": _n_codes(all_rows),
                "api_requests": stats.total_requests,
                "api_retries": stats.retries,
                "api_rate_limited": stats.rate_limited,
                "api_bytes": stats.bytes,
                # response fields the registry does not know (the API grew them): reported
                "api_unknown_fields": ", ".join(unknown) if (
                    unknown := stats.unknown_fields.get(source.endpoint.path)
                ) else "none",
                "duration_s": round(duration, 3),
                "plan": jquants.plan_enum.value,
                "endpoint": f"/{source.endpoint.path}",
                "sandbox": jquants.is_sandbox,
            },
        )
        yield AssetCheckResult(
            check_name=SCHEMA_CHECK,
            asset_key=source.asset,
            passed=not failed,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "partitions_checked": len(results),
                "partitions_failed": len(failed),
                "failures": MetadataValue.md("\n".join(f"- {r.message}" for r in failed[:20]) or "none"),
            },
        )
        warned = [r for r in results if r.warnings]
        yield AssetCheckResult(
            check_name=WARNINGS_CHECK,
            asset_key=source.asset,
            passed=not warned,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "partitions_with_warnings": len(warned),
                "warnings": MetadataValue.md("\n".join(f"- {r.message}" for r in warned[:20]) or "none"),
            },
        )

    return _raw_asset


def _n_codes(frame: pl.DataFrame) -> int:
    return frame["Code"].n_unique() if "Code" in frame.columns else 0


def build_calendar_asset() -> AssetsDefinition:
    endpoint = ENDPOINTS["markets/calendar"]

    @asset(
        name=CALENDAR_ASSET,
        group_name=RAW_GROUP,
        pool=JQUANTS_POOL,
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description=endpoint.description + " Checked against the XTKS exchange calendar.",
        check_specs=[AssetCheckSpec(SCHEMA_CHECK, asset=CALENDAR_ASSET, blocking=True)],
    )
    def raw_trading_calendar(
        context: AssetExecutionContext, jquants: JQuantsResource, storage: StorageResource
    ):
        frame, stats = jquants.fetch_calendar()
        result = validate_raw(CALENDAR_ASSET, None, frame, jquants.plan_enum)
        # --- validate before writing: a failing calendar is quarantined, never stored ---
        if not result.passed:
            storage.store().quarantine(CALENDAR_ASSET, None, frame, result.message)
            raise Failure(result.message)
        # --- end of validate-before-write ---
        mismatches = calendar.api_calendar_mismatches(frame)
        yield Output(
            frame,
            metadata={
                "rows": frame.height,
                "first": str(frame["Date"].min()),
                "last": str(frame["Date"].max()),
                "api_requests": stats.total_requests,
                "xtks_mismatches": len(mismatches),
            },
        )
        yield AssetCheckResult(
            check_name=SCHEMA_CHECK,
            asset_key=CALENDAR_ASSET,
            passed=result.passed,
            metadata={"message": result.message or "ok", "xtks_mismatches": str(mismatches[:10])},
        )

    return raw_trading_calendar


def build_raw_assets(start, plan: Plan) -> list[AssetsDefinition]:
    return [build_raw_asset(s, start, plan) for s in RAW_SOURCES.values()] + [build_calendar_asset()]
