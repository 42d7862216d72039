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
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, Definitions, RunsFilter
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from atft_pipeline import calendar
from atft_pipeline.names import DATASET_ASSET, TARGETS_ASSET
from atft_pipeline.progress import progress_of
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
    planned_skip: bool = False  # left out by the run's plan (e.g. the range is too short)


@dataclass
class RangeResult:
    start: dt.date
    end: dt.date
    stages: list[StageResult] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return not self.interrupted and all(s.success or s.planned_skip for s in self.stages)

    @property
    def failed(self) -> list[StageResult]:
        return [s for s in self.stages if not s.success and not s.skipped]


class StageProgress(NamedTuple):
    """One progress record of a running stage (``atft_pipeline.progress``)."""

    stage: str
    key: str  # what progresses: a later update with the same key replaces this one
    message: str
    keep: bool  # the last update of a key deserves a line where nothing can be redrawn


@dataclass
class StageLog:
    """Where a stage's Dagster output goes: appended to ``path`` (also to the terminal with
    ``echo``); progress records of the library's loggers (fetch and write counters, training
    epochs) go to ``progress`` so the caller can show them while the stage runs."""

    path: Path
    echo: bool = False
    progress: Callable[[StageProgress], None] = lambda update: None

    @contextmanager
    def capture(self, stage: str) -> Iterator[None]:
        relay = _Relay(stage, self.progress)
        library = logging.getLogger("atft_pipeline")
        level = library.level
        library.addHandler(relay)
        library.setLevel(logging.INFO)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            stream = _Tee(file, sys.stdout) if self.echo else file
            try:
                with redirect_stdout(stream), redirect_stderr(stream):
                    yield
            finally:
                library.removeHandler(relay)
                library.setLevel(level)


class _Relay(logging.Handler):
    def __init__(self, stage: str, progress: Callable[[StageProgress], None]) -> None:
        super().__init__(logging.INFO)
        self.stage, self.progress = stage, progress

    def emit(self, record: logging.LogRecord) -> None:
        marked = progress_of(record)
        if marked is not None:
            self.progress(StageProgress(self.stage, marked[0], record.getMessage(), marked[1]))


class _Tee:
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


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
    asset_days: Mapping[str, Sequence[dt.date]] | None = None,
    skip: Mapping[str, str] | None = None,
    log: StageLog | None = None,
) -> RangeResult:
    """Materialize ``assets`` (in order) for the trading days in ``[start, end]``.

    Each asset is its own run (one per contiguous block of partitions not yet materialized),
    so a failing source fails only its own partitions, the others still materialize, and a
    re-run fetches only what is missing; the result lists every stage. Assets named in
    ``latest_only`` are materialized for the last trading day of the range only; those named
    in ``asset_days`` for exactly those days (e.g. raw history before the range). Assets named
    in ``skip`` are not run (the value says why) and count as skipped for their dependants;
    with ``log``, each stage's Dagster output goes to its file.

    A stage any of whose upstream assets failed or was skipped in this call is skipped and
    reported. A stage whose pool has no free slot (held by other live runs) waits at most
    ``pool_wait_s`` and then fails, naming the pool and the runs holding it. Holds the lock of the instance's home for the whole call (``HomeInUseError``
    when another ``atft run`` holds it).
    """
    days = calendar.trading_days(start, end)
    if not days:
        raise ValueError(f"no trading days between {start} and {end}")
    started = time.perf_counter()
    plan = _Plan(days, latest_only, dict(asset_days or {}), dict(skip or {}), log)
    with home_lock(instance.root_directory), _stop_on_signals() as stop:
        finalize_abandoned_runs(instance, progress)
        result = _materialize(defs, instance, assets, store, plan, progress, stop, pool_wait_s)
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class _Plan:
    days: list[dt.date]
    latest_only: Sequence[str]
    asset_days: dict[str, Sequence[dt.date]]
    skip: dict[str, str]
    log: StageLog | None

    def wanted(self, name: str) -> list[dt.date]:
        if name in self.latest_only:  # e.g. next-day predictions
            return self.days[-1:]
        return list(self.asset_days.get(name, self.days))


def _materialize(defs, instance, assets, store, plan: _Plan, progress, stop, pool_wait_s) -> RangeResult:
    repository = defs.get_repository_def()
    asset_graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    days = plan.days
    result = RangeResult(days[0], days[-1])
    not_ok: dict[str, str] = {}  # asset -> why its dependants are skipped
    planned: set[str] = set()  # skipped by the plan, directly or through an upstream
    for name in assets:
        if stop.requested:
            result.interrupted = True
            result.stages.append(StageResult(name, False, "", 0.0, error=INTERRUPTED, skipped=True))
            continue
        if name in plan.skip:
            why = f"skipped: {plan.skip[name]}"
            progress(stage_line(name, "skipped", 0.0, plan.skip[name]))
            result.stages.append(StageResult(name, False, "", 0.0, error=why, skipped=True, planned_skip=True))
            not_ok[name] = "skipped"
            planned.add(name)
            continue
        blocked_by = sorted(
            key.to_user_string() for key in _upstream(asset_graph, AssetKey(name))
            if key.to_user_string() in not_ok
        )
        if blocked_by:
            why = "skipped: upstream " + ", ".join(f"{b} ({not_ok[b]})" for b in blocked_by)
            progress(stage_line(name, "skipped", 0.0, why.removeprefix("skipped: ")))
            by_plan = set(blocked_by) <= planned
            result.stages.append(StageResult(name, False, "", 0.0, error=why, skipped=True, planned_skip=by_plan))
            not_ok[name] = "skipped"
            if by_plan:
                planned.add(name)
            continue
        assets_def = repository.assets_defs_by_key[AssetKey(name)]
        busy = _wait_for_pool_slot(instance, assets_def.op.pool, pool_wait_s)
        if busy:
            progress(stage_line(name, "FAILED", pool_wait_s, busy))
            result.stages.append(StageResult(name, False, "", pool_wait_s, error=busy))
            not_ok[name] = "failed"
            continue
        if assets_def.partitions_def is None:
            stages = [_run_stage(name, job, instance, None, plan.log)]
            todo = []
        else:
            # Done = recorded as materialized, its file verifies, and it is not quarantined.
            recorded = instance.get_materialized_partitions(AssetKey(name))
            done = recorded - set(lost_partitions(store, name, recorded))
            wanted = plan.wanted(name)
            todo = [d for d in wanted if d.isoformat() not in done]
            refresh = look_ahead_refresh(todo, done, LOOK_AHEAD.get(name, 0))
            todo = sorted({*todo, *refresh})
            stages = [StageResult(name, True, "", 0.0, 0)] if not todo else []
            for block in contiguous_blocks(todo, sorted({*wanted, *refresh})):
                if stop.requested:
                    break
                stages.append(_run_stage(name, job, instance, block, plan.log))
        progress(_stage_summary(name, stages, assets_def.partitions_def is not None, len(todo)))
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


