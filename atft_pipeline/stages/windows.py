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


def stored_keys(store: PartitionStore, asset: str, days: list[dt.date]) -> list[str]:
    """The keys of ``days`` that ``asset`` has a stored partition for, ascending."""
    stored = set(store.partitions(asset))
    return [d.isoformat() for d in days if d.isoformat() in stored]


def frames_by_partition(frame: pl.DataFrame, dates: list[dt.date]) -> dict[str, pl.DataFrame]:
    """One frame per requested date, keyed by partition (empty frames for dates without rows)."""
    parts = {d: g for (d,), g in frame.partition_by("date", as_dict=True).items()}
    return {d.isoformat(): parts.get(d, frame.clear()) for d in dates}
