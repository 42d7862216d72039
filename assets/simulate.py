"""Nightly operation, simulated: what the schedules and sensors would run, night by night.

``atft simulate --nights N`` moves the stand-in server's clock (``ServerClock``) through N
nights. At each tick of each schedule of the Definitions it evaluates that schedule (the real
``ScheduleDefinition``, as the daemon would) and executes the runs it requests — through the
same Definitions, on the persistent instance of ``ATFT_HOME`` — then evaluates the sensors
and executes theirs. A run key already used by a run of the same schedule or sensor is not
run again, as the daemon does. Before the first night the history up to it is backfilled,
fetched at the first night's noon, as ``atft run`` would have done that morning.

``--check-backfill`` then backfills the same period in one go into a second home, fetched
after the last night, and compares the stores (``atft_pipeline.nightly.compare``).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    build_schedule_context,
    build_sensor_context,
)
from dagster._core.storage.tags import RUN_KEY_TAG, SCHEDULE_NAME_TAG, SENSOR_NAME_TAG
from dagster._utils.schedules import cron_string_iterator

from assets.partitions import TOKYO
from assets.runner import (
    RUNNER_TAG,
    RangeResult,
    StageLog,
    _failure_message,
    finalize_abandoned_runs,
    materialize_range,
)
from atft_pipeline import calendar
from atft_pipeline.names import CALENDAR_ASSET, DATASET_ASSET, LATEST_ASSET, TARGETS_ASSET
from atft_pipeline.nightly.clock import ServerClock, night_span
from atft_pipeline.config import PipelineConfig
from atft_pipeline.errors import UsageError
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.nightly.compare import AssetComparison, compare_stores, equality_table
from atft_pipeline.planning import too_short_for_splits
from atft_pipeline.sandbox.embedded import SANDBOX_SEED, SANDBOX_STOCKS
from atft_pipeline.settings import Settings
from atft_pipeline.stages.scope import PipelineScope
from atft_pipeline.storage import PartitionStore, home_lock

SIMULATED_AT_TAG = "atft/simulated-at"


@dataclass
class SimulatedRun:
    moment: dt.datetime  # naive Tokyo time of the tick
    origin: str  # the schedule or sensor that requested it
    job: str
    partition: str | None
    run_id: str
    success: bool
    seconds: float
    error: str = ""


@dataclass
class SimulationResult:
    first_night: dt.date
    last_night: dt.date
    bootstrap: RangeResult | None = None
    runs: list[SimulatedRun] = field(default_factory=list)
    skips: list[tuple[dt.datetime, str, str]] = field(default_factory=list)  # moment, origin, why

    @property
    def success(self) -> bool:
        return (self.bootstrap is None or self.bootstrap.success) and all(r.success for r in self.runs)


def schedule_ticks(defs: Definitions, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, ScheduleDefinition]]:
    """Every tick in [start, end) (naive Tokyo time) of every schedule, in time order."""
    ticks = []
    begin = start.replace(tzinfo=TOKYO).timestamp() - 1
    for schedule in defs.get_repository_def().schedule_defs:
        for moment in cron_string_iterator(begin, schedule.cron_schedule, schedule.execution_timezone):
            local = moment.astimezone(TOKYO).replace(tzinfo=None)
            if local >= end:
                break
            if local >= start:
                ticks.append((local, schedule))
    return sorted(ticks, key=lambda t: (t[0], t[1].name))


class NightlySimulator:
    """Evaluates schedules and sensors at simulated moments and executes what they request."""

    def __init__(
        self,
        defs: Definitions,
        instance: DagsterInstance,
        clock: ServerClock,
        progress: Callable[[str], None] = print,
        log: StageLog | None = None,
    ) -> None:
        self.defs = defs
        self.log = log
        self.repository = defs.get_repository_def()
        self.instance = instance
        self.clock = clock
        self.progress = progress

    def night(self, day: dt.date, result: SimulationResult) -> None:
        start, end = night_span(day)
        for moment, schedule in schedule_ticks(self.defs, start, end):
            self.clock.set(moment)
            context = build_schedule_context(
                instance=self.instance,
                scheduled_execution_time=moment.replace(tzinfo=TOKYO),
                repository_def=self.repository,
            )
            data = schedule.evaluate_tick(context)
            if not data.run_requests:
                result.skips.append((moment, schedule.name, data.skip_message or "no run requested"))
                self.progress(f"{moment:%Y-%m-%d %a %H:%M} {schedule.name}: skipped ({data.skip_message})")
            for request in data.run_requests or []:
                self._execute(moment, schedule.name, SCHEDULE_NAME_TAG, schedule.job_name, request, result)
            self._sensors(moment, result)

    def _sensors(self, moment: dt.datetime, result: SimulationResult) -> None:
        for sensor in self.repository.sensor_defs:
            with build_sensor_context(
                instance=self.instance, definitions=self.defs, sensor_name=sensor.name,
                resources=self.defs.resources,
            ) as context:
                requests = sensor.evaluate_tick(context).run_requests or []
            for request in requests:
                self._execute(moment, sensor.name, SENSOR_NAME_TAG, None, request, result)

    def _already_run(self, origin_tag: str, origin: str, run_key: str | None) -> bool:
        if run_key is None:
            return False
        runs = self.instance.get_runs(RunsFilter(tags={RUN_KEY_TAG: run_key, origin_tag: origin}), limit=1)
        return bool(runs)

    def _execute(self, moment, origin, origin_tag, job_name, request: RunRequest, result) -> None:
        label = f"{moment:%Y-%m-%d %a %H:%M} {origin}"
        if self._already_run(origin_tag, origin, request.run_key):
            self.progress(f"{label}: run key {request.run_key} already run")
            return
        job = (
            self.repository.get_job(job_name)
            if job_name
            else self.defs.resolve_implicit_global_asset_job_def()
        )
        tags = {
            **request.tags,
            origin_tag: origin,
            SIMULATED_AT_TAG: moment.isoformat(),
            RUNNER_TAG: str(os.getpid()),
            **({RUN_KEY_TAG: request.run_key} if request.run_key else {}),
        }
        started = time.perf_counter()
        with self.log.capture(origin) if self.log is not None else nullcontext():
            outcome = job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                asset_selection=request.asset_selection,
                tags=tags,
                raise_on_error=False,
            )
        seconds = time.perf_counter() - started
        error = "" if outcome.success else _failure_message(outcome)
        partition = request.partition_key or _range_label(request.tags)
        result.runs.append(SimulatedRun(moment, origin, job.name, partition, outcome.run_id, outcome.success, seconds, error))
        status = "ok" if outcome.success else f"FAILED: {error}"
        self.progress(f"{label}: {job.name} [{partition}] {status} ({seconds:.1f}s)")


def _range_label(tags) -> str | None:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags[ASSET_PARTITION_RANGE_END_TAG]}"
    return None


def simulate_nights(
    defs: Definitions,
    instance: DagsterInstance,
    scope: PipelineScope,
    store: PartitionStore,
    clock: ServerClock,
    first_night: dt.date,
    nights: int,
    progress: Callable[[str], None] = print,
    log: StageLog | None = None,
) -> SimulationResult:
    """Backfill the history before ``first_night`` (fetched at its noon), then ``nights``
    consecutive nights (calendar days; the schedules skip the closed ones)."""
    last_night = first_night + dt.timedelta(days=nights - 1)
    result = SimulationResult(first_night, last_night)
    history_end = calendar.shift_trading_days(first_night, -1)  # the last session before it
    # Every night predicts with a model trained on this history: without one, every night
    # would fail at the same stage, so say so before fetching anything (an empty history
    # stops here too).
    why = too_short_for_splits(scope, calendar.trading_days(scope.start, history_end))
    if why:
        raise UsageError(
            f"the history before the first night ({scope.start}..{history_end}) cannot train "
            f"the model: {why}. Set ATFT_START_DATE earlier or --start later."
        )
    clock.set(night_span(first_night)[0])
    progress(f"history {scope.start}..{history_end}, as known at {night_span(first_night)[0]}")
    result.bootstrap = materialize_range(
        defs, instance, scope.pipeline_assets(), scope.start, history_end, store,
        latest_only=[LATEST_ASSET], progress=progress, log=log,
    )
    if not result.bootstrap.success:
        return result
    simulator = NightlySimulator(defs, instance, clock, progress, log)
    with home_lock(instance.root_directory):
        finalize_abandoned_runs(instance, progress)
        for offset in range(nights):
            simulator.night(first_night + dt.timedelta(days=offset), result)
    return result


def compared_assets(scope: PipelineScope) -> list[str]:
    """What must equal a one-shot backfill: raw sources, feature families, targets, dataset."""
    return [CALENDAR_ASSET, *scope.raw_assets, *scope.feature_assets, TARGETS_ASSET, DATASET_ASSET]


def backfill_and_compare(
    backfill_defs: Definitions,
    backfill_instance: DagsterInstance,
    scope: PipelineScope,
    nightly_store: PartitionStore,
    backfill_store: PartitionStore,
    clock: ServerClock,
    last_night: dt.date,
    progress: Callable[[str], None] = print,
    log: StageLog | None = None,
) -> tuple[RangeResult, list[AssetComparison]]:
    """One backfill of ``scope.start``..``last_night`` fetched after the last night, then the
    comparison of every compared asset's stored partitions."""
    as_of = night_span(last_night)[1]
    clock.set(as_of)
    last_session = calendar.shift_trading_days(last_night + dt.timedelta(days=1), -1)
    progress(f"one-shot backfill {scope.start}..{last_session}, as known at {as_of}")
    assets = compared_assets(scope)
    backfill = materialize_range(
        backfill_defs, backfill_instance, assets, scope.start, last_session, backfill_store,
        progress=progress, log=log,
    )
    return backfill, compare_stores(nightly_store, backfill_store, assets, unpartitioned=[CALENDAR_ASSET])


