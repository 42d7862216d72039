"""Materialize the graph for a date range through the persistent instance (``atft run``).

The same Definitions the UI loads are executed here, one run per stage (unpartitioned assets,
then each date-partitioned asset as a single-run backfill over the range), so every run and
materialization shows up in ``atft ui`` afterwards.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterInstance, Definitions
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from atft_pipeline import calendar
from atft_pipeline.storage import PartitionStore, lost_partitions


@dataclass
class StageResult:
    asset: str
    success: bool
    run_id: str
    seconds: float
    partitions: int = 0
    error: str = ""


@dataclass
class RangeResult:
    start: dt.date
    end: dt.date
    stages: list[StageResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(s.success for s in self.stages)


def range_tags(start: dt.date, end: dt.date) -> dict[str, str]:
    return {
        ASSET_PARTITION_RANGE_START_TAG: start.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: end.isoformat(),
    }


def materialize_range(
    defs: Definitions,
    instance: DagsterInstance,
    assets: Sequence[str],
    start: dt.date,
    end: dt.date,
    store: PartitionStore,
    *,
    latest_only: Sequence[str] = (),
    progress: Callable[[str], None] = print,
) -> RangeResult:
    """Materialize ``assets`` (in order) for the trading days in ``[start, end]``.

    Each asset is its own run (one per contiguous block of partitions not yet materialized),
    so a failing source fails only its own partitions, the others still materialize, and a
    re-run fetches only what is missing; the result lists every stage. Assets named in
    ``latest_only`` are materialized for the last trading day of the range only.
    """
    days = calendar.trading_days(start, end)
    if not days:
        raise ValueError(f"no trading days between {start} and {end}")
    repository = defs.get_repository_def()
    job = defs.resolve_implicit_global_asset_job_def()
    result = RangeResult(days[0], days[-1])
    for name in assets:
        assets_def = repository.assets_defs_by_key[AssetKey(name)]
        if assets_def.partitions_def is None:
            result.stages.append(_run_stage(name, job, instance, None, progress))
            continue
        # Done = recorded as materialized *and* its file is still readable.
        recorded = instance.get_materialized_partitions(AssetKey(name))
        done = recorded - set(lost_partitions(store, name, recorded))
        wanted = days[-1:] if name in latest_only else days  # e.g. next-day predictions
        todo = [d for d in wanted if d.isoformat() not in done]
        if not todo:
            progress(f"{name}: all {len(days)} partitions already materialized")
            result.stages.append(StageResult(name, True, "", 0.0, 0))
        for block in contiguous_blocks(todo, days):
            result.stages.append(_run_stage(name, job, instance, block, progress))
    return result


def contiguous_blocks(todo: Sequence[dt.date], days: Sequence[dt.date]) -> list[list[dt.date]]:
    """Split ``todo`` into runs of consecutive trading days (consecutive within ``days``)."""
    position = {d: i for i, d in enumerate(days)}
    blocks: list[list[dt.date]] = []
    for day in sorted(todo):
        if blocks and position[day] == position[blocks[-1][-1]] + 1:
            blocks[-1].append(day)
        else:
            blocks.append([day])
    return blocks


def _run_stage(name, job, instance, block, progress) -> StageResult:
    tags = range_tags(block[0], block[-1]) if block else {}
    label = f"{name} [{block[0]}..{block[-1]}, {len(block)} days]" if block else name
    progress(f"materializing {label} ...")
    started = time.perf_counter()
    outcome = job.execute_in_process(
        instance=instance, asset_selection=[AssetKey(name)], tags=tags, raise_on_error=False
    )
    seconds = time.perf_counter() - started
    error = "" if outcome.success else _failure_message(outcome)
    progress(f"  {'ok' if outcome.success else 'FAILED'} in {seconds:.1f}s" + (f": {error}" if error else ""))
    return StageResult(name, outcome.success, outcome.run_id, seconds, len(block or []), error)


def _failure_message(outcome) -> str:
    """The root cause of a failed run's first failed step (not Dagster's wrapper text)."""
    for event in outcome.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None:
                return error.message.strip().splitlines()[-1] if error.message else error.cls_name
    return "failed"
