"""Materialize the graph for a date range through the persistent instance (``atft run``).

The same Definitions the UI loads are executed here, one run per stage (unpartitioned assets,
then each date-partitioned asset as a single-run backfill over the range), so every run and
materialization shows up in ``atft ui`` afterwards.

Reliability rules: one ``atft run`` per home at a time (a lock, released by the kernel however
the holder dies); on start, runs left unfinished by a killed ``atft run`` are marked failed and
the pool slots they held are freed, so nothing waits on a dead run; a stage whose upstream
failed (or was skipped) is skipped and reported, never run on partial data; Ctrl-C or SIGTERM
stops the whole run after finalizing the current stage's run.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, Definitions, RunsFilter
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from atft_pipeline import calendar
from atft_pipeline.names import DATASET_ASSET, TARGETS_ASSET
from atft_pipeline.stages.features import TARGET_REACH
from atft_pipeline.storage import PartitionStore, home_lock, lost_partitions

# Every run started by ``materialize_range`` carries this tag (value: the process id).
RUNNER_TAG = "atft/runner-pid"
INTERRUPTED = "interrupted"
# How long a stage waits for a pool slot held by another live run before it fails (instead of
# Dagster's unbounded wait inside the run).
POOL_WAIT_S = 600.0
_POOL_POLL_S = 0.5
# Assets whose stored partitions depend on later days (targets look TARGET_REACH sessions
# ahead): when later days are materialized, the sessions before them are redone too, so
# targets that were unknown when first computed are filled in.
LOOK_AHEAD = {TARGETS_ASSET: TARGET_REACH, DATASET_ASSET: TARGET_REACH}


@dataclass
class StageResult:
    asset: str
    success: bool
    run_id: str
    seconds: float
    partitions: int = 0
    error: str = ""
    skipped: bool = False  # not run: an upstream stage failed, or the run was interrupted


@dataclass
class RangeResult:
    start: dt.date
    end: dt.date
    stages: list[StageResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def success(self) -> bool:
        return not self.interrupted and all(s.success for s in self.stages)


class _StopRequest:
    """Set by SIGTERM/SIGINT; the loop stops before the next stage once it is set."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    """SIGTERM and SIGINT stop the whole range, not only the stage that is running.

    SIGTERM is turned into SIGINT, which Dagster turns into an orderly interruption of the
    current step (its run ends as failed, not STARTED); the loop then stops.
    """
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_sigint(signo, frame):
        stop.requested = True
        signal.default_int_handler(signo, frame)

    def on_sigterm(_signo, _frame):
        stop.requested = True
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def finalize_abandoned_runs(instance: DagsterInstance, progress: Callable[[str], None] = print) -> list[str]:
    """Mark runs a killed ``atft run`` left unfinished as failed and free their pool slots.

    Call only while holding the home lock: then no other ``atft run`` is alive, so every
    unfinished run carrying ``RUNNER_TAG`` belongs to a dead process. Slots still held by
    runs that have finished are freed too (a dead process never released them).
    """
    abandoned = [
        run for run in instance.get_runs(RunsFilter(statuses=list(NOT_FINISHED_STATUSES)))
        if RUNNER_TAG in run.tags
    ]
    for run in abandoned:
        instance.report_run_failed(
            run, f"atft run (pid {run.tags[RUNNER_TAG]}) ended without finishing this run"
        )
    freed = []
    for run_id in sorted(instance.event_log_storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in NOT_FINISHED_STATUSES:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    if abandoned or freed:
        progress(f"finalized {len(abandoned)} abandoned run(s); freed pool slots of {len(freed)} run(s)")
    return [r.run_id for r in abandoned]


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
    pool_wait_s: float = POOL_WAIT_S,
) -> RangeResult:
    """Materialize ``assets`` (in order) for the trading days in ``[start, end]``.

    Each asset is its own run (one per contiguous block of partitions not yet materialized),
    so a failing source fails only its own partitions, the others still materialize, and a
    re-run fetches only what is missing; the result lists every stage. Assets named in
    ``latest_only`` are materialized for the last trading day of the range only.

    A stage any of whose upstream assets failed or was skipped in this call is skipped and
    reported. A stage whose pool has no free slot (held by other live runs) waits at most
    ``pool_wait_s`` and then fails, naming the pool and the runs holding it. Holds the lock of the instance's home for the whole call (``HomeInUseError``
    when another ``atft run`` holds it).
    """
    days = calendar.trading_days(start, end)
    if not days:
        raise ValueError(f"no trading days between {start} and {end}")
    with home_lock(instance.root_directory), _stop_on_signals() as stop:
        finalize_abandoned_runs(instance, progress)
        return _materialize(defs, instance, assets, days, store, latest_only, progress, stop, pool_wait_s)


def _materialize(defs, instance, assets, days, store, latest_only, progress, stop, pool_wait_s) -> RangeResult:
    repository = defs.get_repository_def()
    asset_graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    result = RangeResult(days[0], days[-1])
    not_ok: dict[str, str] = {}  # asset -> why its dependants are skipped
    for name in assets:
        if stop.requested:
            result.interrupted = True
            result.stages.append(StageResult(name, False, "", 0.0, error=INTERRUPTED, skipped=True))
            continue
        blocked_by = sorted(
            key.to_user_string() for key in _upstream(asset_graph, AssetKey(name))
            if key.to_user_string() in not_ok
        )
        if blocked_by:
            why = "skipped: upstream " + ", ".join(f"{b} ({not_ok[b]})" for b in blocked_by)
            progress(f"{name}: {why}")
            result.stages.append(StageResult(name, False, "", 0.0, error=why, skipped=True))
            not_ok[name] = "skipped"
            continue
        assets_def = repository.assets_defs_by_key[AssetKey(name)]
        busy = _wait_for_pool_slot(instance, assets_def.op.pool, pool_wait_s)
        if busy:
            progress(f"{name}: FAILED: {busy}")
            result.stages.append(StageResult(name, False, "", pool_wait_s, error=busy))
            not_ok[name] = "failed"
            continue
        if assets_def.partitions_def is None:
            stages = [_run_stage(name, job, instance, None, progress)]
        else:
            # Done = recorded as materialized, its file verifies, and it is not quarantined.
            recorded = instance.get_materialized_partitions(AssetKey(name))
            done = recorded - set(lost_partitions(store, name, recorded))
            wanted = days[-1:] if name in latest_only else days  # e.g. next-day predictions
            todo = [d for d in wanted if d.isoformat() not in done]
            if not todo:
                progress(f"{name}: all {len(wanted)} partitions already materialized")
            refresh = look_ahead_refresh(todo, done, LOOK_AHEAD.get(name, 0))
            todo = sorted({*todo, *refresh})
            stages = [StageResult(name, True, "", 0.0, 0)] if not todo else []
            for block in contiguous_blocks(todo, sorted({*days, *refresh})):
                if stop.requested:
                    break
                stages.append(_run_stage(name, job, instance, block, progress))
        result.stages.extend(stages)
        if stop.requested or any(s.error == INTERRUPTED for s in stages):
            stop.requested = result.interrupted = True
        elif not all(s.success for s in stages):
            not_ok[name] = "failed"
    return result


def _wait_for_pool_slot(instance: DagsterInstance, pool: str | None, wait_s: float) -> str:
    """Wait (bounded) until ``pool`` has a free slot; '' when it has, else why not."""
    if pool is None:
        return ""
    deadline = time.monotonic() + wait_s
    while True:
        info = instance.event_log_storage.get_concurrency_info(pool)
        if info.limit is None or info.active_slot_count < info.limit:
            return ""
        if time.monotonic() >= deadline:
            holders = ", ".join(sorted(info.active_run_ids))
            return f"pool {pool!r} had no free slot for {wait_s:g} s (all {info.limit} held by run(s) {holders})"
        time.sleep(_POOL_POLL_S)


def _upstream(asset_graph, key: AssetKey) -> set[AssetKey]:
    """Every asset ``key`` reads, directly or through other assets."""
    seen: set[AssetKey] = set()
    frontier = [key]
    while frontier:
        for parent in asset_graph.get(frontier.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return seen


def look_ahead_refresh(todo: Sequence[dt.date], done: set[str], reach: int) -> list[dt.date]:
    """The done partitions in the ``reach`` sessions before the first ``todo`` day: an asset
    that looks ``reach`` sessions ahead computed them without the days now being added."""
    if not todo or reach <= 0:
        return []
    first = min(todo)
    before = calendar.trading_days(calendar.shift_trading_days(first, -reach), first - dt.timedelta(days=1))
    return [d for d in before if d.isoformat() in done]


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
    tags = {**tags, RUNNER_TAG: str(os.getpid())}
    try:
        outcome = job.execute_in_process(
            instance=instance, asset_selection=[AssetKey(name)], tags=tags, raise_on_error=False
        )
    except KeyboardInterrupt:
        # Interrupted outside a step: Dagster did not finish its run, so finish it here.
        for run in instance.get_runs(RunsFilter(statuses=list(NOT_FINISHED_STATUSES))):
            if run.tags.get(RUNNER_TAG) == str(os.getpid()):
                instance.report_run_canceled(run, "atft run was interrupted")
        progress(f"  interrupted after {time.perf_counter() - started:.1f}s")
        return StageResult(name, False, "", time.perf_counter() - started, len(block or []), INTERRUPTED)
    seconds = time.perf_counter() - started
    if _was_interrupted(outcome):
        progress(f"  interrupted after {seconds:.1f}s")
        return StageResult(name, False, outcome.run_id, seconds, len(block or []), INTERRUPTED)
    error = "" if outcome.success else _failure_message(outcome)
    progress(f"  {'ok' if outcome.success else 'FAILED'} in {seconds:.1f}s" + (f": {error}" if error else ""))
    return StageResult(name, outcome.success, outcome.run_id, seconds, len(block or []), error)


def _was_interrupted(outcome) -> bool:
    if outcome.dagster_run.status is DagsterRunStatus.CANCELED:
        return True
    for event in outcome.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            if event.step_failure_data.error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
    return False


def _failure_message(outcome) -> str:
    """The root cause of a failed run's first failed step (not Dagster's wrapper text)."""
    for event in outcome.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None and error.message:
                # a Failure's description is written for the reader (asset, partitions, columns);
                # of anything else, a traceback's last line is the error
                text = error.message.strip()
                return text if error.cls_name == "Failure" else text.splitlines()[-1]
            if error is not None:
                return error.cls_name
    return "failed"