def empty_home(path: Path) -> None:
    """The backfill must start from nothing: a partition already there would not be fetched."""
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"the backfill home {path} is not empty; remove it or name another (--backfill-home)")


@contextmanager
def stand_in(settings: Settings, seed: int, n_stocks: int) -> Iterator[Settings]:
    """``settings`` pointed at a stand-in server whose clock can be set: the configured one
    (``JQUANTS_BASE_URL``, e.g. ``atft sandbox serve --replay DIR``), or else the sandbox
    market served here (its last sessions hold the planted splits, late filings and the
    margin-interest switch)."""
    if not settings.embedded_sandbox:
        yield settings
        return
    from atft_pipeline.sandbox.embedded import sandbox_settings, serve_sandbox_market

    with serve_sandbox_market(seed, n_stocks) as server:
        yield sandbox_settings(settings, server.base_url).model_copy(update={"plan": Plan.PREMIUM})


@dataclass(frozen=True)
class SimulationRequest:
    """What ``atft simulate`` was asked (see its ``--help``)."""

    nights: int
    first_night: dt.date | None = None
    check_backfill: bool = False
    backfill_home: Path | None = None
    seed: int = SANDBOX_SEED
    n_stocks: int = SANDBOX_STOCKS


def run_simulation(settings: Settings, request: SimulationRequest, config: PipelineConfig | None = None) -> int:
    """``atft simulate``: the nights, their summary, and (``check_backfill``) the equality
    table against a one-shot backfill; 0 when every run succeeded and everything is equal."""
    from assets.definitions import build_definitions
    from assets.instance import configure_dagster_process, ensure_dagster_home
    from atft_pipeline.config import dump_config
    from atft_pipeline.stages.scope import config_path, resolve_scope

    wall, cpu = time.perf_counter(), _cpu_seconds()
    last_night = settings.default_end_date if request.first_night is None else None
    first_night = request.first_night or last_night - dt.timedelta(days=request.nights - 1)
    last_night = first_night + dt.timedelta(days=request.nights - 1)
    configure_dagster_process()
    with stand_in(settings, request.seed, request.n_stocks) as settings:
        if config is not None:
            config.check_builds()
            dump_config(config, config_path(settings))
        scope = resolve_scope(settings, config)
        defs = build_definitions(settings, config=scope.config)
        store = PartitionStore(settings.data_root)
        clock = ServerClock(settings.base_url, settings.api_key)
        print(f"simulating {request.nights} nights {first_night}..{last_night} against {settings.base_url}")
        # Dagster's own lines go to a file, as for `atft run`; the terminal gets one per run.
        log = StageLog(settings.home.resolve() / "logs" / f"simulate-{dt.datetime.now():%Y%m%d-%H%M%S}.log")
        print(f"Dagster's logs: {log.path}")
        with DagsterInstance.from_config(str(ensure_dagster_home(settings))) as instance:
            result = simulate_nights(defs, instance, scope, store, clock, first_night, request.nights, log=log)
        ok = print_nights(result, store)
        if request.check_backfill and ok:
            home = request.backfill_home or settings.home.with_name(settings.home.name + "-backfill")
            empty_home(home)
            backfill_settings = settings.model_copy(update={"home": home})
            dump_config(scope.config, config_path(backfill_settings))
            backfill_defs = build_definitions(backfill_settings, config=scope.config)
            backfill_store = PartitionStore(backfill_settings.data_root)
            with DagsterInstance.from_config(str(ensure_dagster_home(backfill_settings))) as instance:
                backfill, comparisons = backfill_and_compare(
                    backfill_defs, instance, scope, store, backfill_store, clock, last_night, log=log
                )
            ok = backfill.success and all(c.equal for c in comparisons)
            if not backfill.success:
                print("the one-shot backfill failed: " + "; ".join(f"{s.asset}: {s.error}" for s in backfill.stages if not s.success))
            print("\nnights vs one-shot backfill (keys/integers exact, floats <= 1e-9 relative):")
            print(equality_table(comparisons))
        clock.clear()
    print(f"\nwall {time.perf_counter() - wall:.0f} s, CPU {_cpu_seconds() - cpu:.0f} s")
    return 0 if ok else 1


def print_nights(result: SimulationResult, store: PartitionStore) -> bool:
    """One line per night (its runs), then whether each trading night left predictions."""
    if result.bootstrap is not None and not result.bootstrap.success:
        failed = [f"{s.asset}: {s.error}" for s in result.bootstrap.stages if not s.success]
        print("the history backfill before the first night failed: " + "; ".join(failed))
        return False
    day, nights_without = result.first_night, []
    print()
    while day <= result.last_night:
        runs = [r for r in result.runs if night_span(day)[0] <= r.moment < night_span(day)[1]]
        listed = ", ".join(f"{r.job}{'' if r.success else ' FAILED'}" for r in runs) or "nothing (market closed)"
        print(f"  night {day} {day:%a}: {listed}")
        if calendar.is_trading_day(day) and not store.exists(LATEST_ASSET, day):
            nights_without.append(day)
        day += dt.timedelta(days=1)
    failed = [r for r in result.runs if not r.success]
    for run in failed:
        print(f"  FAILED {run.moment} {run.job} [{run.partition}]: {run.error}")
    print(f"{len(result.runs)} runs, {len(failed)} failed; trading nights without latest_predictions: "
          f"{[d.isoformat() for d in nights_without] or 'none'}")
    return not failed and not nights_without


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
