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
def trading_day_partitions(start: dt.date, last: dt.date | None = None) -> DailyPartitionsDefinition:
    """Daily partitions in Asia/Tokyo with weekends and JPX holidays (XTKS) excluded, from
    ``start`` to ``last`` (a data set's last session, e.g. the sandbox market's) or, without
    it, to tonight's session."""
    horizon = last or dt.date(dt.date.today().year + _CALENDAR_HORIZON_YEARS, 12, 30)
    holidays = calendar.holidays(start, horizon)
    return DailyPartitionsDefinition(
        start_date=start.isoformat(),
        # end_date is exclusive: the day after the last session ends the last partition
        end_date=(last + dt.timedelta(days=1)).isoformat() if last else None,
        timezone="Asia/Tokyo",
        # Tonight's partition must exist before its day's window closes at midnight (the 19:30
        # schedule asks for it), also on a data set with a last session: the simulated nights
        # evaluate schedules at times inside the sandbox's range.
        end_offset=1,
        exclusions=[*_WEEKEND_CRONS, *(dt.datetime(d.year, d.month, d.day, tzinfo=TOKYO) for d in holidays)],
    )


def trading_day_lookback(days: int) -> TimeWindowPartitionMapping:
    """Map a partition to itself and the ``days`` trading days before it."""
    return TimeWindowPartitionMapping(start_offset=-days, end_offset=0)


def partition_dates(keys: list[str]) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in keys]
