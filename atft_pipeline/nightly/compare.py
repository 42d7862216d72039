"""Compare the stores of two homes partition by partition: nights against a one-shot backfill.

Keys, integers, strings, dates and booleans must be equal; floats equal within a relative
tolerance: both null, both NaN, the same infinity, or ``|a - b| <= rtol * max(|a|, |b|, s)``
where ``s`` is the column's mean absolute value in the partition. ``s`` keeps cancellation
residue from counting as a difference: a 20-day rolling sum of returns that is 0 on paper comes
out as 0 in one run and 1e-17 in another (the sliding sum carries rounding from where the
window started), which no relative tolerance on the value itself accepts. Rows are compared
after sorting by every non-float column, so row order does not matter.

What differs by design is listed in ``BY_DESIGN`` (and in docs/nightly.md) with its reason;
those columns are left out of the comparison and named in the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from atft_pipeline.storage import PartitionStore

FLOAT_RTOL = 1e-9


@dataclass(frozen=True)
class ByDesign:
    """Columns of ``asset`` (a regular expression) that are not compared, and why."""

    asset: str
    columns: str
    reason: str


BY_DESIGN: tuple[ByDesign, ...] = (
    ByDesign(
        "raw_daily_quotes",
        r"^[MA]?Adj(O|H|L|C|Vo)$",
        "J-Quants re-adjusts the Adj* columns of every earlier row when a split takes effect, so "
        "a partition stored on night t keeps the scale of t while the backfill has the scale of "
        "its fetch day. Nothing reads stored Adj*: features and targets recompute them from raw "
        "O/H/L/C/Vo and AdjFactor (atft_pipeline/jquants/adjustment.py), and those are compared.",
    ),
)


def excluded_columns(asset: str, columns: Sequence[str]) -> list[str]:
    patterns = [re.compile(d.columns) for d in BY_DESIGN if d.asset == asset]
    return [c for c in columns if any(p.match(c) for p in patterns)]


@dataclass
class AssetComparison:
    asset: str
    compared: int = 0  # partitions present in both stores
    only_nightly: list[str] = field(default_factory=list)
    only_backfill: list[str] = field(default_factory=list)
    differing: dict[str, str] = field(default_factory=dict)  # partition -> first difference
    excluded: list[str] = field(default_factory=list)  # by-design columns left out

    @property
    def equal(self) -> bool:
        return not (self.only_nightly or self.only_backfill or self.differing)


def frame_difference(nightly: pl.DataFrame, backfill: pl.DataFrame, rtol: float = FLOAT_RTOL) -> str | None:
    """The first difference between two frames (None: equal under the rules above)."""
    if nightly.schema != backfill.schema:
        return f"schema differs: nightly {dict(nightly.schema)} vs backfill {dict(backfill.schema)}"
    if nightly.height != backfill.height:
        return f"{nightly.height} rows nightly vs {backfill.height} in the backfill"
    floats = [c for c, t in nightly.schema.items() if t.is_float()]
    keys = [c for c in nightly.columns if c not in floats and not nightly.schema[c].is_nested()]
    if keys:
        nightly = nightly.sort(keys, nulls_last=True, maintain_order=True)
        backfill = backfill.sort(keys, nulls_last=True, maintain_order=True)
    differing = []
    for column in nightly.columns:
        a, b = nightly.get_column(column), backfill.get_column(column)
        bad = _float_mismatches(a, b, rtol) if column in floats else _exact_mismatches(a, b)
        if bad.any():
            differing.append((column, bad))
    if not differing:
        return None
    column, bad = differing[0]
    row = int(bad.arg_true()[0])
    where = ", ".join(f"{k}={nightly[row, k]}" for k in keys[:3])
    others = "".join(f"; column {c!r}: {int(m.sum())} rows" for c, m in differing[1:])
    return (
        f"column {column!r}: {int(bad.sum())} of {nightly.height} rows differ; first at "
        f"{where or f'row {row}'}: nightly {nightly[row, column]!r} vs backfill "
        f"{backfill[row, column]!r}{others}"
    )


def _exact_mismatches(a: pl.Series, b: pl.Series) -> pl.Series:
    return a.ne_missing(b)


def _float_mismatches(a: pl.Series, b: pl.Series, rtol: float) -> pl.Series:
    frame = pl.DataFrame({"a": a, "b": b})
    finite = pl.col("a").is_finite() & pl.col("b").is_finite()
    values = pl.concat([a, b]).cast(pl.Float64)
    scale = values.filter(values.is_finite()).abs().mean() or 0.0
    close = (pl.col("a") - pl.col("b")).abs() <= rtol * pl.max_horizontal(
        pl.col("a").abs(), pl.col("b").abs(), pl.lit(scale)
    )
    same = (
        pl.when(pl.col("a").is_null() | pl.col("b").is_null())
        .then(pl.col("a").is_null() & pl.col("b").is_null())
        .when(pl.col("a").is_nan() | pl.col("b").is_nan())
        .then(pl.col("a").is_nan() & pl.col("b").is_nan())
        .when(finite)
        .then(close)
        .otherwise(pl.col("a") == pl.col("b"))  # infinities
    )
    return frame.select(~same).to_series()


def compare_asset(nightly: PartitionStore, backfill: PartitionStore, asset: str, unpartitioned: bool = False) -> AssetComparison:
    """``asset`` in both stores: every partition (or the single file of an unpartitioned one)."""
    result = AssetComparison(asset)
    if unpartitioned:
        keys_n = [None] if nightly.exists(asset) else []
        keys_b = [None] if backfill.exists(asset) else []
    else:
        keys_n, keys_b = nightly.partitions(asset), backfill.partitions(asset)
    result.only_nightly = [str(k) for k in keys_n if k not in keys_b]
    result.only_backfill = [str(k) for k in keys_b if k not in keys_n]
    for key in (k for k in keys_n if k in keys_b):
        a, b = nightly.read(asset, key), backfill.read(asset, key)
        excluded = excluded_columns(asset, a.columns)
        result.excluded = sorted({*result.excluded, *excluded})
        difference = frame_difference(a.drop(excluded), b.drop(excluded, strict=False))
        result.compared += 1
        if difference is not None:
            result.differing[key or "(unpartitioned)"] = difference
    return result


def compare_stores(
    nightly: PartitionStore,
    backfill: PartitionStore,
    assets: Sequence[str],
    unpartitioned: Sequence[str] = (),
) -> list[AssetComparison]:
    return [compare_asset(nightly, backfill, a, a in unpartitioned) for a in assets]


def equality_table(results: Sequence[AssetComparison]) -> str:
    """A Markdown table: one row per asset, its verdict and its first difference."""
    lines = [
        "| asset | partitions compared | verdict | first difference / by-design columns left out |",
        "|---|---:|---|---|",
    ]
    for r in results:
        notes = []
        if r.only_nightly:
            notes.append(f"only in the nightly store: {len(r.only_nightly)} ({r.only_nightly[0]}…)")
        if r.only_backfill:
            notes.append(f"only in the backfill: {len(r.only_backfill)} ({r.only_backfill[0]}…)")
        if r.differing:
            first = next(iter(r.differing))
            notes.append(f"{len(r.differing)} partition(s) differ; {first}: {r.differing[first]}")
        if r.excluded:
            notes.append("by design, not compared: " + ", ".join(r.excluded))
        verdict = "equal" if r.equal else "DIFFERENT"
        lines.append(f"| {r.asset} | {r.compared} | {verdict} | {'; '.join(notes).replace('|', '/')} |")
    return "\n".join(lines)
