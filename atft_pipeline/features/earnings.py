"""Earnings family: where each stock stands in its disclosure cycle, and how the price reacted.

From ``raw_statements`` (fins/summary rows, published by ``DiscDate``), for a row dated t only
disclosures known by t are used: disclosed on or before t, by 18:00 if on t (a later one comes
with the 24:30 update, after the evening's run, and counts from the next day; its price
reaction is still timed by its ``DiscDate`` and ``DiscTime``).

Timing of a disclosure. A release during trading hours can move the price the same day; one
at or after the close (15:00, 15:30 from 2024-11-05 when the TSE extended its session), or
with an unknown time, can only move it from the next session. So each disclosure has a
*base session* (the last session whose close predates the news: the disclosure day itself
for an after-close release, else the session before it) and a *reaction session* (the next
one). Both follow from sessions on or before the disclosure day, so they never depend on how
far the window extends. Returns "since the disclosure" are measured from the base close, and
the announcement reaction (base close -> reaction close) is only shown once the reaction
session's close is <= t.

Reports. An earnings report is a ``*FinancialStatements*`` disclosure; a later disclosure for
the same period (``CurPerType``, ``CurPerEn``) is a correction and does not count as a new
report (cadence, counts and "days since" use the first one).

Next report. The company's quarterly cadence is seasonal (a full-year report comes later
after its period end than a quarterly one), so the expected next date is the latest report
date plus the gap observed a year earlier between the report for the same quarter and the
one that followed it (reports k-4 -> k-3); with less history, or an implausible gap (a
missed quarter), 91 days. Only reports <= t enter.

Day counts are in sessions (the XTKS calendar: weekends and exchange holidays excluded).
A revision older than the family's lookback is reported as none (null), as a nightly run,
which reads only the lookback, sees it.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from atft_pipeline import calendar as xtks
from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.market import SESSION, session_index, stock_panel, topix_returns
from atft_pipeline.features.common import raw_source

FAMILY_NAME = "earnings"
STATEMENT_COLUMNS = ("Code", "DiscDate", "DiscTime", "DocType", "CurPerType", "CurPerEn")
REPORT_DOC = "FinancialStatements"  # substring of every earnings-report DocType
EARN_REVISION_DOCS = ("EarnForecastRevision", "REITEarnForecastRevision")
CLOSE_TIME = dt.time(15, 0)
CLOSE_TIME_FROM_2024_11_05 = dt.time(15, 30)
EXTENDED_CLOSE_START = dt.date(2024, 11, 5)

DEFAULT_REPORT_GAP_DAYS = 91
PLAUSIBLE_GAP_DAYS = (30, 190)  # a seasonal gap outside this means a skipped/odd report
EARNINGS_WINDOW_SESSIONS = 3
REPORT_COUNT_WINDOW = 250
LOOKBACK = 320  # the seasonal gap needs the reports of the year before the latest one

_F = FeatureSpec
FEATURES: tuple[FeatureSpec, ...] = (
    _F("earn_days_since_disclosure", "sessions since the latest disclosure of any type", LOOKBACK),
    _F("earn_days_since_report", "sessions since the latest earnings report", LOOKBACK),
    _F("earn_days_to_next_report",
       "sessions until the expected next report (negative when overdue)", LOOKBACK),
    _F("earn_window", "1 within ±3 sessions of the expected next report", LOOKBACK, pl.Int8),
    _F("earn_ret_since_report", "return from the close before the latest report to today",
       LOOKBACK),
    _F("earn_excess_ret_since_report", "earn_ret_since_report minus TOPIX over the same span",
       LOOKBACK),
    _F("earn_report_count_250d", "earnings reports in the last 250 sessions", REPORT_COUNT_WINDOW),
    _F("earn_latest_is_revision",
       "1 if the latest disclosure day included an earnings-forecast revision", LOOKBACK, pl.Int8),
    _F("earn_days_since_revision", "sessions since the latest earnings-forecast revision, "
       f"null when none in the last {LOOKBACK} sessions", LOOKBACK),
    _F("earn_announcement_ret",
       "close-to-close return on the first session after the latest disclosure", LOOKBACK),
    _F("earn_announcement_excess_ret", "earn_announcement_ret minus TOPIX's return that session",
       LOOKBACK),
)


def _session_ordinals(inputs: FeatureInputs) -> pl.LazyFrame:
    """``_day`` -> ``_ordinal``: the number of XTKS sessions before that day, for every XTKS
    session from the window start to a year past its end (expected report dates lie ahead of
    t). The sessions in [a, b) are ``ordinal(b) - ordinal(a)`` with ordinal(d) taken at the
    first session on or after d; the exchange calendar, not the window, decides it. Past the
    XTKS calendar's coverage the value is null."""
    first, last = min(inputs.calendar), max(inputs.calendar)
    try:
        days = xtks.trading_days(first, last + dt.timedelta(days=400))
    except ValueError:
        days = xtks.trading_days(first, last)
    return pl.LazyFrame({"_day": days}, schema={"_day": pl.Date}).with_row_index("_ordinal")


