"""Raw sources: which endpoint and which query give one trading day of each raw asset.

Each raw asset partition holds exactly what the API returns for that date, by the date the
endpoint defines (trade date, application date or publication date). This table is the one
place that says so; the Dagster layer only iterates over it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.jquants.endpoints import ENDPOINTS, Endpoint, Plan

if TYPE_CHECKING:
    from atft_pipeline.jquants.client import JQuantsClient


def _by_date(day: dt.date) -> dict[str, str]:
    return {"date": day.isoformat()}


def _by_range(day: dt.date) -> dict[str, str]:
    return {"from": day.isoformat(), "to": day.isoformat()}


def _by_disc_date(day: dt.date) -> dict[str, str]:
    return {"disc_date": day.isoformat()}


# Weekly margin interest is published on the 2nd business day after its application date.
WEEKLY_MARGIN_PUBLICATION_LAG = 2


def _published_weekly_margin(day: dt.date) -> dict[str, str]:
    """Partition = publication day; the query names the application date 2 sessions earlier."""
    return {"date": calendar.shift_trading_days(day, -WEEKLY_MARGIN_PUBLICATION_LAG).isoformat()}


def _by_published_date(day: dt.date) -> dict[str, str]:
    return {"published_date": day.isoformat()}


@dataclass(frozen=True)
class RawSource:
    asset: str  # Dagster asset name
    endpoint: Endpoint
    query: Callable[[dt.date], dict[str, str]]
    date_semantics: str  # what the partition date means for this source
    # A second query for rows that carry their publication date (``PubDate``): the partition
    # is then the union of those rows and the rows of ``query`` that have no ``PubDate``.
    # margin-interest needs both: weekly rows (before the daily regime) have no PubDate and
    # are found by application date; daily rows are found by publication date. The union is
    # "everything published on the day" in either regime without knowing the switch date.
    published_query: Callable[[dt.date], dict[str, str]] | None = None
    # Sessions after its date that a partition becomes available: index options of day t are
    # published at 03:00 on t+1, so a run on the evening of t cannot have them yet.
    available_sessions_later: int = 0

    @property
    def plan(self) -> Plan:
        return self.endpoint.plan

    def params_for(self, day: dt.date) -> dict[str, str]:
        return self.query(day)

    def row_date(self, day: dt.date) -> dt.date:
        """The value of the endpoint's date field on every row of partition ``day`` that was
        found by ``query`` (rows found by ``published_query`` carry ``PubDate == day``)."""
        params = self.query(day)
        value = params.get("date") or params.get("disc_date") or params.get("from")
        return dt.date.fromisoformat(value)


RAW_SOURCES: dict[str, RawSource] = {
    s.asset: s
    for s in (
        RawSource("raw_daily_quotes", ENDPOINTS["equities/bars/daily"], _by_date, "trade date"),
        RawSource("raw_listed_info", ENDPOINTS["equities/master"], _by_date, "snapshot date"),
        RawSource("raw_topix", ENDPOINTS["indices/bars/daily/topix"], _by_range, "trade date"),
        RawSource("raw_statements", ENDPOINTS["fins/summary"], _by_date, "disclosure date"),
        RawSource(
            "raw_weekly_margin_interest",
            ENDPOINTS["markets/margin-interest"],
            _published_weekly_margin,
            "publication date (weekly rows carry the application date, 2 sessions earlier; "
            "daily rows carry PubDate = the partition and the previous session's Date)",
            published_query=_by_published_date,
        ),
        RawSource(
            "raw_daily_margin_interest",
            ENDPOINTS["markets/margin-alert"],
            _by_date,
            "publication date",
        ),
        RawSource("raw_short_selling", ENDPOINTS["markets/short-ratio"], _by_date, "trade date"),
        RawSource(
            "raw_short_selling_positions",
            ENDPOINTS["markets/short-sale-report"],
            _by_disc_date,
            "disclosure date",
        ),
        RawSource(
            "raw_trades_spec", ENDPOINTS["equities/investor-types"], _by_range, "publication date"
        ),
        RawSource(
            "raw_index_options",
            ENDPOINTS["derivatives/bars/daily/options/225"],
            _by_date,
            "trade date (published 03:00 the next day)",
            available_sessions_later=1,
        ),
    )
}


class FetchedDays(dict[dt.date, pl.DataFrame]):
    """The frames of the days that were fetched (day -> frame, request order); ``failed``
    maps each day whose query failed (after its retries) to the error, naming endpoint and
    query. One bad day never costs the other days of the block."""

    def __init__(self, frames: dict[dt.date, pl.DataFrame], failed: dict[dt.date, str]) -> None:
        super().__init__(frames)
        self.failed = failed


async def fetch_raw_days(
    client: JQuantsClient, source: RawSource, days: Sequence[dt.date]
) -> FetchedDays:
    """Fetch one frame per trading day for ``source`` with the client's bounded concurrency.

    Each day is one query (plus its pages) and succeeds or fails on its own; a fetched day's
    frame is an empty typed frame where the API had no rows (a day without disclosures is not
    an error, a day of a source with rows every day is caught by validation).
    """
    results = await client.get_each(source.endpoint, [source.params_for(d) for d in days])
    if source.published_query is not None:
        # Margin interest: a day is the weekly rows of its application date plus whatever was
        # published that day (daily regime); the day fails if either query failed.
        published = await client.get_each(
            source.endpoint, [source.published_query(d) for d in days]
        )
        results = [
            pl.concat([frame.filter(pl.col("PubDate").is_null()), by_publication])
            if isinstance(frame, pl.DataFrame) and isinstance(by_publication, pl.DataFrame)
            else (frame if not isinstance(frame, pl.DataFrame) else by_publication)
            for frame, by_publication in zip(results, published, strict=True)
        ]
    frames = {d: r for d, r in zip(days, results, strict=True) if isinstance(r, pl.DataFrame)}
    failed = {d: str(r) for d, r in zip(days, results, strict=True) if not isinstance(r, pl.DataFrame)}
    return FetchedDays(frames, failed)
