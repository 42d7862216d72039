"""The one trading-day partitions definition every date-partitioned asset shares."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping

from atft_pipeline import calendar

TOKYO = ZoneInfo("Asia/Tokyo")
# Saturday and Sunday ticks of the daily partition cron.
_WEEKEND_CRONS = ("0 0 * * 6", "0 0 * * 0")
# Partition keys exist up to this many days ahead of today so that tonight's partition (the
# trading day that just closed) is addressable by the nightly schedule.
_CALENDAR_HORIZON_YEARS = 2


@lru_cache(maxsize=8)
def trading_day_partitions(start: dt.date) -> DailyPartitionsDefinition:
    """Daily partitions in Asia/Tokyo with weekends and JPX holidays (XTKS) excluded."""
    horizon = dt.date(dt.date.today().year + _CALENDAR_HORIZON_YEARS, 12, 30)
    holidays = calendar.holidays(start, horizon)
    return DailyPartitionsDefinition(
        start_date=start.isoformat(),
        timezone="Asia/Tokyo",
        end_offset=1,
        exclusions=[*_WEEKEND_CRONS, *(dt.datetime(d.year, d.month, d.day, tzinfo=TOKYO) for d in holidays)],
    )


def trading_day_lookback(days: int) -> TimeWindowPartitionMapping:
    """Map a partition to itself and the ``days`` trading days before it."""
    return TimeWindowPartitionMapping(start_offset=-days, end_offset=0)


def partition_dates(keys: list[str]) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in keys]
