"""One Dagster-free function per asset: ``(store, partition dates, scope) -> StageOutput``.

A stage reads what it needs from the ``PartitionStore`` (its history window is computed here,
from the lookback the catalog or configuration states once), computes, and returns the frames
to write (one per partition key, or one frame for an unpartitioned asset) with the metadata and
check outcomes to record. The Dagster assets only resolve partitions, call the stage and write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl


class Markdown(str):
    """A metadata value to render as Markdown (plain strings are shown as text)."""


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    warn_only: bool = False  # a failure is a warning, never blocks downstream


@dataclass(frozen=True)
class StageOutput:
    """What an asset writes: ``{partition_key: frame}`` for partitioned assets, else one frame."""

    frames: dict[str, pl.DataFrame] | pl.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, CheckOutcome] = field(default_factory=dict)
    # Validate before writing: when some partitions were blocked (and quarantined), ``frames``
    # holds only the accepted ones and this says which were blocked and why; the asset writes
    # the accepted partitions, then fails naming the blocked ones.
    blocked: str | None = None
