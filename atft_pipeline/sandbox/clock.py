"""The stand-in's simulated clock: when each row became public, and prices as known then.

A nightly pipeline meets an API whose answers change over time. At clock time ``T`` (Tokyo
time, naive datetimes) the stand-in serves only the rows published by ``T`` and the
adjusted bar columns as they were at ``T``. The publication moments (``published_at``) are:

- bars, TOPIX, short-selling ratios: the trading day at 16:30, after the close;
- fins/summary: the 18:00 update of ``DiscDate`` for documents disclosed up to 18:00, the
  24:30 update (00:30 of the next calendar day) for later ones or ones without ``DiscTime``;
- Nikkei 225 index options: 03:00 on the next calendar day (the night session ends first);
- margin interest: ``PubDate`` at 16:30 (daily regime); weekly rows without ``PubDate`` two
  sessions after their application date, at 16:30;
- margin alerts, investor types: ``PubDate`` at 16:30; short-sale reports: ``DiscDate`` 16:30;
- the listed-issue master: 08:00 on the snapshot date (changes are announced in advance);
- the earnings calendar: 19:00 of the session before the announcement day;
- the trading calendar: always (it is published a year ahead).

Adjusted columns: J-Quants re-adjusts ``Adj*`` of every earlier row when a split takes
effect. As of ``T`` the adjustment of a row dated ``d`` is the product of the ``AdjFactor``
of that code's rows after ``d`` and up to the last session visible at ``T``; the stored
``Adj*`` (adjusted to the end of the data) are replaced by raw values times that product.
"""

from __future__ import annotations

import datetime as dt
import polars as pl

from atft_pipeline import calendar
from atft_pipeline.jquants.adjustment import adjusted_columns, later_factor
from atft_pipeline.jquants.endpoints import EQUITIES_BARS_DAILY, Endpoint
from atft_pipeline.jquants.sources import WEEKLY_MARGIN_PUBLICATION_LAG

TOKYO = dt.timezone(dt.timedelta(hours=9), "JST")
PUBLISHED_AT = "_published_at"  # served tables' hidden column (never encoded on the wire)
LATER_FACTOR = "_later_factor"  # bars: product of the code's AdjFactor after the row's date
HIDDEN_COLUMNS = (PUBLISHED_AT, LATER_FACTOR)

AFTER_CLOSE = dt.time(16, 30)
STATEMENTS_EARLY_UPDATE = dt.time(18, 0)
# The 24:30 update is 00:30 of the next calendar day.
STATEMENTS_LATE_UPDATE = dt.timedelta(days=1, minutes=30)
OPTIONS_PUBLISHED = dt.timedelta(days=1, hours=3)
MASTER_PUBLISHED = dt.time(8, 0)
EARNINGS_CALENDAR_PUBLISHED = dt.time(19, 0)

_AT_CLOSE = ("equities/bars/daily", "indices/bars/daily/topix", "markets/short-ratio")
_BY_PUBDATE = ("markets/margin-alert", "equities/investor-types")

_SESSION_PREFIXES = ("", "M", "A")


def _at(day: pl.Expr, time: dt.time) -> pl.Expr:
    return day.cast(pl.Datetime("us")) + pl.duration(hours=time.hour, minutes=time.minute)


def _shift_sessions(frame: pl.DataFrame, column: str, n: int) -> pl.Expr:
    """``column`` moved ``n`` trading sessions (the XTKS calendar); one lookup per date."""
    days = frame.get_column(column).drop_nulls().unique().to_list()
    shifted = {d: calendar.shift_trading_days(d, n) for d in days}
    return pl.col(column).replace_strict(shifted, default=None, return_dtype=pl.Date)


