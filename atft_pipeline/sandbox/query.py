"""V2 query semantics for the stand-in server: parameter validation, plan windows, row selection.

Everything here is independent of HTTP: ``parse_query`` turns query parameters into a
validated ``Query`` (or raises ``ApiError`` with the status and message the API would send),
and ``EndpointTable.select`` answers it from one endpoint's table.

Tables are sorted by the endpoint's date field once and indexed by date, so ``date=D`` and
``from``/``to`` are O(log n) slices instead of scans (a day of the 1.79 M-row real bars is
selected in microseconds; encoding it as JSON is what takes time).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import polars as pl

from atft_pipeline.jquants.endpoints import EQUITIES_BARS_DAILY, Endpoint, Plan
from atft_pipeline.sandbox.clock import (
    HIDDEN_COLUMNS,
    LATER_FACTOR,
    PUBLISHED_AT,
    adjust_as_of,
    clock_columns,
    last_session_visible,
    visible,
)

# Date-valued parameters -> the column they select on (None: the endpoint's date field).
_DATE_EQUALS: dict[str, str | None] = {
    "date": None,
    "disc_date": "DiscDate",
    "calc_date": "CalcDate",
    "published_date": "PubDate",
}
_DATE_RANGES: dict[tuple[str, str], str | None] = {
    ("from", "to"): None,
    ("disc_date_from", "disc_date_to"): "DiscDate",
}
DATE_PARAMS = frozenset(_DATE_EQUALS) | {p for pair in _DATE_RANGES for p in pair}
# Parameters that filter a column by equality.
_VALUE_FILTERS = {"code": "Code", "s33": "S33", "section": "Section", "hol_div": "HolDiv"}
# date= and from/to (and their disclosure-date twins) are alternatives, never combined.
_EXCLUSIVE = (("date", ("from", "to")), ("disc_date", ("disc_date_from", "disc_date_to")))

# The calendar runs to the end of next year and the earnings calendar is latest-only: the
# subscription window does not restrict them.
_WINDOW_EXEMPT = frozenset({"markets/calendar", "equities/earnings-calendar"})
_SNAPSHOT_ENDPOINT = "equities/master"
FREE_DELAY = dt.timedelta(weeks=12)

_YYYYMMDD = re.compile(r"\d{8}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CODE = re.compile(r"[0-9A-Za-z]{4,5}")
_HOL_DIVS = frozenset({"0", "1", "2", "3"})


class ApiError(Exception):
    """An answer other than 200, with the status and ``message`` the API would send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PlanWindow:
    """The dates a subscription may request: ``start`` through ``end`` (None: open-ended)."""

    start: dt.date
    end: dt.date | None

    def contains(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)

    def message(self) -> str:
        # The API leaves the end blank when the window reaches today.
        end = self.end.isoformat() if self.end else ""
        return f"Your subscription covers the following dates: {self.start.isoformat()} ~ {end}."


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a non-leap target year
        return day.replace(year=day.year - years, day=28)


def plan_window(plan: Plan, today: dt.date) -> PlanWindow:
    """Free: 2 years ending 12 weeks ago (delayed); Light 5 y, Standard 10 y, Premium 20 y."""
    years = int(plan.history_years)
    if plan is Plan.FREE:
        end = today - FREE_DELAY
        return PlanWindow(_years_before(end, years), end)
    return PlanWindow(_years_before(today, years), None)


