"""Validate before writing: which fetched raw partitions may be stored, which are blocked.

A partition is blocked when its query failed (after the client's retries) or its data failed a
blocking check. Blocked partitions are quarantined in the store with the reason (the rejected
rows kept for inspection), so they never count as done, no dependant can read them, and the
next run fetches them again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.storage import PartitionStore
from atft_pipeline.validation.result import RawValidationResult, split_by_validation


@dataclass(frozen=True)
class GateResult:
    asset: str
    accepted: dict[dt.date, pl.DataFrame]  # passed every blocking check: may be stored
    blocked: dict[dt.date, str]  # day -> why (fetch error or blocking failures), quarantined
    results: list[RawValidationResult]  # every validated day (warnings included)

    def describe_blocked(self, limit: int = 20) -> str:
        lines = [f"{self.asset}[{d.isoformat()}]: {why}" for d, why in sorted(self.blocked.items())]
        more = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
        return "\n".join(lines[:limit] + more)


def gate_raw_partitions(
    store: PartitionStore,
    asset: str,
    frames: Mapping[dt.date, pl.DataFrame],
    failed: Mapping[dt.date, str],
    plan: Plan = Plan.PREMIUM,
) -> GateResult:
    """Validate the fetched ``frames``; quarantine every rejected or ``failed`` day."""
    accepted, rejected, results = split_by_validation(asset, dict(frames), plan)
    blocked: dict[dt.date, str] = {}
    for day, error in failed.items():
        blocked[day] = f"fetch failed: {error}"
        store.quarantine(asset, day, None, blocked[day])
    for day, result in rejected.items():
        blocked[day] = "; ".join(f.describe() for f in result.blocking_failures)
        store.quarantine(asset, day, frames[day], blocked[day])
    return GateResult(asset, accepted, dict(sorted(blocked.items())), results)
