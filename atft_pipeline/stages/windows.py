"""Trading-day windows and per-partition splitting shared by the partitioned stages."""

from __future__ import annotations

import datetime as dt

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.storage import PartitionStore


def lookback_window(dates: list[dt.date], lookback: int, first_partition: dt.date) -> list[dt.date]:
    """Trading days from ``lookback`` sessions before the first date (not before the first
    partition) to the last date."""
    start = max(calendar.shift_trading_days(dates[0], -lookback), first_partition)
    return calendar.trading_days(start, dates[-1])


def seed_anchor(day: dt.date, lookback: int, first_partition: dt.date) -> dt.date:
    """Where a recursive family's window for ``day`` starts: the first session of the year
    holding the session ``lookback`` before ``day`` (not before the first partition).

    The anchor depends on ``day`` alone, so a nightly run and a backfill seed every exponential
    average of ``day`` on the same bar; the window still covers the family's lookback.
    """
    back = calendar.shift_trading_days(day, -lookback)
    if back <= first_partition:
        return first_partition
    return calendar.trading_days(max(dt.date(back.year, 1, 1), first_partition), back)[0]


def history_windows(
    dates: list[dt.date], lookback: int, first_partition: dt.date, anchored: bool
) -> list[tuple[list[dt.date], list[dt.date]]]:
    """``(dates, window)`` pairs covering ``dates``: one lookback window for them all, or, for
    a recursive family (``anchored``), one window per seed anchor (a backfill of N years
    computes about N + 1 windows)."""
    if not anchored:
        return [(dates, lookback_window(dates, lookback, first_partition))]
    groups: dict[dt.date, list[dt.date]] = {}
    for day in dates:
        groups.setdefault(seed_anchor(day, lookback, first_partition), []).append(day)
    return [(group, calendar.trading_days(start, group[-1])) for start, group in groups.items()]


def stored_keys(store: PartitionStore, asset: str, days: list[dt.date]) -> list[str]:
    """The keys of ``days`` that ``asset`` has a stored partition for, ascending."""
    stored = set(store.partitions(asset))
    return [d.isoformat() for d in days if d.isoformat() in stored]


def frames_by_partition(frame: pl.DataFrame, dates: list[dt.date]) -> dict[str, pl.DataFrame]:
    """One frame per requested date, keyed by partition (empty frames for dates without rows)."""
    parts = {d: g for (d,), g in frame.partition_by("date", as_dict=True).items()}
    return {d.isoformat(): parts.get(d, frame.clear()) for d in dates}
