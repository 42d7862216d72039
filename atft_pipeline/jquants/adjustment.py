"""Split-adjusted bars computed from raw prices and the ``AdjFactor`` history.

J-Quants puts ``AdjFactor`` on a split's ex-date row (0.5 for a 1:2 split) and re-adjusts the
``AdjO/AdjH/AdjL/AdjC/AdjVo`` of every *earlier* row when the split takes effect. A partition
stored before the split keeps the old scale, so stored ``Adj*`` columns of partitions fetched
on different days do not form one series. The pipeline therefore never reads them: it
recomputes them from raw ``O/H/L/C/Vo`` and the factors of the rows it holds, anchored at
each code's first row and carried forward,

    AdjX(d) = X(d) / prod_{k <= d} AdjFactor(k),    AdjVo(d) = Vo(d) * (same product)

(a 1:2 split doubles the later prices instead of halving the earlier ones). Only factors up
to d enter row d, so nothing published after d changes it. J-Quants' own convention (scale of
the last day, ``later_factor``) differs from this by one constant per code and frame: every
return, ratio and rolling statistic of adjusted prices is the same under both, and the same
whichever night each partition was fetched on.
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
    """Per row, the product of the code's ``AdjFactor`` on its later rows (1 on its last):
    J-Quants' adjustment as of the last row. A null factor counts as 1 (no split)."""
    next_factor = pl.col("AdjFactor").fill_null(1.0).shift(-1).fill_null(1.0)
    return next_factor.reverse().cum_prod().reverse().over(code, order_by=date)


def earlier_factor(code: str = "Code", date: str = "Date") -> pl.Expr:
    """Per row, the product of the code's ``AdjFactor`` on its rows up to and including it."""
    return pl.col("AdjFactor").fill_null(1.0).cum_prod().over(code, order_by=date)


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
    replaced by values computed in-house from past factors only (see the module docstring);
    other columns as given."""
    names = bars.collect_schema().names()
    exprs = adjusted_columns(1.0 / earlier_factor(), names)
    if exprs and "AdjFactor" not in names:
        raise AdjustmentError("bars lack 'AdjFactor': adjusted prices cannot be computed")
    return bars.with_columns(exprs) if exprs else bars
