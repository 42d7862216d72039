"""Executable forward-return targets (DESIGN §6).

Entry at the close of t+1, exit at the close of t+1+h, on split-adjusted closes, counted in
trading days: ``target_{h}d(t) = AdjC(t+1+h) / AdjC(t+1) - 1``. A target is null whenever
either close is unknown (not yet happened, halted, delisted) — never 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from atft_pipeline.features.catalog import HORIZONS, TARGET_COLUMNS
from atft_pipeline.jquants.adjustment import adjust_bars


def compute_targets(
    bars: pl.LazyFrame, calendar: Sequence[dt.date], dates: Sequence[dt.date]
) -> pl.LazyFrame:
    """``date, code, target_1d … target_20d`` for every bar row dated in ``dates``.

    ``bars`` has the V2 bar columns (``Date``, ``Code``, ``C``, ``AdjFactor``, ``AdjC``;
    ``AdjC`` is recomputed, see ``jquants.adjustment``). ``calendar`` must cover
    ``dates`` plus the following ``1 + max(HORIZONS)`` sessions where known; positions are
    looked up in it, so a code's missing rows can never shift a target onto the wrong day.
    """
    sessions = pl.LazyFrame({"date": list(calendar)}, schema={"date": pl.Date}).with_row_index("i")
    closes = (
        adjust_bars(bars).select(pl.col("Date").alias("date"), pl.col("Code").alias("code"), pl.col("AdjC").alias("close"))
        .join(sessions, on="date", how="inner")
        .select("code", "i", "close")
    )
    base = (
        bars.select(pl.col("Date").alias("date"), pl.col("Code").alias("code"))
        .filter(pl.col("date").is_in(list(dates)))
        .join(sessions, on="date", how="inner")
    )
    entry = closes.select("code", (pl.col("i") - 1).alias("i"), pl.col("close").alias("entry"))
    frame = base.join(entry, on=["code", "i"], how="left")
    for h, column in zip(HORIZONS, TARGET_COLUMNS, strict=True):
        exit_ = closes.select("code", (pl.col("i") - 1 - h).alias("i"), pl.col("close").alias(f"_exit{h}"))
        frame = frame.join(exit_, on=["code", "i"], how="left").with_columns(
            (pl.col(f"_exit{h}") / pl.col("entry") - 1.0).alias(column)
        )
    finite = [
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).cast(pl.Float32).alias(c)
        for c in TARGET_COLUMNS
    ]
    return frame.select("date", "code", *finite).sort("date", "code")
