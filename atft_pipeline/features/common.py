"""Building blocks shared by the feature families (Polars expressions over lazy frames).

Everything is computed per code in date order with window expressions
(``expr.over("code", order_by="date")``), never with Python loops over stocks or dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import polars as pl
import polars.selectors as cs

from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs

EPS = 1e-12


def by_code(expr: pl.Expr) -> pl.Expr:
    """Evaluate ``expr`` within each code's date-ordered history."""
    return expr.over("code", order_by="date")


def by_date(expr: pl.Expr) -> pl.Expr:
    """Evaluate ``expr`` cross-sectionally within each date."""
    return expr.over("date")


def safe_div(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den, null where the denominator is null or ~0 (never inf)."""
    return pl.when(den.abs() > EPS).then(num / den).otherwise(None)


# What ``bars`` reads from ``raw_daily_quotes``.
# Decimals a value keeps before it is ranked against others. Adjusted prices are rescaled to
# the end of whichever window a run loads, so two returns that are equal on paper (two stocks
# unchanged over five sessions) can come out 0 in one run and 1e-17 in another; ranking the
# raw floats would break that tie differently in a nightly run and a backfill.
RANK_DECIMALS = 12


def rank_average(expr: pl.Expr) -> pl.Expr:
    """``expr.rank("average")`` over values rounded to ``RANK_DECIMALS``: ties that rounding
    noise split are kept as ties."""
    return expr.round(RANK_DECIMALS).rank("average")


BAR_COLUMNS = (
    *("Date", "Code", "AdjO", "AdjH", "AdjL", "AdjC", "AdjVo"),
    *("C", "Vo", "Va", "AdjFactor", "UL", "LL"),
)


# J-Quants field -> panel column, for the fields ``bars`` only renames.
_BAR_NAMES = {
    "Date": "date",
    "Code": "code",
    "AdjO": "open",
    "AdjH": "high",
    "AdjL": "low",
    "AdjC": "close",
    "AdjVo": "volume",
    "C": "raw_close",
}


def trading_value() -> pl.Expr:
    """Trading value in yen of a ``raw_daily_quotes`` row: ``Va``, or raw ``C × Vo`` where the
    feed has no ``Va`` (replays of feeds without trading value still get liquidity)."""
    return pl.coalesce(pl.col("Va"), pl.col("C") * pl.col("Vo"))


def bars(inputs: FeatureInputs, family: str) -> pl.LazyFrame:
    """Daily bars as a (code, date)-sorted panel with lower-case names and adjusted prices.

    Columns: date, code, open/high/low/close/volume (split-adjusted), raw_close, turnover
    (yen, ``trading_value``), adj_factor, limit_up/limit_down flags, traded (False on halt
    days).
    """
    return (
        raw_source(inputs, family, "raw_daily_quotes", BAR_COLUMNS)
        .select(
            *(pl.col(field).alias(name) for field, name in _BAR_NAMES.items()),
            trading_value().alias("turnover"),
            pl.col("AdjFactor").alias("adj_factor"),
            pl.col("UL").fill_null(False).alias("limit_up"),
            pl.col("LL").fill_null(False).alias("limit_down"),
            pl.col("C").is_not_null().alias("traded"),
        )
        .sort("code", "date")
    )


def log_return(col: str = "close", periods: int = 1) -> pl.Expr:
    return by_code(pl.col(col).log() - pl.col(col).log().shift(periods))


def simple_return(col: str = "close", periods: int = 1) -> pl.Expr:
    return by_code(pl.col(col) / pl.col(col).shift(periods) - 1.0)


def asof_published(
    left: pl.LazyFrame,
    right: pl.LazyFrame,
    published: str,
    by: str | Sequence[str] = "code",
) -> pl.LazyFrame:
    """Attach to each (code, date) row the latest ``right`` row published on or before date.

    ``right`` must have a column ``published`` (pl.Date): the day its information became
    public. This is the only join the families use for slower sources, so a row can never see
    information published after its date.
    """
    return left.sort("date").join_asof(
        right.sort(published, maintain_order=True),
        left_on="date",
        right_on=published,
        by=by,
        strategy="backward",
        check_sortedness=False,  # sorted just above; polars cannot verify it within groups
    )


def emit(frame: pl.LazyFrame, family: FeatureFamily, dates: Sequence[dt.date]) -> pl.LazyFrame:
    """Keep the requested dates and exactly the family's columns, typed per the catalog.

    NaN and ±inf become null: storage never holds NaN/inf, and null is never turned into 0.
    """
    exprs = [pl.col("date"), pl.col("code")]
    for spec in family.features:
        col = pl.col(spec.name).cast(spec.dtype)
        if spec.dtype.is_float():
            # checked after the cast: a Float64 beyond the Float32 range becomes inf in the cast
            col = pl.when(col.is_finite()).then(col).otherwise(None)
        exprs.append(col.alias(spec.name))
    return (
        frame.filter(pl.col("date").is_in(list(dates)))
        .select(exprs)
        .sort("date", "code")
    )


def session_span(frame: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """Every session number from ``frame``'s first to its last in ``column`` (gaps filled, so
    rolling windows span sessions); no rows when ``frame`` is empty."""
    first, last = pl.col(column).min().fill_null(0), pl.col(column).max().fill_null(-1)
    return frame.select(pl.int_range(first, last + 1).alias(column))


def add_sessions(
    frame: pl.LazyFrame, date_col: str, n: int, calendar: Sequence[dt.date], alias: str
) -> pl.LazyFrame:
    """Add ``alias`` = the trading day ``n`` sessions after ``date_col``.

    A non-session date counts from the last session before it (a holiday Friday's weekly
    margin is published 2 sessions after Thursday). Null where the calendar runs out.
    """
    sessions = pl.LazyFrame({"_session": list(calendar)}, schema={"_session": pl.Date}).with_row_index("_i")
    shifted = sessions.select(pl.col("_i") - n, pl.col("_session").alias(alias))
    return (
        frame.sort(date_col)
        .join_asof(sessions, left_on=date_col, right_on="_session", strategy="backward")
        .join(shifted, on="_i", how="left")
        .drop("_i", "_session")
    )


# fins/summary publishes disclosures made by 18:00 with its 18:00 update; later ones and those
# without a time come with the 24:30 update, after the evening's nightly run.
STATEMENTS_EVENING_UPDATE = "18:00"


def statement_available() -> pl.Expr:
    """The first day a ``raw_statements`` row is used: its ``DiscDate`` when disclosed by
    18:00, else the next day. A run on the evening of ``DiscDate`` cannot have it, so a row
    dated that day never depends on it (nightly and backfill alike)."""
    time = pl.col("DiscTime").str.slice(0, 5)
    early = time.is_not_null() & (time <= STATEMENTS_EVENING_UPDATE)
    return pl.when(early).then(pl.col("DiscDate")).otherwise(
        pl.col("DiscDate") + pl.duration(days=1)
    )


class FeatureInputError(ValueError):
    """A raw source a family reads is missing or lacks a column it needs."""


def raw_source(
    inputs: FeatureInputs, family: str, asset: str, columns: Iterable[str]
) -> pl.LazyFrame:
    """``inputs.raw[asset]`` restricted to ``columns``, with a clear error when absent."""
    if asset not in inputs.raw:
        raise FeatureInputError(
            f"feature family {family!r} needs raw asset {asset!r}; inputs hold {sorted(inputs.raw)}"
        )
    frame = inputs.raw[asset]
    wanted = list(columns)
    missing = [c for c in wanted if c not in frame.collect_schema().names()]
    if missing:
        raise FeatureInputError(
            f"feature family {family!r}: raw asset {asset!r} lacks column(s) {missing}"
        )
    return frame.select(wanted)


def universe(
    inputs: FeatureInputs, family: str, fields: Mapping[str, str] | None = None
) -> pl.LazyFrame:
    """The rows to emit (``date, code`` of ``raw_daily_quotes``) plus raw bar ``fields``
    (J-Quants name -> column name), in the source's order.

    Window expressions here order by date themselves (``over(order_by=...)``), so the panel
    never pays for a code-major sort of every bar.
    """
    fields = dict(fields or {})
    return raw_source(inputs, family, "raw_daily_quotes", ["Date", "Code", *fields]).select(
        pl.col("Date").alias("date"),
        pl.col("Code").alias("code"),
        *[pl.col(field).alias(name) for field, name in fields.items()],
    )


def split_panel(
    inputs: FeatureInputs, family: str, fields: Mapping[str, str] | None = None
) -> pl.LazyFrame:
    """``universe`` plus ``log_split``: the cumulative ``log(AdjFactor)`` of the code up to
    and including ``date``.

    A 1:2 split (AdjFactor 0.5 on the ex-date) lowers the level by log 2, so a per-share
    figure known at d is ``x × exp(L(t) − L(d))`` in the units of t, and a share count
    ``n × exp(L(d) − L(t))``. Missing or non-positive factors count as 1 (no corporate action).
    """
    panel = universe(inputs, family, {"AdjFactor": "_adj_factor", **(fields or {})})
    factor = pl.col("_adj_factor")
    step = pl.when(factor > 0).then(factor.log()).otherwise(0.0)
    return panel.with_columns(by_code(step.cum_sum()).alias("log_split")).drop("_adj_factor")


def asof_bar(frame: pl.LazyFrame, date_col: str, bar_frame: pl.LazyFrame) -> pl.LazyFrame:
    """Attach to each row of ``frame`` the ``bar_frame`` row (``date, code, ...``) of its code
    on the last bar date on or before ``date_col`` (null before the code's first bar)."""
    right = bar_frame.rename({"date": "_bar_date"})
    return (
        frame.sort(date_col, maintain_order=True)
        .join_asof(
            right.sort("_bar_date"),
            left_on=date_col,
            right_on="_bar_date",
            by="code",
            check_sortedness=False,
        )
        .drop("_bar_date")
    )


def log_split_at(frame: pl.LazyFrame, date_col: str, levels: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``log_split`` = the code's split level on ``date_col`` (0 before its first bar, the
    level every cumulative sum starts from)."""
    return asof_bar(frame, date_col, levels).with_columns(pl.col("log_split").fill_null(0.0))


def narrow(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Float64 columns as Float32 (the catalog's feature dtype) before a frame is joined onto
    the daily panel: the join copies every column into every row, and Float32 halves that."""
    return frame.with_columns(cs.float().cast(pl.Float32))
