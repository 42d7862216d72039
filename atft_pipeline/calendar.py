"""The JPX (XTKS) trading calendar.

Trading days come from ``exchange_calendars``' XTKS calendar (weekends, JPX holidays and the
year-end closure excluded). The sandbox market, the partitions and the stand-in server's
``markets/calendar`` all use this one definition, and it is checked against the API's own
calendar (``HolDiv`` in {1, 2} counts as a trading day).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import polars as pl

_CALENDAR_FIRST = dt.date(2000, 1, 4)
_CALENDAR_LAST = dt.date(2030, 12, 30)


@lru_cache(maxsize=1)
def _all_sessions() -> tuple[dt.date, ...]:
    import exchange_calendars as xcals  # imported lazily: it pulls in pandas

    cal = xcals.get_calendar("XTKS", start=_CALENDAR_FIRST.isoformat(), end=_CALENDAR_LAST.isoformat())
    return tuple(ts.date() for ts in cal.sessions)


def _check_range(start: dt.date, end: dt.date) -> None:
    if start < _CALENDAR_FIRST or end > _CALENDAR_LAST:
        raise ValueError(
            f"trading calendar covers {_CALENDAR_FIRST}..{_CALENDAR_LAST}; asked {start}..{end}"
        )


def trading_days(start: dt.date | str, end: dt.date | str) -> list[dt.date]:
    """All XTKS sessions in ``[start, end]`` (inclusive), ascending."""
    start, end = _as_date(start), _as_date(end)
    _check_range(start, end)
    return [d for d in _all_sessions() if start <= d <= end]


def is_trading_day(day: dt.date | str) -> bool:
    day = _as_date(day)
    _check_range(day, day)
    return day in _session_set()


@lru_cache(maxsize=1)
def _session_set() -> frozenset[dt.date]:
    return frozenset(_all_sessions())


def shift_trading_days(day: dt.date | str, n: int) -> dt.date:
    """The session ``n`` trading days after (n > 0) or before (n < 0) ``day``.

    Counting starts at ``day``'s position in the session list: for a non-session ``day``,
    ``n = -1`` is the last session before it and ``n = 0`` the first session after it.
    """
    import bisect

    day = _as_date(day)
    sessions = _all_sessions()
    i = bisect.bisect_left(sessions, day) + n
    if not 0 <= i < len(sessions):
        raise ValueError(f"{n} trading days from {day} is outside the calendar")
    return sessions[i]


def holidays(start: dt.date | str, end: dt.date | str) -> list[dt.date]:
    """Weekdays in ``[start, end]`` on which XTKS is closed (JPX holidays, year-end closure)."""
    start, end = _as_date(start), _as_date(end)
    sessions = set(trading_days(start, end))
    out = []
    d = start
    while d <= end:
        if d.weekday() < 5 and d not in sessions:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def calendar_frame(start: dt.date | str, end: dt.date | str) -> pl.DataFrame:
    """Every calendar day in range with a J-Quants ``HolDiv`` (``"1"`` open, ``"0"`` closed)."""
    start, end = _as_date(start), _as_date(end)
    sessions = set(trading_days(start, end))
    days = pl.date_range(start, end, interval="1d", eager=True)
    return pl.DataFrame(
        {"Date": days, "HolDiv": ["1" if d in sessions else "0" for d in days]}
    )


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def api_calendar_mismatches(frame: pl.DataFrame) -> list[dt.date]:
    """Days where the API's calendar (``HolDiv`` 1/2 = open) disagrees with XTKS.

    Only the overlap of the two calendars is compared; an empty list means they agree.
    """
    if frame.is_empty():
        return []
    first = max(frame["Date"].min(), _CALENDAR_FIRST)
    last = min(frame["Date"].max(), _CALENDAR_LAST)
    if first > last:
        return []
    sessions = set(trading_days(first, last))
    in_range = frame.filter(pl.col("Date").is_between(first, last))
    api_open = in_range.select(
        pl.col("Date"), pl.col("HolDiv").is_in(["1", "2"]).alias("open")
    ).iter_rows()
    return sorted(d for d, is_open in api_open if is_open != (d in sessions))
