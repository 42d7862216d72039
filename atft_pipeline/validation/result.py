"""Validate one raw partition against its schema and report every failure.

``validate_raw`` never raises on bad data: pandera runs lazily (all failures collected) and each
of its errors becomes a ``Failure`` naming the column, the check, how many rows failed and the
first failing rows by their identifying columns. Programming errors (an unknown asset, a
partition for an unpartitioned asset, something that is not a DataFrame) still raise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.constants import CHECK_OUTPUT_KEY
from pandera.errors import SchemaError, SchemaErrorReason, SchemaErrors

from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.validation.raw_schemas import (
    COLUMN_PRESENT,
    DTYPE,
    NO_EXTRA_COLUMNS,
    NOT_ALL_NULL,
    NOT_NULL,
    ROWS_PRESENT,
    RULE_ERROR,
    UNIQUE_KEY,
    RawAssetSpec,
    raw_asset_spec,
    raw_schema,
)
from atft_pipeline.validation.rules import Severity

MAX_EXAMPLES = 5
_MAX_VALUE_CHARS = 40


@dataclass(frozen=True)
class Failure:
    column: str  # for a duplicate key: the key columns, comma-separated
    check: str
    n_failed: int  # failing rows (every row for a column-wide failure such as a wrong dtype)
    examples: tuple[str, ...]  # first failing rows: identifying columns and the failing value
    severity: Severity
    detail: str | None = None  # what is wrong, for column-wide failures
    truncated: bool = False  # more failing rows (or duplicated keys) than examples

    @property
    def blocking(self) -> bool:
        return self.severity is Severity.ERROR

    def describe(self) -> str:
        text = f"column '{self.column}' failed check '{self.check}'"
        if self.detail is not None:
            text += f": {self.detail}"
        else:
            rows = "row" if self.n_failed == 1 else "rows"
            more = ", ..." if self.truncated else ""
            text += f" on {self.n_failed} {rows} ({', '.join(self.examples)}{more})"
        return text if self.blocking else f"{text} [warning]"


@dataclass(frozen=True)
class RawValidationResult:
    asset: str
    partition: dt.date | None
    n_rows: int
    failures: tuple[Failure, ...]  # blocking failures first

    @property
    def passed(self) -> bool:
        """No blocking failure: the partition may feed downstream assets (warnings allowed)."""
        return not self.blocking_failures

    @property
    def clean(self) -> bool:
        """Not even a warning."""
        return not self.failures

    @property
    def blocking_failures(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.blocking)

    @property
    def warnings(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if not f.blocking)

    @property
    def label(self) -> str:
        if self.partition is None:
            return self.asset
        return f"{self.asset}[{self.partition.isoformat()}]"

    @property
    def message(self) -> str:
        if not self.failures:
            return f"{self.label}: ok ({self.n_rows} rows)"
        return f"{self.label}: " + "; ".join(f.describe() for f in self.failures)


def validate_raw(
    asset: str, partition: dt.date | None, frame: pl.DataFrame, plan: Plan = Plan.PREMIUM
) -> RawValidationResult:
    """Check one raw partition (``partition=None``: an unpartitioned asset or a multi-day frame,
    without the partition-date rule). An empty frame with the right columns passes."""
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"{asset}: expected a polars DataFrame, got {type(frame).__name__}")
    schema = raw_schema(asset, plan, partition=partition)
    spec = raw_asset_spec(asset)
    try:
        # pinned, so that PANDERA_* environment variables cannot turn the data checks off
        with config_context(
            validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA
        ):
            schema.validate(frame, lazy=True)
        errors: list[SchemaError] = []
    except SchemaErrors as exc:
        errors = exc.schema_errors
    ids = [c for c in spec.id_columns(partitioned=partition is not None) if c in frame.columns]
    failures = _merge_missing_columns(
        [f for err in errors if (f := _failure(err, frame, ids, spec)) is not None]
    )
    if partition is not None:
        failures += _day_failures(spec, frame)
    failures.sort(key=lambda f: not f.blocking)  # stable: schema order within each group
    return RawValidationResult(asset, partition, frame.height, tuple(failures))


def _day_failures(spec: RawAssetSpec, frame: pl.DataFrame) -> list[Failure]:
    """Whole-day checks of one partition (see ``RawAssetSpec.rows_every_day``/``not_all_null``)."""
    if frame.height == 0:
        if not spec.rows_every_day:
            return []
        detail = f"no rows for a trading day; /{spec.endpoint.path} has rows on every trading day"
        return [Failure("-", ROWS_PRESENT, 0, (), Severity.ERROR, detail)]
    return [
        Failure(column, NOT_ALL_NULL, frame.height, (), Severity.ERROR, f"null on all {frame.height} rows")
        for column in spec.not_all_null
        if column in frame.columns and frame[column].null_count() == frame.height
    ]


def _merge_missing_columns(failures: list[Failure]) -> list[Failure]:
    """One failure for all missing columns (a frame of the wrong endpoint misses dozens)."""
    missing = [f for f in failures if f.check == COLUMN_PRESENT]
    if len(missing) < 2:
        return failures
    merged = replace(missing[0], column=", ".join(f.column for f in missing))
    return [merged, *(f for f in failures if f.check != COLUMN_PRESENT)]


def _failure(
    err: SchemaError, frame: pl.DataFrame, ids: list[str], spec: RawAssetSpec
) -> Failure | None:
    reason = err.reason_code
    column = str(getattr(err.schema, "name", None) or "")
    if reason is SchemaErrorReason.WRONG_DATATYPE:
        detail = f"expected {err.schema.dtype}, got {err.failure_cases}"
        return Failure(column, DTYPE, frame.height, (), Severity.ERROR, detail)
    if reason is SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME:
        return Failure(
            str(err.failure_cases), COLUMN_PRESENT, frame.height, (), Severity.ERROR,
            "missing from the frame",
        )
    if reason is SchemaErrorReason.COLUMN_NOT_IN_SCHEMA:
        return Failure(
            str(err.failure_cases), NO_EXTRA_COLUMNS, frame.height, (), Severity.ERROR,
            "not a field of the endpoint",
        )
    if reason is SchemaErrorReason.DUPLICATES:
        key = list(err.schema.unique)
        if not set(key) <= set(frame.columns):
            return None  # pandera checked a partial key; the missing column is reported instead
        failing = _failing_rows(err, frame)
        duplicated = failing.group_by(key, maintain_order=True).agg(rows=pl.len())
        return Failure(
            ", ".join(key), UNIQUE_KEY, failing.height, _examples(duplicated), Severity.ERROR,
            truncated=duplicated.height > MAX_EXAMPLES,
        )
    if reason is SchemaErrorReason.SERIES_CONTAINS_NULLS:
        failing = _failing_rows(err, frame)
        return _row_failure(column, NOT_NULL, Severity.ERROR, failing, [*ids, column])
    if reason is SchemaErrorReason.CHECK_ERROR:
        detail = f"rule '{err.check.name}' could not be evaluated: {err.failure_cases}"
        return Failure(column, RULE_ERROR, frame.height, (), Severity.ERROR, detail)
    if reason is SchemaErrorReason.DATAFRAME_CHECK and err.check_output is not None:
        name, failing = err.check.name, _failing_rows(err, frame)
        shown = [*ids, column, *spec.reads(column, name)]
        return _row_failure(column, name, spec.severities()[name], failing, shown)
    # Anything else pandera can report is structural: block, and say what pandera said.
    detail = str(err).splitlines()[0] if str(err) else reason.value
    return Failure(column or "-", reason.value, frame.height, (), Severity.ERROR, detail)


def _failing_rows(err: SchemaError, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``frame`` where the check output is False (null output means not applicable)."""
    passed = err.check_output.get_column(CHECK_OUTPUT_KEY).fill_null(True)
    return frame.filter(~passed)


