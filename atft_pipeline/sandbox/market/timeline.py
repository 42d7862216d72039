"""The market's trading days and the calendar facts derived from them.

All day arithmetic in the sandbox is done on indices into ``Timeline.days`` (the XTKS sessions
from ``atft_pipeline.calendar``), so "2 business days later" is simply ``index + 2``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from atft_pipeline import calendar

# TSE cash-equity close: 15:00 until 2024-11-04, 15:30 from 2024-11-05 (extended session).
_CLOSE_EXTENDED_FROM = dt.date(2024, 11, 5)
# Weeks with 2 or fewer business days have no weekly margin data.
MIN_SESSIONS_PER_MARGIN_WEEK = 3
# TSE market restructuring: Prime/Standard/Growth replace 1st/2nd/Mothers/JASDAQ.
SEGMENT_MIGRATION = dt.date(2022, 4, 4)


def close_time(day: dt.date) -> str:
    """Cash-session close of ``day``; a disclosure at or after it moves the next session."""
    return "15:30:00" if day >= _CLOSE_EXTENDED_FROM else "15:00:00"


@dataclass(frozen=True)
class Timeline:
    days: tuple[dt.date, ...]

    @classmethod
    def between(cls, start: dt.date, end: dt.date) -> Timeline:
        days = tuple(calendar.trading_days(start, end))
        if len(days) < 2:
            raise ValueError(f"no trading days between {start} and {end}")
        return cls(days)

    def __len__(self) -> int:
        return len(self.days)

    @cached_property
    def ordinals(self) -> np.ndarray:
        return np.array([d.toordinal() for d in self.days], dtype=np.int64)

    def index_on_or_after(self, day: dt.date) -> int:
        """Index of the first session on or after ``day`` (``len(self)`` if none)."""
        return int(np.searchsorted(self.ordinals, day.toordinal(), side="left"))

    def index_on_or_before(self, day: dt.date) -> int:
        """Index of the last session on or before ``day`` (-1 if none)."""
        return int(np.searchsorted(self.ordinals, day.toordinal(), side="right")) - 1

    @cached_property
    def week_ends(self) -> np.ndarray:
        """Indices of the last session of each calendar week holding >= 3 sessions.

        These are the weekly margin application dates (normally Fridays).
        """
        iso = np.array([d.isocalendar()[:2] for d in self.days])
        key = iso[:, 0] * 100 + iso[:, 1]
        last = np.flatnonzero(np.r_[key[1:] != key[:-1], True])
        first = np.r_[0, last[:-1] + 1]
        return last[(last - first + 1) >= MIN_SESSIONS_PER_MARGIN_WEEK]

    @cached_property
    def weeks(self) -> list[tuple[int, int]]:
        """(first, last) session index of every calendar week (for weekly flow statistics)."""
        iso = np.array([d.isocalendar()[:2] for d in self.days])
        key = iso[:, 0] * 100 + iso[:, 1]
        last = np.flatnonzero(np.r_[key[1:] != key[:-1], True])
        first = np.r_[0, last[:-1] + 1]
        return list(zip(first.tolist(), last.tolist(), strict=True))

    @cached_property
    def month_starts(self) -> np.ndarray:
        """Indices of the first session of every calendar month in range."""
        months = np.array([d.year * 12 + d.month for d in self.days])
        return np.flatnonzero(np.r_[True, months[1:] != months[:-1]])

    @cached_property
    def migration_index(self) -> int:
        """Index of the first session on the new market segments (may be 0 or ``len``)."""
        return self.index_on_or_after(SEGMENT_MIGRATION)
