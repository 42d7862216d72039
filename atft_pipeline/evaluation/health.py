"""Prediction health: does each model actually rank stocks on the dates it is evaluated on?

A model whose predictions are all equal on a date (a booster that stopped after a round or
two on date-level features, a network whose output collapsed) ranks nothing that day. The
metrics score such a date 0; this module turns the counts into a pass / fail per model, which
the validation-predictions asset check and the report use.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from atft_pipeline.evaluation import metrics

# A model may have all-equal predictions on at most this share of its scored dates.
MAX_CONSTANT_SHARE = 0.05


@dataclass(frozen=True)
class PredictionHealth:
    """``table``: one row per (model, split, horizon) with the coverage columns,
    ``constant_share`` and ``healthy``; ``failing``: models failing on any series."""

    table: pl.DataFrame
    max_constant_share: float

    @property
    def failing(self) -> list[str]:
        return sorted(self.table.filter(~pl.col("healthy"))["model"].unique().to_list())

    @property
    def passed(self) -> bool:
        return not self.failing


def prediction_health(
    predictions: pl.DataFrame, max_constant_share: float = MAX_CONSTANT_SHARE
) -> PredictionHealth:
    """Per (model, split, horizon): dates scored, dates in the split, coverage, dates with
    all-equal predictions and their share of the scored dates.

    A series is healthy when its constant share is at most ``max_constant_share``; a series
    without any scored date (e.g. ``live``, targets unknown) is healthy only if its split has
    no measurable date either (otherwise the model produced nothing usable there).
    """
    if not 0 <= max_constant_share < 1:
        raise ValueError(f"max_constant_share must be in [0, 1), got {max_constant_share}")
    table = metrics.coverage(predictions).with_columns(
        pl.when(pl.col("n_dates") > 0)
        .then(pl.col("constant_dates") / pl.col("n_dates"))
        .alias("constant_share")
    )
    healthy = pl.when(pl.col("n_dates") > 0).then(
        pl.col("constant_share") <= max_constant_share
    ).otherwise(pl.col("n_split_dates") == 0)
    return PredictionHealth(table.with_columns(healthy.alias("healthy")), max_constant_share)
