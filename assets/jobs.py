"""Jobs and schedules.

``nightly_update`` runs in the evening (19:30 JST, after the 16:30–18:00 J-Quants updates) for
the trading day that just closed. Nikkei 225 options for day D are published at 03:00 on D+1,
so ``raw_index_options`` runs in its own early-morning job for the previous trading day.
Statements disclosed after 18:00 on D arrive with fins/summary's 24:30 update (00:30 on D+1),
after that evening's run: ``statements_catchup`` re-fetches ``raw_statements[D]`` the next
morning, before the evening run that first uses them (docs/nightly.md).
"""


import datetime as dt

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)

from assets.k8s import TRAINING_RUN_TAGS
from assets.partitions import TOKYO
from assets.runner import range_tags
from atft_pipeline import calendar
from atft_pipeline.names import DATASET_ASSET, LATEST_ASSET, MODEL_ASSETS, STATS_ASSET, TARGETS_ASSET
from atft_pipeline.stages.features import TARGET_REACH
from atft_pipeline.stages.scope import PipelineScope

NIGHTLY_JOB = "nightly_update"
NIGHTLY_SCHEDULE = "nightly_update_schedule"
OPTIONS_JOB = "options_morning_update"
RAW_HISTORY_JOB = "raw_history"
DATASET_JOB = "dataset_build"
TARGETS_REFRESH_JOB = "targets_refresh"
WEEKLY_RETRAIN_JOB = "weekly_retrain"
STATEMENTS_CATCHUP_JOB = "statements_catchup"
OPTIONS_ASSET = "raw_index_options"
STATEMENTS_ASSET = "raw_statements"


def build_jobs(scope: PipelineScope):
    raw = scope.raw_assets
    derived = [*scope.feature_assets, TARGETS_ASSET, DATASET_ASSET]
    jobs = [
        define_asset_job(
            NIGHTLY_JOB,
            selection=AssetSelection.assets(
                *[a for a in raw if a != OPTIONS_ASSET], *derived, LATEST_ASSET
            ),
            description="The trading day that just closed: every entitled raw source, its "
            "feature families, the dataset row and the next-day predictions.",
        ),
        define_asset_job(
            WEEKLY_RETRAIN_JOB,
            selection=AssetSelection.assets(STATS_ASSET, *MODEL_ASSETS),
            description="Refit normalization stats, ATFT-GAT-FAN and LightGBM on the stored "
            "dataset; predict validation/test and rebuild the evaluation report.",
            tags=TRAINING_RUN_TAGS,  # a GPU pod under K8sRunLauncher (assets/k8s.py)
        ),
        define_asset_job(
            TARGETS_REFRESH_JOB,
            selection=AssetSelection.assets(TARGETS_ASSET, DATASET_ASSET),
            description=f"Re-materialize targets and ml_dataset for the last {TARGET_REACH} "
            "sessions, whose targets become known as days pass.",
        ),
        define_asset_job(
            RAW_HISTORY_JOB,
            selection=AssetSelection.assets(*raw),
            description="Every entitled raw source; backfill it over a date range. The feature "
            f"families read up to {max((f.history for f in scope.enabled_families), default=0)} "
            "sessions before a day: backfill raw history from that far before the range.",
        ),
        define_asset_job(
            DATASET_JOB,
            selection=AssetSelection.assets(*derived),
            description="Feature families, targets and ml_dataset; backfill over a range whose "
            "raw sources are stored from each family's lookback before it (see raw_history).",
        ),
    ]
    if OPTIONS_ASSET in raw:
        jobs.append(define_asset_job(OPTIONS_JOB, selection=AssetSelection.assets(OPTIONS_ASSET)))
    if STATEMENTS_ASSET in raw:
        # The families read a disclosure made after 18:00 (or without a time) from the next
        # session on, so only the raw partition changes; the next evening reads it complete.
        jobs.append(
            define_asset_job(
                STATEMENTS_CATCHUP_JOB,
                selection=AssetSelection.assets(STATEMENTS_ASSET),
                description="The previous session's statements again, after fins/summary's "
                "24:30 update.",
            )
        )
    return jobs


def tonight_partition(evening: dt.datetime) -> str | None:
    """The partition the nightly run at ``evening`` targets: that JST day, if it traded."""
    day = evening.astimezone(TOKYO).date()
    return day.isoformat() if calendar.is_trading_day(day) else None


def previous_session_partition(morning: dt.datetime) -> str:
    day = morning.astimezone(TOKYO).date()
    return calendar.shift_trading_days(day, -1).isoformat()


def _tokyo_schedule(name: str, job, cron: str):
    """A schedule on Tokyo time, stopped until someone turns it on."""
    return schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="Asia/Tokyo",
        default_status=DefaultScheduleStatus.STOPPED,
    )


def build_schedules(jobs_by_name: dict):
    schedules = []

    @_tokyo_schedule(NIGHTLY_SCHEDULE, jobs_by_name[NIGHTLY_JOB], "30 19 * * 1-5")
    def nightly_update_schedule(context: ScheduleEvaluationContext):
        partition = tonight_partition(context.scheduled_execution_time)
        if partition is None:
            return SkipReason("not a JPX trading day")
        return RunRequest(run_key=f"nightly:{partition}", partition_key=partition)

    schedules.append(nightly_update_schedule)

    @_tokyo_schedule("targets_refresh_schedule", jobs_by_name[TARGETS_REFRESH_JOB], "45 19 * * 1-5")
    def targets_refresh_schedule(context: ScheduleEvaluationContext):
        partition = tonight_partition(context.scheduled_execution_time)
        if partition is None:
            return SkipReason("not a JPX trading day")
        day = dt.date.fromisoformat(partition)
        first = calendar.shift_trading_days(day, -TARGET_REACH)
        last = calendar.shift_trading_days(day, -1)
        return RunRequest(run_key=f"targets:{partition}", tags=range_tags(first, last))

    schedules.append(targets_refresh_schedule)

    # Saturday morning JST: the week's data is complete.
    @_tokyo_schedule("weekly_retrain_schedule", jobs_by_name[WEEKLY_RETRAIN_JOB], "0 9 * * 6")
    def weekly_retrain_schedule(context: ScheduleEvaluationContext):
        week = context.scheduled_execution_time.astimezone(TOKYO).date().isoformat()
        return RunRequest(run_key=f"retrain:{week}")

    schedules.append(weekly_retrain_schedule)

    if OPTIONS_JOB in jobs_by_name:

        @_tokyo_schedule("options_morning_schedule", jobs_by_name[OPTIONS_JOB], "30 4 * * 2-6")
        def options_morning_schedule(context: ScheduleEvaluationContext):
            partition = previous_session_partition(context.scheduled_execution_time)
            return RunRequest(run_key=f"options:{partition}", partition_key=partition)

        schedules.append(options_morning_schedule)

    if STATEMENTS_CATCHUP_JOB in jobs_by_name:
        # After the 24:30 update of the previous session (00:30) and before tonight's run, which
        # then reads that day's statements complete.
        @_tokyo_schedule("statements_catchup_schedule", jobs_by_name[STATEMENTS_CATCHUP_JOB], "45 4 * * 2-6")
        def statements_catchup_schedule(context: ScheduleEvaluationContext):
            partition = previous_session_partition(context.scheduled_execution_time)
            return RunRequest(run_key=f"statements:{partition}", partition_key=partition)

        schedules.append(statements_catchup_schedule)
    return schedules
