"""Building blocks shared by the feature families (Polars expressions over lazy frames).

Everything is computed per code in date order with window expressions
(``expr.over("code", order_by="date")``), never with Python loops over stocks or dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

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


def bars(inputs: FeatureInputs) -> pl.LazyFrame:
    """Daily bars as a (code, date)-sorted panel with lower-case names and adjusted prices.

    Columns: date, code, open/high/low/close/volume (split-adjusted), raw_close, turnover
    (yen, ``Va``), adj_factor, limit_up/limit_down flags, traded (False on halt days).
    """
    return (
        inputs.raw["raw_daily_quotes"]
        .select(
            pl.col("Date").alias("date"),
            pl.col("Code").alias("code"),
            pl.col("AdjO").alias("open"),
            pl.col("AdjH").alias("high"),
            pl.col("AdjL").alias("low"),
            pl.col("AdjC").alias("close"),
            pl.col("AdjVo").alias("volume"),
            pl.col("C").alias("raw_close"),
            pl.col("Va").alias("turnover"),
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
