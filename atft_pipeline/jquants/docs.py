"""Render ``docs/raw_sources.md``: every raw asset, its endpoint, partition meaning and plan."""

from __future__ import annotations

from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.jquants.sources import RAW_SOURCES


def raw_sources_markdown() -> str:
    plans = list(Plan)
    lines = [
        "# Raw sources",
        "",
        "Generated from `atft_pipeline/jquants/sources.py` (a test keeps this file equal to it).",
        "Each raw asset is partitioned by trading day; a partition holds exactly what the API",
        "returns for that date. A source the configured plan does not include is **disabled**:",
        "defined in Dagster with `entitled: false` and a `disabled_reason`, left out of every job,",
        "never fetched and never faked; feature families that need it are disabled too.",
        "",
        "| asset | endpoint | partition date | " + " | ".join(p.value for p in plans) + " |",
        "|---|---|---|" + "---|" * len(plans),
    ]
    for source in RAW_SOURCES.values():
        marks = " | ".join("yes" if p.covers(source.plan) else "—" for p in plans)
        lines.append(
            f"| `{source.asset}` | `/{source.endpoint.path}` | {source.date_semantics} | {marks} |"
        )
    lines += [
        "",
        "`raw_trading_calendar` (`/markets/calendar`, every plan) is unpartitioned and is checked",
        "against the XTKS exchange calendar used for the partitions.",
    ]
    return "\n".join(lines) + "\n"
