"""Raw-source stages: fetch a source's trading days (or the calendar) and validate them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.jquants.client import ClientConfig, ClientStats, JQuantsClient
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.sources import RawSource, fetch_raw_days
from atft_pipeline.names import CALENDAR_ASSET
from atft_pipeline.stages import CheckOutcome, Markdown, StageOutput
from atft_pipeline.storage import PartitionStore
from atft_pipeline.validation import validate_raw
from atft_pipeline.validation.gate import gate_raw_partitions

SCHEMA_CHECK = "raw_schema"
WARNINGS_CHECK = "raw_data_warnings"
_LISTED_MESSAGES = 20


class NotEntitledError(RuntimeError):
    """The plan does not include the source's endpoint; the message names both."""


def entitlement_note(source: RawSource, plan: Plan) -> str:
    return (
        f"{source.asset} is disabled: plan '{plan.value}' does not include "
        f"/{source.endpoint.path} (needs '{source.plan.value}' or above)"
    )


def raw_source(
    store: PartitionStore, client: ClientConfig, source: RawSource, days: list[dt.date]
) -> StageOutput:
    """Every requested day of ``source`` in one client session, validated per partition
    before anything is written: a day whose fetch failed or whose data fails a blocking check
    is quarantined in ``store`` and left out of the output (``StageOutput.blocked``)."""
    if not client.plan.covers(source.plan):
        raise NotEntitledError(entitlement_note(source, client.plan))
    started = time.perf_counter()

    async def fetch() -> tuple[dict[dt.date, pl.DataFrame], ClientStats]:
        async with JQuantsClient(client) as session:
            return await fetch_raw_days(session, source, days), session.stats

    frames, stats = asyncio.run(fetch())
    duration = time.perf_counter() - started
    gate = gate_raw_partitions(store, source.asset, frames, frames.failed, client.plan)
    results = gate.results
    failed = [r for r in results if not r.passed]
    warned = [r for r in results if r.warnings]
    all_rows = pl.concat(list(frames.values()), how="vertical") if frames else pl.DataFrame()
    unknown = stats.unknown_fields.get(source.endpoint.path)
    return StageOutput(
        {day.isoformat(): frame for day, frame in gate.accepted.items()},
        metadata={
            "partitions": len(days),
            "rows": all_rows.height,
            "codes": all_rows["Code"].n_unique() if "Code" in all_rows.columns else 0,
            **_api_metadata(stats),
            # response fields the registry does not know (the API grew them): reported
            "api_unknown_fields": ", ".join(unknown) if unknown else "none",
            "duration_s": round(duration, 3),
            "plan": client.plan.value,
            "endpoint": f"/{source.endpoint.path}",
        },
        checks={
            SCHEMA_CHECK: CheckOutcome(
                passed=not failed,
                metadata={
                    "partitions_checked": len(results),
                    "partitions_failed": len(failed),
                    "failures": _listed(r.message for r in failed),
                },
            ),
            WARNINGS_CHECK: CheckOutcome(
                passed=not warned,
                metadata={
                    "partitions_with_warnings": len(warned),
                    "warnings": _listed(r.message for r in warned),
                },
                warn_only=True,
            ),
        },
        blocked=(
            f"{source.asset}: {len(gate.blocked)} of {len(days)} partition(s) blocked and "
            f"quarantined ({len(gate.accepted)} stored):\n{gate.describe_blocked()}"
            if gate.blocked
            else None
        ),
    )


def trading_calendar(store: PartitionStore, client: ClientConfig) -> StageOutput:
    """``/markets/calendar``, validated and compared with the XTKS exchange calendar."""

    async def fetch() -> tuple[pl.DataFrame, ClientStats]:
        async with JQuantsClient(client) as session:
            return await session.get(ENDPOINTS["markets/calendar"]), session.stats

    frame, stats = asyncio.run(fetch())
    result = validate_raw(CALENDAR_ASSET, None, frame, client.plan)
    if not result.passed:  # validate before writing: a failing calendar is never stored
        store.quarantine(CALENDAR_ASSET, None, frame, result.message)
        raise ValueError(result.message)
    mismatches = calendar.api_calendar_mismatches(frame)
    return StageOutput(
        frame,
        metadata={
            "rows": frame.height,
            "first": str(frame["Date"].min()),
            "last": str(frame["Date"].max()),
            "api_requests": stats.total_requests,
            "xtks_mismatches": len(mismatches),
        },
        checks={
            SCHEMA_CHECK: CheckOutcome(
                passed=result.passed,
                metadata={"message": result.message or "ok", "xtks_mismatches": str(mismatches[:10])},
            )
        },
    )


def _api_metadata(stats: ClientStats) -> dict[str, int]:
    return {
        "api_requests": stats.total_requests,
        "api_retries": stats.retries,
        "api_rate_limited": stats.rate_limited,
        "api_bytes": stats.bytes,
    }


def _listed(messages) -> Markdown:
    lines = [f"- {m}" for m in messages][:_LISTED_MESSAGES]
    return Markdown("\n".join(lines) or "none")