def _row_failure(
    column: str, check: str, severity: Severity, failing: pl.DataFrame, shown: list[str]
) -> Failure:
    examples = _examples(failing.select(list(dict.fromkeys(shown))))
    return Failure(
        column, check, failing.height, examples, severity,
        truncated=failing.height > MAX_EXAMPLES,
    )


def _examples(rows: pl.DataFrame) -> tuple[str, ...]:
    return tuple(
        " ".join(f"{name}={_short(value)}" for name, value in row.items())
        for row in rows.head(MAX_EXAMPLES).iter_rows(named=True)
    )


def _short(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def validate_raw_partitions(
    asset: str, frames: dict[dt.date, pl.DataFrame], plan: Plan = Plan.PREMIUM
) -> list[RawValidationResult]:
    """Validate many partitions of one asset, in one schema pass when the data is clean.

    pandera's cost is mostly per call, so a year of partitions is checked as one frame (rows
    that repeat verbatim across partitions, like unchanged master snapshot rows, are checked
    once) and the partition-date and whole-day rules are evaluated per partition with
    vectorized compares. When that pass finds something, the batch is halved and each half
    checked the same way, down to single partitions, which are validated on their own: every
    failure is still reported against its own partition, and one bad day among N costs about
    2·log2(N) schema passes instead of N.

    A row repeated verbatim *within* one partition is a duplicate key there, and a partition
    with other columns cannot be concatenated: both always take the one-by-one path, where
    pandera reports them.
    """
    if not frames:
        return []
    one_schema = len({tuple(f.schema.items()) for f in frames.values()}) == 1
    repeated_within = any(f.height and f.is_duplicated().any() for f in frames.values())
    if not one_schema or repeated_within:
        # one day's wrong columns or repeated rows: concatenating would fail or hide them
        return [validate_raw(asset, day, frame, plan) for day, frame in frames.items()]
    return _validate_batch(asset, raw_asset_spec(asset), list(frames.items()), plan)


def _validate_batch(
    asset: str, spec: RawAssetSpec, items: list[tuple[dt.date, pl.DataFrame]], plan: Plan
) -> list[RawValidationResult]:
    """``items`` share one schema and repeat no row within a partition (checked once by the
    caller: both hold for every part of such a batch)."""
    if len(items) == 1:
        return [validate_raw(asset, items[0][0], items[0][1], plan)]
    non_empty = [f for _, f in items if f.height]
    together = pl.concat(non_empty).unique(maintain_order=True) if non_empty else items[0][1]
    if validate_raw(asset, None, together, plan).failures:
        half = len(items) // 2
        return _validate_batch(asset, spec, items[:half], plan) + _validate_batch(
            asset, spec, items[half:], plan
        )
    return [_clean_batch_result(asset, spec, day, frame) for day, frame in items]


def _clean_batch_result(
    asset: str, spec: RawAssetSpec, day: dt.date, frame: pl.DataFrame
) -> RawValidationResult:
    """One partition of a batch whose schema pass found nothing: only the partition-date and
    whole-day rules are left to check."""
    rule = spec.partition_rule(day)
    wrong = frame.filter(~rule.passes.fill_null(True)) if frame.height else frame
    failures: tuple[Failure, ...] = ()
    if wrong.height:
        ids = [c for c in spec.id_columns(partitioned=True) if c in frame.columns]
        columns = [*ids, rule.column]
        failures = (_row_failure(rule.column, rule.name, rule.severity, wrong, columns),)
    failures += tuple(_day_failures(spec, frame))
    return RawValidationResult(asset, day, frame.height, failures)


def split_by_validation(
    asset: str, frames: dict[dt.date, pl.DataFrame], plan: Plan = Plan.PREMIUM
) -> tuple[dict[dt.date, pl.DataFrame], dict[dt.date, RawValidationResult], list[RawValidationResult]]:
    """Validate before writing: ``(accepted frames, rejected results by day, every result)``.

    Accepted partitions passed every blocking check (warnings allowed) and may be stored;
    rejected ones must not be stored where a dependant can read them.
    """
    results = validate_raw_partitions(asset, frames, plan)
    accepted = {r.partition: frames[r.partition] for r in results if r.passed}
    rejected = {r.partition: r for r in results if not r.passed}
    return accepted, rejected, results
