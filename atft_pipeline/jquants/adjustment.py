"""Split-adjusted bars computed from raw prices and the ``AdjFactor`` history.

J-Quants puts ``AdjFactor`` on a split's ex-date row (0.5 for a 1:2 split) and re-adjusts the
``AdjO/AdjH/AdjL/AdjC/AdjVo`` of every *earlier* row when the split takes effect. A partition
stored before the split keeps the old scale, so stored ``Adj*`` columns of partitions fetched
on different days do not form one series. The pipeline therefore never reads them: it
recomputes them from raw ``O/H/L/C/Vo`` and the factors of the rows it holds,

    AdjX(d) = X(d) * prod_{d < k <= last} AdjFactor(k),    AdjVo(d) = Vo(d) / (same product)

per code, ``last`` being the code's last row in the frame: the prices as the API showed them
on that day. Every return, ratio and rolling statistic over rows up to any t is the same as
with the adjustment known at t (the factors after t are a common scale of those rows), so a
nightly run and a backfill agree whatever partitions were fetched when.
"""

from __future__ import annotations

from typing import TypeVar

import polars as pl

# Adjusted column -> the raw column it is computed from.
ADJUSTED_PRICES = {"AdjO": "O", "AdjH": "H", "AdjL": "L", "AdjC": "C"}
ADJUSTED_VOLUME = {"AdjVo": "Vo"}
_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


class AdjustmentError(ValueError):
    """Bars cannot be adjusted (a raw column or ``AdjFactor`` is missing)."""


def later_factor(code: str = "Code", date: str = "Date") -> pl.Expr:
    """Per row, the product of the code's ``AdjFactor`` on its later rows (1 on its last).

    A null factor counts as 1 (no split). Evaluated within each code in date order.
    """
    next_factor = pl.col("AdjFactor").fill_null(1.0).shift(-1).fill_null(1.0)
    return next_factor.reverse().cum_prod().reverse().over(code, order_by=date)


def adjusted_columns(scale: pl.Expr, names: list[str], prefix: str = "") -> list[pl.Expr]:
    """``<prefix>Adj*`` recomputed as raw x ``scale`` (volume: raw / ``scale``) for every
    adjusted column in ``names``; its raw column must be there too."""
    exprs = []
    for mapping, combine in ((ADJUSTED_PRICES, pl.Expr.mul), (ADJUSTED_VOLUME, pl.Expr.truediv)):
        for adjusted, raw in mapping.items():
            if prefix + adjusted not in names:
                continue
            if prefix + raw not in names:
                raise AdjustmentError(
                    f"bars have {prefix + adjusted!r} but not {prefix + raw!r}: adjusted prices "
                    "are computed from raw prices and AdjFactor, never read as stored"
                )
            exprs.append(combine(pl.col(prefix + raw), scale).alias(prefix + adjusted))
    return exprs


def adjust_bars(bars: _Frame) -> _Frame:
    """``bars`` (V2 ``equities/bars/daily`` columns) with ``AdjO/AdjH/AdjL/AdjC/AdjVo``
    replaced by values computed in-house (see the module docstring); other columns as given.
    """
    names = bars.collect_schema().names()
    exprs = adjusted_columns(later_factor(), names)
    if exprs and "AdjFactor" not in names:
        raise AdjustmentError("bars lack 'AdjFactor': adjusted prices cannot be computed")
    return bars.with_columns(exprs) if exprs else bars