def parse_query_date(name: str, value: str) -> dt.date:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` -> date; anything else is a 400 naming the parameter."""
    text = value.strip()
    try:
        if _YYYYMMDD.fullmatch(text):
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if _ISO_DATE.fullmatch(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise ApiError(400, f"'{name}' must be a date as YYYYMMDD or YYYY-MM-DD, got {value!r}.")


def normalize_params(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Query parameters as recorded in the request stats: sorted, dates in ISO form,
    ``pagination_key`` dropped (every page of one query counts as the same query)."""
    out: dict[str, str] = {}
    for name, value in items:
        if name == "pagination_key":
            continue
        if name in DATE_PARAMS:
            # An invalid date is recorded verbatim; the request itself is answered 400.
            with contextlib.suppress(ApiError):
                value = parse_query_date(name, value).isoformat()
        out[name] = value
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Query:
    """A validated request: typed parameter values plus the page it asks for."""

    endpoint: Endpoint
    dates: dict[str, dt.date]
    values: dict[str, str]
    pagination_key: str | None
    # Incremental retrieval: only rows published after this moment (a decoded ``cursor``).
    published_after: dt.datetime | None = None

    @property
    def normalized(self) -> dict[str, str]:
        params = {k: v.isoformat() for k, v in self.dates.items()} | self.values
        if self.published_after is not None:
            params["cursor"] = encode_cursor(self.published_after)
        return dict(sorted(params.items()))


def parse_query(endpoint: Endpoint, items: list[tuple[str, str]], window: PlanWindow) -> Query:
    """Validate query parameters the way the API does; raise ``ApiError(400, ...)`` otherwise."""
    names = [name for name, _ in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ApiError(400, f"Parameter(s) given more than once: {', '.join(repeated)}.")
    params = dict(items)
    unknown = sorted(set(params) - set(endpoint.params))
    if unknown:
        supported = ", ".join(endpoint.params)
        raise ApiError(
            400,
            f"Unsupported parameter(s) for this API: {', '.join(unknown)}. Supported: {supported}.",
        )
    if endpoint.required_any and not any(params.get(p) for p in endpoint.required_any):
        required = ", ".join(endpoint.required_any)
        raise ApiError(400, f"This API requires at least 1 parameter as follows; {required}")
    for single, pair in _EXCLUSIVE:
        if single in params and any(p in params for p in pair):
            raise ApiError(400, f"'{single}' cannot be combined with '{pair[0]}'/'{pair[1]}'.")
    # published_date selects by publication day, alone or with code, never with a date range.
    if "published_date" in params and any(p in params for p in ("date", "from", "to")):
        raise ApiError(400, "'published_date' cannot be combined with 'date', 'from' or 'to'.")

    dates = {n: parse_query_date(n, v) for n, v in params.items() if n in DATE_PARAMS}
    for lo, hi in _DATE_RANGES:
        if lo in dates and hi in dates and dates[lo] > dates[hi]:
            raise ApiError(400, f"'{lo}' must be older than '{hi}'")
    if endpoint.path not in _WINDOW_EXEMPT:
        outside = [d for d in dates.values() if not window.contains(d)]
        if outside:
            raise ApiError(400, window.message())

    values = {n: v for n, v in params.items() if n in _VALUE_FILTERS}
    if "code" in values:
        values["code"] = _normalize_code(values["code"])
    if "hol_div" in values and values["hol_div"] not in _HOL_DIVS:
        raise ApiError(
            400, f"'hol_div' must be one of {sorted(_HOL_DIVS)}, got {values['hol_div']!r}."
        )
    cursor = params.get("cursor")
    published_after = decode_cursor(cursor) if cursor else None
    return Query(endpoint, dates, values, params.get("pagination_key"), published_after)


# A cursor is opaque to clients: base64 of the publication moment the previous answer
# reached. Rows published later are "new since the cursor".
def encode_cursor(moment: dt.datetime) -> str:
    return base64.urlsafe_b64encode(moment.isoformat().encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dt.datetime:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return dt.datetime.fromisoformat(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "Invalid cursor.") from None


def _normalize_code(code: str) -> str:
    """A 4-character code names the common stock, i.e. the 5-character code ending in 0."""
    if not _CODE.fullmatch(code):
        raise ApiError(400, f"'code' must be 4 or 5 digits, got {code!r}.")
    return code if len(code) == 5 else code + "0"


class EndpointTable:
    """One endpoint's rows, sorted by its date field (then key) and indexed by date.

    The simulated clock's columns (``clock.HIDDEN_COLUMNS``: publication moment, bars'
    factor products) live in a parallel frame, joined to a slice only when a request runs on
    the clock or with a cursor, so answers without either are exactly as before.
    """

    def __init__(self, endpoint: Endpoint, frame: pl.DataFrame) -> None:
        self.endpoint = endpoint
        date_field = endpoint.date_field
        order = [date_field, *[k for k in endpoint.key if k != date_field]] if date_field else []
        order = [c for c in order if c in frame.columns]
        # Rows without a date (an undecided earnings date) sort last and are outside the index.
        self.frame = frame.sort(order, nulls_last=True, maintain_order=True) if order else frame
        self._references: dict[dt.date, pl.DataFrame] = {}
        self._dates: list[dt.date] = []
        self._offsets: list[int] = [0]
        if date_field is not None and frame.height:
            runs = self.frame.get_column(date_field).drop_nulls().rle().struct.unnest()
            self._dates = runs.get_column("value").to_list()
            lengths = runs.get_column("len").to_list()
            for n in lengths:
                self._offsets.append(self._offsets[-1] + n)

    @property
    def last_date(self) -> dt.date | None:
        return self._dates[-1] if self._dates else None

    @cached_property
    def _clock_columns(self) -> pl.DataFrame:
        # Built on the first request that needs them: a server without a clock never pays.
        return clock_columns(self.endpoint, self.frame)

    def between(self, lo: dt.date | None, hi: dt.date | None) -> pl.DataFrame:
        """Rows whose date field lies in ``[lo, hi]``; both None: every row, undated included."""
        start, length = self._span(lo, hi)
        return self.frame.slice(start, length)

    def _span(self, lo: dt.date | None, hi: dt.date | None) -> tuple[int, int | None]:
        if lo is None and hi is None:
            return 0, None
        i = 0 if lo is None else bisect.bisect_left(self._dates, lo)
        j = len(self._dates) if hi is None else bisect.bisect_right(self._dates, hi)
        start, stop = self._offsets[i], self._offsets[max(i, j)]
        return start, stop - start

    def _rows(self, lo: dt.date | None, hi: dt.date | None, timed: bool) -> pl.DataFrame:
        """``between``, with the clock columns when ``timed``."""
        start, length = self._span(lo, hi)
        rows = self.frame.slice(start, length)
        if not timed:
            return rows
        return rows.hstack(self._clock_columns.slice(start, length))

    def watermark(self, as_of: dt.datetime | None) -> dt.datetime | None:
        """The publication moment an answer given at ``as_of`` reaches (the next cursor)."""
        if as_of is not None or PUBLISHED_AT not in self._clock_columns.columns:
            return as_of
        return self._clock_columns.get_column(PUBLISHED_AT).max()

    def select(
        self, query: Query, window: PlanWindow, as_of: dt.datetime | None = None
    ) -> pl.DataFrame:
        """The rows answering ``query`` (every page of it), in API order.

        ``as_of``: the simulated clock; only rows published by then, bars adjusted as then.
        """
        timed = as_of is not None or query.published_after is not None
        frame = self._select(query, window, as_of, timed)
        if not timed:
            return frame
        if query.published_after is not None:
            frame = frame.filter(pl.col(PUBLISHED_AT) > query.published_after)
        if as_of is not None and self.endpoint is EQUITIES_BARS_DAILY:
            frame = adjust_as_of(frame, self._reference(last_session_visible(as_of)))
        return frame.drop(HIDDEN_COLUMNS, strict=False)

    def _reference(self, day: dt.date) -> pl.DataFrame:
        """Per code, the factor product beyond ``day`` (see ``clock.adjust_as_of``)."""
        if day not in self._references:
            self._references[day] = (
                self._rows(None, day, timed=True).group_by("Code").agg(pl.col(LATER_FACTOR).last())
            )
        return self._references[day]

    def _select(
        self, query: Query, window: PlanWindow, as_of: dt.datetime | None, timed: bool
    ) -> pl.DataFrame:
        if self.endpoint.path == _SNAPSHOT_ENDPOINT:
            return self._snapshot(query, window, as_of, timed)
        date_field = self.endpoint.date_field
        windowed = self.endpoint.path not in _WINDOW_EXEMPT
        lo, hi = (window.start, window.end) if windowed else (None, None)
        filters: list[pl.Expr] = []
        for name, column in _DATE_EQUALS.items():
            if name in query.dates:
                day = query.dates[name]
                if (column or date_field) == date_field:
                    lo, hi = _narrow(lo, hi, day, day)
                else:
                    filters.append(pl.col(column) == day)
        for (start_name, end_name), column in _DATE_RANGES.items():
            start, end = query.dates.get(start_name), query.dates.get(end_name)
            if start is None and end is None:
                continue
            if (column or date_field) == date_field:
                lo, hi = _narrow(lo, hi, start, end)
            else:
                filters.append(pl.col(column).is_between(start or dt.date.min, end or dt.date.max))
        frame = self._rows(lo, hi, timed)
        if as_of is not None:
            frame = visible(frame, as_of)
        filters += [pl.col(_VALUE_FILTERS[n]) == v for n, v in query.values.items()]
        return frame.filter(filters) if filters else frame

    def _snapshot(
        self, query: Query, window: PlanWindow, as_of: dt.datetime | None, timed: bool
    ) -> pl.DataFrame:
        """``equities/master``: each code's latest row dated on or before the snapshot date.

        Without ``date`` the snapshot is the latest the subscription can see (the end of a
        Free plan's delayed window, otherwise everything stored).
        """
        day = query.dates.get("date", window.end)
        frame = self._rows(None, day, timed)
        if as_of is not None:
            frame = visible(frame, as_of)
        if "code" in query.values:
            frame = frame.filter(pl.col("Code") == query.values["code"])
        return frame.unique(subset="Code", keep="last", maintain_order=True).sort("Code")


def _narrow(
    lo: dt.date | None, hi: dt.date | None, start: dt.date | None, end: dt.date | None
) -> tuple[dt.date | None, dt.date | None]:
    if start is not None:
        lo = start if lo is None else max(lo, start)
    if end is not None:
        hi = end if hi is None else min(hi, end)
    return lo, hi
