"""The fault-and-bad-input suite's case tables, and the figure table generated from them.

Every test module of the suite parametrizes over one of these tables, so the table in
``docs/reliability.md`` counts exactly the cases the suite runs (``test_report.py`` fails when
the committed document differs; regenerate it with ``python -m tests.reliability.cases``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@dataclass(frozen=True)
class BadInput:
    name: str
    asset: str
    mutate: Callable[[pl.DataFrame], pl.DataFrame]  # applied to one day's valid frame
    column: str  # the column the error must name ("-" for a whole-partition failure)
    check: str  # the blocking check that must name it


def _first(column: str, value: object, dtype: pl.DataType | None = None) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def mutate(frame: pl.DataFrame) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        lit = pl.lit(value, dtype=dtype or frame.schema[column])
        return frame.with_columns(pl.when(first).then(lit).otherwise(pl.col(column)).alias(column))

    return mutate


def _swap_high_low(prefix: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def mutate(frame: pl.DataFrame) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        h, low = f"{prefix}H", f"{prefix}L"
        return frame.with_columns(
            pl.when(first).then(pl.col(low) * 0.5).otherwise(pl.col(h)).alias(h),
        )

    return mutate


def _low_above_open(frame: pl.DataFrame) -> pl.DataFrame:
    first = pl.int_range(pl.len()) == 0
    return frame.with_columns(pl.when(first).then(pl.col("O") * 1.01).otherwise(pl.col("L")).alias("L"))


def _close_above_high(frame: pl.DataFrame) -> pl.DataFrame:
    first = pl.int_range(pl.len()) == 0
    return frame.with_columns(pl.when(first).then(pl.col("H") * 1.5).otherwise(pl.col("C")).alias("C"))


def _duplicate_key(frame: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([frame, frame.head(1).with_columns(pl.col("Vo") + 1)])


def _duplicate_row(frame: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([frame, frame.head(1)])


def _empty(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.clear()


def _all_null(column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda frame: frame.with_columns(pl.lit(None, dtype=frame.schema[column]).alias(column))


def _drop(column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda frame: frame.drop(column)


def _extra_column(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.lit(1).alias("Unexpected"))


def _as_text(column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda frame: frame.with_columns(pl.col(column).cast(pl.String))


def _shift_date(days: int) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def mutate(frame: pl.DataFrame) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        return frame.with_columns(
            pl.when(first).then(pl.col("Date") + pl.duration(days=days)).otherwise(pl.col("Date")).alias("Date")
        )

    return mutate


BARS, MASTER, TOPIX = "raw_daily_quotes", "raw_listed_info", "raw_topix"

BAD_INPUTS: list[BadInput] = [
    BadInput("negative close", BARS, _first("C", -5.0), "C", "price_positive"),
    BadInput("zero open", BARS, _first("O", 0.0), "O", "price_positive"),
    BadInput("negative adjusted close", BARS, _first("AdjC", -1.0), "AdjC", "price_positive"),
    BadInput("high below low", BARS, _swap_high_low(""), "L", "low_le_high"),
    BadInput("adjusted high below low", BARS, _swap_high_low("Adj"), "AdjL", "low_le_high"),
    BadInput("low above open", BARS, _low_above_open, "L", "low_le_min_open_close"),
    BadInput("close above high", BARS, _close_above_high, "H", "high_ge_max_open_close"),
    BadInput("null code", BARS, _first("Code", None), "Code", "not_null"),
    BadInput("blank code", BARS, _first("Code", " "), "Code", "not_blank"),
    BadInput("malformed code", BARS, _first("Code", "ABCDE"), "Code", "code_format"),
    BadInput("duplicate key", BARS, _duplicate_key, "Date, Code", "unique_key"),
    BadInput("exact duplicate row", BARS, _duplicate_row, "Date, Code", "unique_key"),
    BadInput("trading day with 0 bars", BARS, _empty, "-", "rows_present"),
    BadInput("whole day of null AdjC", BARS, _all_null("AdjC"), "AdjC", "not_all_null"),
    BadInput("row from another date", BARS, _shift_date(1), "Date", "partition_date"),
    BadInput("infinite close", BARS, _first("C", float("inf")), "C", "finite"),
    BadInput("non-positive adjustment factor", BARS, _first("AdjFactor", 0.0), "AdjFactor", "adj_factor_positive"),
    BadInput("missing column", BARS, _drop("AdjC"), "AdjC", "column_present"),
    BadInput("unknown column", BARS, _extra_column, "Unexpected", "no_extra_columns"),
    BadInput("prices as text", BARS, _as_text("C"), "C", "dtype"),
    BadInput("TOPIX day without rows", TOPIX, _empty, "-", "rows_present"),
    BadInput("TOPIX close all null", TOPIX, _all_null("C"), "C", "not_all_null"),
    BadInput("TOPIX high below low", TOPIX, _swap_high_low(""), "L", "low_le_high"),
    BadInput("listed info without rows", MASTER, _empty, "-", "rows_present"),
    BadInput("listed info null code", MASTER, _first("Code", None), "Code", "not_null"),
    BadInput("listed info snapshot after its day", MASTER, _shift_date(30), "Date", "snapshot_not_after_partition"),
]

# Each of the tables below is the parametrization of one test.
FAULTS = [
    "429 storm on a loopback URL: requests after a 429 are >= 60 s apart",
    "429 storm: raw frames identical to a fault-free fetch",
    "random 5xx: raw frames identical to a fault-free fetch",
    "truncated bodies: raw frames identical to a fault-free fetch",
    "latency: raw frames identical to a fault-free fetch",
    "one malformed day: only that day fails, named, the others are kept",
    "server trickling 1 byte at a time: the request ends at its total deadline",
]
KILLS = [
    "kill -9 while raw partitions are written",
    "kill -9 while feature partitions are written",
    "kill -9 while training writes final_metrics.json",
    "kill -9 of atft run mid-stage: next run completes, killed run finalized, pool slots freed",
    "SIGTERM stops the whole run, not only the current stage",
]
STORAGE = [
    "byte damage inside a Parquet file (footer intact) is found, named and repaired",
    "a truncated Parquet file is found, named and repaired",
    "disk full during a write keeps the previous file intact",
    "a quarantined partition is not done for the runner and the recovery sensor",
]
CONCURRENCY = [
    "a second atft run on the same home is refused with a clear message",
    "concurrent writers of one partition never share a temporary file",
    "a pool slot held by another live run: the stage fails after a bounded wait, naming pool and run",
]
PIPELINE = [
    "a stage whose upstream failed is skipped and reported; a later run completes it",
    "evaluation_report refuses predictions older than their models",
    "identical inputs in another order give a byte-identical ml_dataset",
    "LightGBM trained on identical rows in another order predicts identically",
    "extending a range redoes the targets that looked past its old end",
]
SECRETS = [
    "client config and client reprs mask the API key",
    "errors and logs of a failing run never contain the API key",
    "quarantine records never contain the API key",
]

CATEGORIES: dict[str, list[str]] = {
    "Bad inputs (blocked before writing, quarantined)": [b.name for b in BAD_INPUTS],
    "API faults": FAULTS,
    "Kills and signals": KILLS,
    "Stored-file damage and disk full": STORAGE,
    "Concurrency": CONCURRENCY,
    "Pipeline semantics (skips, staleness, determinism)": PIPELINE,
    "Secrets": SECRETS,
}


def render() -> str:
    total = sum(len(v) for v in CATEGORIES.values())
    lines = [
        "# Reliability: the fault-and-bad-input suite",
        "",
        "Generated by `python -m tests.reliability.cases` from the suite's case tables",
        "(`tests/reliability/`); `tests/reliability/test_report.py` fails when this file is stale.",
        "Every case asserts that no stored file is lost or corrupt, that blocked data never",
        "reaches a dependant (in the same or any later run), and that the error names the",
        "asset, partition, column or file. A case that loses data fails the suite, so on a",
        "passing suite the *lost* column is 0 by construction.",
        "",
        "| Category | Cases | Survived | Lost files |",
        "|---|---:|---:|---:|",
    ]
    for category, cases in CATEGORIES.items():
        lines.append(f"| {category} | {len(cases)} | {len(cases)} | 0 |")
    lines += [f"| **Total** | **{total}** | **{total}** | **0** |", ""]
    lines += MECHANISMS
    for category, cases in CATEGORIES.items():
        lines += [f"## {category}", ""] + [f"- {c}" for c in cases] + [""]
    return "\n".join(lines)


MECHANISMS = [
    "## What holds it together",
    "",
    "- **Validate before writing.** A raw partition is validated before it is stored; a day",
    "  that fails a blocking check, or whose query failed after its retries, is quarantined",
    "  under `<data>/_quarantine/<asset>/<day>.{json,parquet}` with the reason. It is never",
    "  stored where a dependant reads, and `PartitionStore.scan` refuses it by name.",
    "- **Done means verified.** Every write records the file's SHA-256 under",
    "  `<data>/_checksums/`. A partition is done for `atft run` and the recovery sensor only",
    "  when it is recorded as materialized, its file matches its checksum and it is not",
    "  quarantined; anything else is materialized again.",
    "- **Per-day isolation.** Each day of a source is fetched, validated and quarantined on",
    "  its own; one bad answer costs one day, not its block.",
    "- **Runs.** `atft run` holds an `flock` on the Dagster home (the kernel drops it when the",
    "  holder dies), marks runs a killed `atft run` left unfinished as failed, frees pool slots",
    "  of finished runs, waits a bounded time for slots held by live runs, skips (and reports)",
    "  every stage downstream of a failed one, and stops the whole range on Ctrl-C/SIGTERM.",
    "- **Requests.** After a 429 no request of the client is sent for at least 60 s (plus",
    "  jitter), whether or not client-side rate limiting is on; `timeout_s` bounds each request",
    "  from connect to last byte.",
    "- **Determinism.** `ml_dataset` rows are sorted by (date, code); LightGBM trains on",
    "  sorted rows, so identical inputs give identical files, statistics and models.",
    "",
]


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