def published_at(endpoint: Endpoint, frame: pl.DataFrame) -> pl.Expr | None:
    """When each row of ``endpoint`` became public; None: always visible (the calendar)."""
    path = endpoint.path
    if path in _AT_CLOSE:
        return _at(pl.col("Date"), AFTER_CLOSE)
    if path in _BY_PUBDATE:
        return _at(pl.col("PubDate"), AFTER_CLOSE)
    if path == "markets/short-sale-report":
        return _at(pl.col("DiscDate"), AFTER_CLOSE)
    if path == "equities/master":
        return _at(pl.col("Date"), MASTER_PUBLISHED)
    if path == "derivatives/bars/daily/options/225":
        return pl.col("Date").cast(pl.Datetime("us")) + OPTIONS_PUBLISHED
    if path == "equities/earnings-calendar":
        return _at(_shift_sessions(frame, "Date", -1), EARNINGS_CALENDAR_PUBLISHED)
    if path == "markets/margin-interest":
        weekly = _shift_sessions(frame, "Date", WEEKLY_MARGIN_PUBLICATION_LAG)
        return _at(pl.coalesce(pl.col("PubDate"), weekly), AFTER_CLOSE)
    if path == "fins/summary":
        disc = pl.col("DiscDate").cast(pl.Datetime("us"))
        disc_time = pl.col("DiscTime").str.slice(0, 5)
        early = disc_time.is_not_null() & (disc_time <= STATEMENTS_EARLY_UPDATE.strftime("%H:%M"))
        return (
            pl.when(early)
            .then(_at(pl.col("DiscDate"), STATEMENTS_EARLY_UPDATE))
            .otherwise(disc + STATEMENTS_LATE_UPDATE)
        )
    if path == "markets/calendar":
        return None
    raise ValueError(f"no publication rule for endpoint {path!r}")


def clock_columns(endpoint: Endpoint, frame: pl.DataFrame) -> pl.DataFrame:
    """The hidden columns of ``frame``'s rows: ``_published_at`` and, for bars,
    ``_later_factor`` (no columns for the always-visible calendar)."""
    rule = published_at(endpoint, frame)
    columns = [] if rule is None else [rule.alias(PUBLISHED_AT)]
    if endpoint is EQUITIES_BARS_DAILY:
        columns.append(later_factor().alias(LATER_FACTOR))
    return frame.select(columns) if columns else pl.DataFrame()


def visible(frame: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """The rows of a prepared table published by ``as_of``."""
    if PUBLISHED_AT not in frame.columns:
        return frame
    return frame.filter(pl.col(PUBLISHED_AT) <= as_of)


def last_session_visible(as_of: dt.datetime) -> dt.date:
    """The latest trading day whose bars are public at ``as_of``."""
    day = as_of.date()
    if not calendar.is_trading_day(day) or as_of.time() < AFTER_CLOSE:
        return calendar.shift_trading_days(day, -1)
    return day


def adjust_as_of(rows: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """Bars ``rows`` with every ``Adj*`` column adjusted as known on the reference day.

    ``reference``: per code, ``_later_factor`` of its last row on or before the reference
    day (its factor product beyond that day). Dividing it out leaves the product of the
    factors between a row and the reference day, which is what the API showed then.
    """
    scale = pl.col(LATER_FACTOR) / pl.col("_reference_factor")
    joined = rows.join(
        reference.rename({LATER_FACTOR: "_reference_factor"}), on="Code", how="left",
        maintain_order="left",
    )
    columns = [
        expr
        for prefix in _SESSION_PREFIXES
        for expr in adjusted_columns(scale, rows.columns, prefix)
    ]
    return joined.with_columns(columns).drop("_reference_factor")


def parse_clock(text: str) -> dt.datetime:
    """An ISO datetime (or date: its end of day) as naive Tokyo time.

    An aware datetime is converted to Asia/Tokyo (UTC+9, no daylight saving).
    """
    value = text.strip()
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(23, 59, 59))
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"clock must be an ISO date or datetime (e.g. 2024-03-05T19:30:00+09:00), got {text!r}"
        ) from None
    return tokyo_time(moment)


def tokyo_time(moment: dt.datetime) -> dt.datetime:
    """``moment`` as naive Tokyo time (an aware one is converted; a naive one is Tokyo)."""
    return moment if moment.tzinfo is None else moment.astimezone(TOKYO).replace(tzinfo=None)