def _with_ordinal(frame: pl.LazyFrame, ordinals: pl.LazyFrame, day: str, alias: str) -> pl.LazyFrame:
    """Attach the session ordinal of column ``day`` (first XTKS session on or after it)."""
    return (
        frame.sort(day)
        .join_asof(ordinals, left_on=day, right_on="_day", strategy="forward")
        .drop("_day")
        .rename({"_ordinal": alias})
        .with_columns(pl.col(alias).cast(pl.Int64))
    )


def _by_code_in_time(expr: pl.Expr) -> pl.Expr:
    return expr.over("code", order_by="disc_date")


def _disclosures(inputs: FeatureInputs, sessions: pl.LazyFrame) -> pl.LazyFrame:
    """One row per statement with its base and reaction sessions and its report identity."""
    time = pl.coalesce(
        pl.col("DiscTime").str.to_time("%H:%M:%S", strict=False),
        pl.col("DiscTime").str.to_time("%H:%M", strict=False),
    )
    close = (
        pl.when(pl.col("DiscDate") >= EXTENDED_CLOSE_START)
        .then(pl.lit(CLOSE_TIME_FROM_2024_11_05))
        .otherwise(pl.lit(CLOSE_TIME))
    )
    during_session = time.is_not_null() & (time < close)
    statements = raw_source(inputs, FAMILY_NAME, "raw_statements", STATEMENT_COLUMNS).select(
        pl.col("Code").alias("code"),
        # the day it is known: a disclosure after 18:00 (or without a time) the next day
        common.statement_available().alias("disc_date"),
        time.alias("disc_time"),
        pl.col("DocType")
        .str.contains(REPORT_DOC, literal=True)
        .fill_null(False)
        .alias("is_report"),
        pl.col("DocType").is_in(EARN_REVISION_DOCS).fill_null(False).alias("is_revision"),
        pl.col("CurPerType").alias("period_type"),
        pl.col("CurPerEn").alias("period_end"),
        # the base session is the last one on or before this day
        pl.when(during_session)
        .then(pl.col("DiscDate") - dt.timedelta(days=1))
        .otherwise(pl.col("DiscDate"))
        .alias("_base_from"),
    )
    return (
        statements.filter(pl.col("code").is_not_null() & pl.col("disc_date").is_not_null())
        .sort("_base_from")
        .join_asof(
            sessions.rename({"date": "_session_date", SESSION: "base_session"}),
            left_on="_base_from",
            right_on="_session_date",
            strategy="backward",
        )
        .with_columns((pl.col("base_session") + 1).alias("reaction_session"))
        .drop("_base_from", "_session_date")
    )


