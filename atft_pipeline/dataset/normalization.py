"""Robust normalization statistics over *all* training rows, and their application.

Per feature: median, scale = MAD · 1.4826 (the normal-consistent MAD), clip bounds
(median ± ``clip_scales`` · scale), null fraction and the row count. The statistics are exact
(no sampling, no "first N files"): the training window is scanned lazily a block of columns at a
time, so peak memory is ``rows × block`` values rather than the whole dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import polars as pl

MAD_TO_STD = 1.4826
STATS_SCHEMA = {
    "feature": pl.String,
    "median": pl.Float64,
    "scale": pl.Float64,
    "clip_low": pl.Float64,
    "clip_high": pl.Float64,
    "null_fraction": pl.Float64,
    "rows": pl.Int64,
}


def compute_normalization_stats(
    rows: pl.LazyFrame,
    columns: Sequence[str],
    *,
    clip_scales: float = 5.0,
    block: int = 32,
) -> pl.DataFrame:
    """Exact robust statistics of ``columns`` over every row of ``rows``.

    A column that is entirely null, or whose MAD is 0 (e.g. a binary flag that is mostly 0),
    gets scale = its standard deviation, or 1.0 if that is 0 too, so dividing by it is safe.
    """
    out: list[dict] = []
    for i in range(0, len(columns), block):
        chunk = list(columns[i : i + block])
        frame = rows.select(pl.col(chunk).cast(pl.Float64)).collect(engine="streaming")
        medians = frame.select(pl.all().median()).row(0)
        mads = frame.select(
            [(pl.col(c) - m).abs().median().alias(c) for c, m in zip(chunk, medians, strict=True)]
        ).row(0)
        stds = frame.select(pl.all().std()).row(0)
        nulls = frame.select(pl.all().null_count()).row(0)
        n = frame.height
        for c, med, mad, std, n_null in zip(chunk, medians, mads, stds, nulls, strict=True):
            scale = (mad or 0.0) * MAD_TO_STD
            if not scale > 0:
                scale = std if std is not None and std > 0 else 1.0
            center = med if med is not None else 0.0
            out.append(
                {
                    "feature": c,
                    "median": center,
                    "scale": scale,
                    "clip_low": center - clip_scales * scale,
                    "clip_high": center + clip_scales * scale,
                    "null_fraction": n_null / n if n else 1.0,
                    "rows": n,
                }
            )
    return pl.DataFrame(out, schema=STATS_SCHEMA)


def stats_hash(stats: pl.DataFrame) -> str:
    """Stable hash of the statistics (recorded with every checkpoint)."""
    digest = hashlib.sha256(stats.sort("feature").write_csv().encode())
    return digest.hexdigest()[:16]


def apply_normalization(rows: pl.LazyFrame, stats: pl.DataFrame) -> pl.LazyFrame:
    """(x − median) / scale, clipped to the stats' bounds; nulls stay null (never 0)."""
    exprs = []
    for feature, median, scale, low, high in stats.select(
        "feature", "median", "scale", "clip_low", "clip_high"
    ).iter_rows():
        exprs.append(
            ((pl.col(feature).clip(low, high) - median) / scale).cast(pl.Float32).alias(feature)
        )
    return rows.with_columns(exprs)


def cross_sectional_normalize(rows: pl.LazyFrame, columns: Sequence[str], clip: float = 5.0) -> pl.LazyFrame:
    """Per-date z-score of each column across that date's stocks (for training inputs).

    Uses only same-date values, so it adds no look-ahead; a date where a column is constant
    yields 0 for its non-null rows, and nulls stay null.
    """
    exprs = []
    for c in columns:
        x = pl.col(c).cast(pl.Float64)
        mean = x.mean().over("date")
        std = x.std().over("date")
        z = pl.when(std > 0).then((x - mean) / std).otherwise(pl.when(x.is_not_null()).then(0.0))
        exprs.append(z.clip(-clip, clip).cast(pl.Float32).alias(c))
    return rows.with_columns(exprs)
