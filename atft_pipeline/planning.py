"""What ``atft run --start D --end D`` must materialize, decided before anything runs.

A feature family computes a day from its catalog ``lookback`` sessions of raw history, and
targets look ``TARGET_REACH`` sessions ahead; so a range needs each raw source from earlier
than ``--start`` (and the daily bars a little past ``--end``). The plan resolves the range
against ``ATFT_START_DATE`` (the first partition), the data's last session and the
subscription's history window, and either says what it fetches or raises a ``UsageError``
naming the setting to change. Model stages that the resulting dataset is too short for are
listed with the reason, so they are reported as skipped instead of failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from atft_pipeline import calendar
from atft_pipeline.errors import UsageError
from atft_pipeline.names import LATEST_ASSET, MODEL_ASSETS, STATS_ASSET
from atft_pipeline.stages.features import TARGETS_SOURCE, TARGET_REACH
from atft_pipeline.stages.scope import PipelineScope

MODEL_STAGES = (STATS_ASSET, *MODEL_ASSETS, LATEST_ASSET)


@dataclass(frozen=True)
class RunPlan:
    start: dt.date
    end: dt.date
    # raw asset -> the trading days it is materialized for (the range plus its history)
    raw_days: dict[str, list[dt.date]] = field(default_factory=dict)
    # asset -> why it is not run (the dataset is too short for the splits)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed before the run


def last_session(scope: PipelineScope) -> dt.date:
    """The last day with data: the sandbox market's last session, or today."""
    return scope.settings.default_end_date


def first_available(scope: PipelineScope) -> dt.date:
    """The first partition that can hold data: ``ATFT_START_DATE``, or the start of the
    subscription's history window for a real J-Quants plan if that is later."""
    first = scope.start
    if scope.settings.is_sandbox:  # a stand-in server: its data, not a plan, bounds it
        return first
    from atft_pipeline.sandbox.query import plan_window  # the API's window rule

    return max(first, plan_window(scope.plan, dt.date.today()).start)


def check_range(scope: PipelineScope, start: dt.date, end: dt.date) -> None:
    """Raise ``UsageError`` for a range no setting of this run can serve."""
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}; give an --end on or after --start")
    if start < scope.start:
        raise UsageError(
            f"--start {start} is before ATFT_START_DATE ({scope.start}), the first partition; "
            f"pass --start {scope.start} or later, or set ATFT_START_DATE={start} (or earlier)"
        )
    window_start = first_available(scope)
    if start < window_start:
        raise UsageError(
            f"--start {start} is before plan '{scope.plan.value}''s history window (from "
            f"{window_start}); pass --start {window_start} or later, or set JQUANTS_PLAN to a "
            "plan with more history"
        )
    last = last_session(scope)
    if end > last:
        where = "the sandbox market's last session" if scope.settings.is_sandbox else "today"
        raise UsageError(f"--end {end} is after {where} ({last}); pass --end {last} or earlier")
    if not calendar.trading_days(start, end):
        raise UsageError(f"no trading days between --start {start} and --end {end}; widen the range")


def plan_run(
    scope: PipelineScope, start: dt.date, end: dt.date, stored_dataset_days: Iterable[dt.date] = ()
) -> RunPlan:
    """The raw days to fetch for ``[start, end]`` and the model stages it cannot support."""
    check_range(scope, start, end)
    days = calendar.trading_days(start, end)
    first, last = first_available(scope), last_session(scope)
    lookback = _source_lookbacks(scope)
    raw_days: dict[str, list[dt.date]] = {}
    for source in scope.raw_assets:
        history_start = max(calendar.shift_trading_days(days[0], -lookback.get(source, 0)), first)
        until = days[-1]
        if source == TARGETS_SOURCE:  # targets look TARGET_REACH sessions past each day
            until = min(calendar.shift_trading_days(days[-1], TARGET_REACH), last)
        raw_days[source] = calendar.trading_days(min(history_start, days[0]), until)
    notes = _history_notes(scope, days, raw_days, lookback)
    dataset_days = sorted({*stored_dataset_days, *days})
    if TARGETS_SOURCE in raw_days and raw_days[TARGETS_SOURCE][-1] > days[-1]:
        ahead = len([d for d in raw_days[TARGETS_SOURCE] if d > days[-1]])
        notes.append(f"fetching {ahead} sessions of {TARGETS_SOURCE} after {days[-1]} for the targets")
    skipped = {}
    why = too_short_for_splits(scope, dataset_days)
    if why:
        skipped = {asset: "ml_dataset too short for the splits (above)" for asset in MODEL_STAGES}
        notes.append(f"model stages skipped: {why}")
    return RunPlan(days[0], days[-1], raw_days, skipped, notes)


def _source_lookbacks(scope: PipelineScope) -> dict[str, int]:
    """Raw asset -> the longest history an enabled family (or the dataset's universe
    filter) reads from it, in sessions."""
    from atft_pipeline.stages.dataset import META_SOURCES

    lookback = {s: scope.config.dataset.min_history_days for s in META_SOURCES}
    for family in scope.enabled_families:
        for source in family.sources:
            lookback[source] = max(lookback.get(source, 0), family.history)
    return lookback


def _history_notes(scope, days, raw_days, lookback) -> list[str]:
    longest = max(scope.enabled_families, key=lambda f: f.lookback, default=None)
    if longest is None:
        return []
    before = max(
        (len([d for d in raw if d < days[0]]) for raw in raw_days.values()), default=0
    )
    if before == 0 and days[0] == scope.start:
        return [
            f"{days[0]} is ATFT_START_DATE: the first {longest.lookback} sessions' features see "
            "less history than their lookback (splits.warmup_days leaves them out of training)"
        ]
    families = sorted(scope.enabled_families, key=lambda f: -f.history)[:3]
    named = ", ".join(f"{f.name} {f.history}" for f in families)
    notes = [
        f"fetching {before} sessions of history before {days[0]} for the features' lookback "
        f"({named}{', ...' if len(scope.enabled_families) > 3 else ''})"
    ]
    if before < longest.lookback:
        notes.append(
            f"only {before} of the {longest.lookback} sessions {longest.name} needs exist from "
            f"{raw_days[longest.sources[0]][0]}; set ATFT_START_DATE earlier for full history"
        )
    return notes


def too_short_for_splits(scope: PipelineScope, dataset_days: list[dt.date]) -> str:
    """Why the train/validation/test splits cannot be cut from ``dataset_days`` ('' if they
    can)."""
    try:
        scope.config.splits.resolve(dataset_days)
    except ValueError as exc:
        return (
            f"ml_dataset will have {len(dataset_days)} session(s), too few for the train/"
            f"validation/test splits ({exc}); run a longer range or set splits in --config"
        )
    return ""