def _run_stage(name, job, instance, block, log: StageLog | None) -> StageResult:
    tags = range_tags(block[0], block[-1]) if block else {}
    started = time.perf_counter()
    tags = {**tags, RUNNER_TAG: str(os.getpid())}
    try:
        with log.capture(name) if log is not None else _nothing():
            outcome = job.execute_in_process(
                instance=instance, asset_selection=[AssetKey(name)], tags=tags, raise_on_error=False
            )
    except KeyboardInterrupt:
        # Interrupted outside a step: Dagster did not finish its run, so finish it here.
        for run in instance.get_runs(RunsFilter(statuses=list(NOT_FINISHED_STATUSES))):
            if run.tags.get(RUNNER_TAG) == str(os.getpid()):
                instance.report_run_canceled(run, "atft run was interrupted")
        return StageResult(name, False, "", time.perf_counter() - started, len(block or []), INTERRUPTED)
    seconds = time.perf_counter() - started
    if _was_interrupted(outcome):
        return StageResult(name, False, outcome.run_id, seconds, len(block or []), INTERRUPTED)
    error = "" if outcome.success else _failure_message(outcome)
    return StageResult(name, outcome.success, outcome.run_id, seconds, len(block or []), error)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# A failure's description shows at most this many of its lines (the log has all of them).
DETAIL_LINES = 8


def stage_line(name: str, status: str, seconds: float, detail: str = "", width: int = 100) -> str:
    """One stage as one line, ``detail`` wrapped at words to ``width`` columns below it when
    it does not fit beside it (a failure's description keeps its own lines, at most
    ``DETAIL_LINES`` of them)."""
    head = f"  {name:<30} {status:<8} {seconds:6.1f}s"
    lines = detail.strip().splitlines()
    if len(lines) > DETAIL_LINES:
        lines = [*lines[:DETAIL_LINES], f"(+{len(lines) - DETAIL_LINES} more lines in the run's log)"]
    if len(lines) == 1 and len(head) + 2 + len(lines[0]) <= width:
        return f"{head}  {lines[0]}"
    wrapped = [
        part
        for line in lines
        for part in textwrap.wrap(line, width, initial_indent="      ", subsequent_indent="        ",
                                  break_long_words=False, break_on_hyphens=False)
    ]
    return "\n".join([head, *wrapped])


def _stage_summary(name: str, stages: list[StageResult], partitioned: bool, n_todo: int) -> str:
    seconds = sum(s.seconds for s in stages)
    if any(s.error == INTERRUPTED for s in stages):
        return stage_line(name, "stopped", seconds, "interrupted")
    failed = [s for s in stages if not s.success]
    if failed:
        return stage_line(name, "FAILED", seconds, failed[0].error)
    if not partitioned:
        return stage_line(name, "ok", seconds)
    if n_todo == 0:
        return stage_line(name, "ok", seconds, "already materialized")
    return stage_line(name, "ok", seconds, f"{n_todo} partition(s)")


def _was_interrupted(outcome) -> bool:
    if outcome.dagster_run.status is DagsterRunStatus.CANCELED:
        return True
    for event in outcome.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            if event.step_failure_data.error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
    return False


def _failure_message(outcome) -> str:
    """The root cause of a failed run's first failed step (not Dagster's wrapper text); for a
    failed blocking check, the check's name and recorded description."""
    for event in outcome.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
                return _failed_checks(outcome) or error.message.strip()
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None and error.message:
                # a Failure's description is written for the reader (asset, partitions, columns);
                # of anything else, a traceback's last line is the error
                text = error.message.strip()
                if error.cls_name != "Failure":
                    return text.splitlines()[-1]
                return text.removeprefix("dagster._core.definitions.events.Failure: ")
            if error is not None:
                return error.cls_name
    return "failed"


def _failed_checks(outcome) -> str:
    """Every failed error-severity check of the run with its metadata (asset, partitions,
    columns, example rows), '' when none failed."""
    lines = []
    for event in outcome.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if evaluation.passed or evaluation.severity.value != "ERROR":
            continue
        lines.append(f"check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} failed:")
        for key, value in evaluation.metadata.items():
            text = str(getattr(value, "value", value)).strip()
            lines.append(f"  {key}: {text}")
    return "\n".join(lines)