def _per_day(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Collapse disclosures to one row per (code, disc_date): the earliest reaction counts."""
    return frame.group_by("code", "disc_date").agg(
        pl.col("base_session").min(),
        pl.col("reaction_session").min(),
        pl.col("is_report").any(),
        pl.col("is_revision").any(),
    )


def _reports(disclosures: pl.LazyFrame) -> pl.LazyFrame:
    """First disclosure of each reporting period, one row per (code, report day), with the
    expected next report date and the running report count."""
    # a report without its period identity is its own period
    period = [
        pl.col("period_type").fill_null(""),
        pl.coalesce(pl.col("period_end"), pl.col("disc_date")).alias("_period_end"),
    ]
    first_of_period = (
        disclosures.filter(pl.col("is_report"))
        .sort("disc_date", "disc_time", nulls_last=True)
        .group_by("code", *period)
        .first()
    )
    day = pl.col("disc_date")
    seasonal_gap = (_by_code_in_time(day.shift(3)) - _by_code_in_time(day.shift(4))).dt.total_days()
    same_quarter = _by_code_in_time(pl.col("period_type").shift(4)) == pl.col("period_type")
    lo, hi = PLAUSIBLE_GAP_DAYS
    gap = (
        pl.when(same_quarter & seasonal_gap.is_between(lo, hi))
        .then(seasonal_gap)
        .otherwise(DEFAULT_REPORT_GAP_DAYS)
    )
    return (
        first_of_period.group_by("code", "disc_date")
        .agg(pl.col("base_session").min(), pl.col("period_type").first())
        .sort("code", "disc_date")
        .with_columns(
            (day + pl.duration(days=gap)).alias("expected_next"),
            _by_code_in_time(day.cum_count()).alias("report_count"),
        )
    )


def _with_closes(
    frame: pl.LazyFrame,
    closes: pl.LazyFrame,
    tpx: pl.LazyFrame,
    session: str,
    price: str,
    alias: str,
) -> pl.LazyFrame:
    """Attach the stock's ``price`` (as ``alias``) and TOPIX's close (as ``{alias}_tpx``) at
    the session numbered by column ``session``."""
    return frame.join(
        closes.select("code", pl.col(SESSION).alias(session), pl.col(price).alias(alias)),
        on=["code", session],
        how="left",
    ).join(
        tpx.select(pl.col(SESSION).alias(session), pl.col("tpx_close").alias(f"{alias}_tpx")),
        on=session,
        how="left",
    )


def _disclosure_state(
    disclosures: pl.LazyFrame,
    closes: pl.LazyFrame,
    tpx: pl.LazyFrame,
    ordinals: pl.LazyFrame,
) -> pl.LazyFrame:
    """Per (code, disclosure day): everything a row dated on or after that day (and before
    the next disclosure day) reports, published on the disclosure day.

    The day's own reaction (base and reaction closes), and — carried forward over later
    disclosure days — the latest report (its date, base close, expected next report and the
    running report count) and the latest earnings-forecast revision. Every report and
    revision is a disclosure day, so one as-of join on this table gives a row all of it.
    """
    days = _with_closes(
        _with_closes(_per_day(disclosures), closes, tpx, "reaction_session", "close", "_react"),
        closes, tpx, "base_session", "close_ff", "_base_close",
    )
    reports = _with_closes(
        _reports(disclosures), closes, tpx, "base_session", "close_ff", "_report_base"
    ).select(
        "code",
        "disc_date",
        pl.col("disc_date").alias("_last_report"),
        "expected_next",
        "report_count",
        "_report_base",
        "_report_base_tpx",
    )
    carried = [
        "_last_report", "expected_next", "report_count", "_report_base", "_report_base_tpx",
        "_last_revision",
    ]
    state = (
        days.join(reports, on=["code", "disc_date"], how="left")
        .with_columns(pl.when(pl.col("is_revision")).then(pl.col("disc_date")).alias("_last_revision"))
        .sort("code", "disc_date")
        .with_columns(_by_code_in_time(pl.col(c).forward_fill()) for c in carried)
        .select(
            "code",
            "disc_date",
            "is_revision",
            "reaction_session",
            (pl.col("_react") / pl.col("_base_close") - 1.0).alias("_ann_ret"),
            (pl.col("_react_tpx") / pl.col("_base_close_tpx") - 1.0).alias("_ann_tpx"),
            *carried,
        )
    )
    for day, alias in (
        ("disc_date", "_disc_ordinal"),
        ("_last_report", "_report_ordinal"),
        ("expected_next", "_expected_ordinal"),
        ("_last_revision", "_revision_ordinal"),
    ):
        state = _with_ordinal(state, ordinals, day, alias)
    return state


def compute_earnings(inputs: FeatureInputs) -> pl.LazyFrame:
    sessions = session_index(inputs, FAMILY_NAME)
    ordinals = _session_ordinals(inputs)
    # materialized once: the reaction closes and the emitted rows both read it
    panel = (
        stock_panel(inputs, FAMILY_NAME)
        .select("code", "date", SESSION, "listed", "close", "close_ff")
        .collect()
        .lazy()
    )
    closes = panel.select("code", SESSION, "close", "close_ff")
    tpx = topix_returns(inputs, FAMILY_NAME).select(SESSION, "tpx_close")
    disclosures = _disclosures(inputs, sessions)
    state = _disclosure_state(disclosures, closes, tpx, ordinals)
    reports = _reports(disclosures)

    # per session: TOPIX close, the session's XTKS ordinal, and the date of the session
    # REPORT_COUNT_WINDOW earlier (reports up to that date have left the count)
    per_session = _with_ordinal(
        sessions.join(tpx, on=SESSION, how="left"), ordinals, "date", "_ordinal"
    ).join(
        sessions.select(
            (pl.col(SESSION) + REPORT_COUNT_WINDOW).alias(SESSION), pl.col("date").alias("_aged_day")
        ),
        on=SESSION,
        how="left",
    ).drop("date")
    rows = (
        panel.filter(pl.col("listed"))
        .select("code", "date", SESSION, "close")
        .join(per_session, on=SESSION, how="left")
    )
    rows = common.asof_published(rows, state, "disc_date")
    aged = common.asof_published(
        rows.select("code", SESSION, pl.col("_aged_day").alias("date")),
        reports.select("code", pl.col("disc_date").alias("_aged_at"),
                       pl.col("report_count").alias("_aged_count")),
        "_aged_at",
    ).select("code", SESSION, "_aged_count")
    rows = rows.join(aged, on=["code", SESSION], how="left")

    ordinal = pl.col("_ordinal")
    ret_since = pl.col("close") / pl.col("_report_base") - 1.0
    tpx_since = pl.col("tpx_close") / pl.col("_report_base_tpx") - 1.0
    reacted = pl.col("reaction_session") <= pl.col(SESSION)
    frame = rows.with_columns(
        (ordinal - pl.col("_disc_ordinal")).cast(pl.Float64).alias("earn_days_since_disclosure"),
        (ordinal - pl.col("_report_ordinal")).cast(pl.Float64).alias("earn_days_since_report"),
        (pl.col("_expected_ordinal") - ordinal).cast(pl.Float64).alias("earn_days_to_next_report"),
        ret_since.alias("earn_ret_since_report"),
        (ret_since - tpx_since).alias("earn_excess_ret_since_report"),
        pl.when(pl.col("_aged_day").is_not_null())
        .then(pl.col("report_count").fill_null(0) - pl.col("_aged_count").fill_null(0))
        .cast(pl.Float64)
        .alias("earn_report_count_250d"),
        pl.col("is_revision").cast(pl.Int8).alias("earn_latest_is_revision"),
        # a revision older than the lookback is outside a nightly run's history: "none seen"
        pl.when(ordinal - pl.col("_revision_ordinal") <= LOOKBACK)
        .then(ordinal - pl.col("_revision_ordinal"))
        .cast(pl.Float64)
        .alias("earn_days_since_revision"),
        pl.when(reacted).then(pl.col("_ann_ret")).alias("earn_announcement_ret"),
        pl.when(reacted).then(pl.col("_ann_ret") - pl.col("_ann_tpx")).alias(
            "earn_announcement_excess_ret"
        ),
    ).with_columns(
        (pl.col("earn_days_to_next_report").abs() <= EARNINGS_WINDOW_SESSIONS)
        .cast(pl.Int8)
        .alias("earn_window")
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name=FAMILY_NAME,
    sources=("raw_statements", "raw_daily_quotes", "raw_topix"),
    lookback=LOOKBACK,
    features=FEATURES,
    compute=compute_earnings,
    description="disclosure cycle (days since/to reports), earnings window and price reactions",
)
