"""Executable forward-return targets (DESIGN §6).

Entry at the close of t+1, exit at the close of t+1+h, on split-adjusted closes, counted in
trading days: ``target_{h}d(t) = AdjC(t+1+h) / AdjC(t+1) - 1``.

**Delisting / halt return.** A stock that stops trading inside the horizon — delisted (no more
bars), halted (bars with a null close) or missing from the feed on the exit session — leaves
the book at its last traded close: when the exit session has happened (some stock has a close
that session) but this stock has no close then, ``target_{h}d(t) = AdjC(last) / AdjC(t+1) - 1``
with ``last`` its latest session in [t+1, t+1+h] with a close. Its worst outcomes therefore
stay in training and in the long-short books instead of disappearing. A target is null only
when the entry close is unknown (the stock cannot be bought at t+1) or the exit session has
not happened yet — never 0 for an unknown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from atft_pipeline.features.catalog import HORIZONS, TARGET_COLUMNS
from atft_pipeline.jquants.adjustment import adjust_bars


def last_traded_column(target: str) -> str:
    """The flag column ``compute_targets(..., flags=True)`` adds next to ``target``."""
    return f"{target}_last_traded"


def compute_targets(
    bars: pl.LazyFrame,
    calendar: Sequence[dt.date],
    dates: Sequence[dt.date],
    flags: bool = False,
) -> pl.LazyFrame:
    """``date, code, target_1d … target_20d`` for every bar row dated in ``dates``.

    ``bars`` has the V2 bar columns (``Date``, ``Code``, ``C``, ``AdjFactor``, ``AdjC``;
    ``AdjC`` is recomputed, see ``jquants.adjustment``). ``calendar`` must cover
    ``dates`` plus the following ``1 + max(HORIZONS)`` sessions where known; positions are
    looked up in it, so a code's missing rows can never shift a target onto the wrong day.
    With ``flags``, each target gets a boolean ``target_{h}d_last_traded``: true where the
    exit is the stock's last traded close before the exit session (the delisting / halt return).
    """
    sessions = pl.LazyFrame({"date": list(calendar)}, schema={"date": pl.Date}).with_row_index("i")
    closes = (
        adjust_bars(bars).select(pl.col("Date").alias("date"), pl.col("Code").alias("code"), pl.col("AdjC").alias("close"))
        .join(sessions, on="date", how="inner")
        .filter(pl.col("close").is_not_null() & pl.col("close").is_finite())
        .select("code", pl.col("i").cast(pl.Int64), "close")
    )
    # Sessions that have happened: some stock has a close on them.
    happened = closes.select("i").unique().with_columns(pl.lit(True).alias("_happened"))
    traded = closes.sort("i")
    base = (
        bars.select(pl.col("Date").alias("date"), pl.col("Code").alias("code"))
        .filter(pl.col("date").is_in(list(dates)))
        .join(sessions, on="date", how="inner")
        .with_columns(pl.col("i").cast(pl.Int64))
    )
    entry = closes.select("code", (pl.col("i") - 1).alias("i"), pl.col("close").alias("entry"))
    frame = base.join(entry, on=["code", "i"], how="left")
    columns = []
    for h, column in zip(HORIZONS, TARGET_COLUMNS, strict=True):
        exit_at = (pl.col("i") + 1 + h).alias("_exit_i")
        last = (
            frame.select("code", "i", exit_at)
            .join(happened.rename({"i": "_exit_i"}), on="_exit_i", how="left")
            .sort("_exit_i")
            .join_asof(
                traded.rename({"i": "_last_i", "close": "_last"}),
                left_on="_exit_i",
                right_on="_last_i",
                by="code",
                strategy="backward",
                check_sortedness=False,  # both sides sorted by the key above
            )
            .select(
                "code",
                "i",
                pl.when(pl.col("_happened")).then(pl.col("_last")).alias(f"_exit{h}"),
                (pl.col("_happened") & (pl.col("_last_i") < pl.col("_exit_i"))).alias(f"_flag{h}"),
            )
        )
        frame = frame.join(last, on=["code", "i"], how="left").with_columns(
            (pl.col(f"_exit{h}") / pl.col("entry") - 1.0).alias(column)
        )
        columns.append(column)
    finite = [
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).cast(pl.Float32).alias(c)
        for c in columns
    ]
    flag_columns = [
        (pl.col(f"_flag{h}").fill_null(False) & pl.col(c).is_finite().fill_null(False)).alias(
            last_traded_column(c)
        )
        for h, c in zip(HORIZONS, columns, strict=True)
    ] if flags else []
    return frame.select("date", "code", *finite, *flag_columns).sort("date", "code")


def last_traded_counts(targets: pl.DataFrame) -> dict[str, int]:
    """Per target column, the rows whose exit is the last traded close (needs ``flags=True``)."""
    return {c: int(targets[last_traded_column(c)].sum()) for c in TARGET_COLUMNS}
