"""Row rules: named, per-column domain checks expressed as Polars expressions.

A rule is attached to the column it is about and evaluates to True where a row satisfies it.
Null means "not applicable" and passes: a relation is checked only where its operands are
present (a halted stock's null OHLC is not a violation). The builders below are the only place
a rule's arithmetic is written; ``raw_schemas`` composes them per asset.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

# JPX local code (4 characters; since 2024 letters may appear inside, e.g. "130A") followed by
# the J-Quants fifth digit ("0" for the common stock, e.g. "72030", "130A0").
STOCK_CODE_PATTERN = r"^[0-9][0-9A-Z]{3}[0-9]$"


class Severity(StrEnum):
    """How a failed check affects the partition (names match Dagster's AssetCheckSeverity)."""

    ERROR = "error"  # blocking: the partition must not feed downstream assets
    WARN = "warn"  # recorded and reported; the partition is still usable


@dataclass(frozen=True, eq=False)
class Rule:
    column: str
    name: str
    passes: pl.Expr  # True where the row satisfies the rule, null where it does not apply
    severity: Severity

    @property
    def reads(self) -> tuple[str, ...]:
        """The columns the rule's expression reads."""
        return tuple(dict.fromkeys(self.passes.meta.root_names()))

    def to_check(self, expected: pl.Schema) -> pa.Check:
        """The pandera check for this rule, given the schema the frame is expected to have.

        If a column the rule reads is missing or has the wrong dtype, the rule is skipped
        (reported as passing): the column's own presence/dtype check already fails and names
        the real problem, instead of a cascade of evaluation errors.
        """
        reads = self.reads
        passes = self.passes.alias(self.column)

        def check(data: PolarsData) -> pl.LazyFrame | bool:
            actual = data.lazyframe.collect_schema()
            if any(actual.get(c) != expected[c] for c in reads):
                return True
            return data.lazyframe.select(passes)

        return pa.Check(check, name=self.name, description=f"{self.column}: {self.passes}")


def _col(name: str, zero_is_missing: bool) -> pl.Expr:
    col = pl.col(name)
    return pl.when(col != 0).then(col) if zero_is_missing else col


def ohlc(o: str, h: str, low: str, c: str, *, zero_is_missing: bool = False) -> list[Rule]:
    """Bar consistency: L <= min(O, C), H >= max(O, C), L <= H (blocking).

    ``zero_is_missing``: the derivatives feed reports a session without trades as 0 rather
    than null, so 0 is treated as "no price" there.
    """
    open_, high, low_, close = (_col(n, zero_is_missing) for n in (o, h, low, c))
    return [
        Rule(low, "low_le_min_open_close", (low_ <= open_) & (low_ <= close), Severity.ERROR),
        Rule(h, "high_ge_max_open_close", (high >= open_) & (high >= close), Severity.ERROR),
        Rule(low, "low_le_high", low_ <= high, Severity.ERROR),
    ]


def ohlc_all_or_none(o: str, h: str, low: str, c: str) -> Rule:
    """A bar is either complete or entirely null (a no-trade day); half a bar is suspicious."""
    cols = [pl.col(n) for n in (o, h, low, c)]
    all_null = pl.all_horizontal([col.is_null() for col in cols])
    none_null = pl.all_horizontal([col.is_not_null() for col in cols])
    return Rule(o, "ohlc_all_or_none", all_null | none_null, Severity.WARN)


def positive(columns: Iterable[str], name: str, severity: Severity) -> list[Rule]:
    return [Rule(c, name, pl.col(c) > 0, severity) for c in columns]


def non_negative(
    columns: Iterable[str], severity: Severity = Severity.WARN, *, name: str = "non_negative"
) -> list[Rule]:
    return [Rule(c, name, pl.col(c) >= 0, severity) for c in columns]


def finite(column: str) -> Rule:
    """Parsing maps NaN/inf to null, so a non-finite value means the frame bypassed it."""
    return Rule(column, "finite", pl.col(column).is_finite(), Severity.ERROR)


def not_blank(column: str) -> Rule:
    """An identifier sent as "" is as missing as a null one."""
    return Rule(column, "not_blank", pl.col(column).str.strip_chars() != "", Severity.ERROR)


def in_set(column: str, allowed: Collection[str], name: str, severity: Severity) -> Rule:
    return Rule(column, name, pl.col(column).is_in(sorted(allowed)), severity)


def matches(column: str, pattern: str, name: str, severity: Severity) -> Rule:
    re.compile(pattern)  # a bad pattern is a definition error, raised at import
    return Rule(column, name, pl.col(column).str.contains(pattern), severity)


def equals_within(
    column: str, name: str, expected: pl.Expr, tolerance: float, severity: Severity = Severity.WARN
) -> Rule:
    """``|column - expected| <= tolerance`` (published figures are rounded to whole units)."""
    return Rule(column, name, (pl.col(column) - expected).abs() <= tolerance, severity)


def not_after(column: str, later: str | pl.Expr, name: str, severity: Severity) -> Rule:
    """``column <= later`` (dates or numbers; ``later`` a column name or an expression)."""
    bound = pl.col(later) if isinstance(later, str) else later
    return Rule(column, name, pl.col(column) <= bound, severity)


def within(
    column: str, low: float, high: float, name: str, severity: Severity, *, low_open: bool
) -> Rule:
    """``low < column <= high`` (``low_open``) or ``low <= column <= high``."""
    col = pl.col(column)
    above = col > low if low_open else col >= low
    return Rule(column, name, above & (col <= high), severity)
