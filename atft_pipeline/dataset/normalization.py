"""Robust normalization statistics over *all* training rows, and the model's input values.

Per feature: median, scale = MAD · 1.4826 (the normal-consistent MAD), clip bounds
(median ± ``clip_scales`` · scale), null fraction and the row count. The statistics are exact
(no sampling, no "first N files"): the training window is scanned lazily a block of columns at a
time, so peak memory is ``rows × block`` values rather than the whole dataset.

``model_inputs`` is the one mapping from dataset values to model inputs (``InputNormalization``):
the training panel applies it to every row it holds, so training, validation and prediction
see the same transform.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal, get_args

import polars as pl

# How a feature value becomes a model input:
# * "time_series": the training window's robust statistics (``apply_normalization``), one
#   fixed affine map per feature;
# * "cross_sectional_z": per date, the z-score over that date's stocks, clipped;
# * "cross_sectional_rank": per date, the normal score of the value's rank among that date's
#   stocks, Φ⁻¹((rank − 0.5) / n), ties averaged.
# Both cross-sectional forms use only the same date's rows (no look-ahead) and remove what all
# stocks share that day (a market-wide feature becomes 0), leaving the ranking signal.
InputNormalization = Literal["time_series", "cross_sectional_z", "cross_sectional_rank"]
INPUT_NORMALIZATIONS: tuple[str, ...] = get_args(InputNormalization)

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


def _finite(column: str) -> pl.Expr:
    """The column as Float64 with NaN and ±inf turned into null (missing)."""
    x = pl.col(column).cast(pl.Float64)
    return pl.when(x.is_finite()).then(x)


def cross_sectional_normalize(
    rows: pl.LazyFrame, columns: Sequence[str], clip: float = 5.0
) -> pl.LazyFrame:
    """Per-date z-score (std with ddof=1) of each column across that date's rows, clipped to
    ±``clip``.

    Uses only same-date values, so it adds no look-ahead. A null, NaN or infinite value is
    missing: it takes no part in its date's mean and std and comes out null; a date where a
    column is constant (or has one value) yields 0 for its non-missing rows.
    """
    exprs = []
    for c in columns:
        x = _finite(c)
        mean = x.mean().over("date")
        std = x.std().over("date")
        z = pl.when(std > 0).then((x - mean) / std).otherwise(pl.when(x.is_not_null()).then(0.0))
        exprs.append(z.clip(-clip, clip).cast(pl.Float32).alias(c))
    return rows.with_columns(exprs)


def _normal_quantile(u: pl.Series) -> pl.Series:
    from scipy.special import ndtri  # on first use: the Dagster code location imports this module

    return pl.Series(u.name, ndtri(u.to_numpy()), dtype=pl.Float64).fill_nan(None)


def cross_sectional_normal_scores(rows: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """Per-date normal score of each column: Φ⁻¹((rank − 0.5) / n) with the rank among that
    date's n non-missing values (ties share their mean rank).

    Scores lie within ±Φ⁻¹(1 − 0.5/n), so no clip is needed; a date where a column is constant
    yields 0. A null, NaN or infinite value is missing (not ranked, not counted, null out).
    """
    exprs = []
    for c in columns:
        x = _finite(c)
        u = (x.rank("average").over("date") - 0.5) / x.count().over("date")
        score = u.map_batches(_normal_quantile, return_dtype=pl.Float64, is_elementwise=True)
        exprs.append(score.cast(pl.Float32).alias(c))
    return rows.with_columns(exprs)


def model_inputs(
    rows: pl.LazyFrame,
    columns: Sequence[str],
    stats: pl.DataFrame,
    method: InputNormalization,
    clip: float = 5.0,
) -> pl.LazyFrame:
    """The model inputs of ``columns``: ``method``'s values (see ``InputNormalization``), then
    a missing value becomes 0; Float32, only ``columns``, in that order.

    0 is "a typical value" in every method: the training median for ``time_series`` (whose
    statistics ``stats`` must cover ``columns``), the date's mean or median stock for the
    cross-sectional ones. These need a ``date`` column and treat every row of a date as its
    cross-section; ``clip`` bounds the z-scores of ``cross_sectional_z``.
    """
    columns = list(columns)
    if method == "time_series":
        values = apply_normalization(rows, stats.filter(pl.col("feature").is_in(columns)))
    elif method == "cross_sectional_z":
        values = cross_sectional_normalize(rows, columns, clip)
    elif method == "cross_sectional_rank":
        values = cross_sectional_normal_scores(rows, columns)
    else:
        raise ValueError(f"unknown input normalization {method!r}; one of {INPUT_NORMALIZATIONS}")
    return values.select(pl.col(columns).fill_null(0.0).cast(pl.Float32))
