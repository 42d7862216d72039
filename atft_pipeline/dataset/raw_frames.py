"""Raw inputs for the feature families, from stored partitions or from endpoint tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import polars as pl

from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.storage import PartitionStore


def raw_frames_from_tables(tables: Mapping[str, pl.DataFrame]) -> dict[str, pl.LazyFrame]:
    """Map endpoint tables (a replay directory or the sandbox market) to raw-asset frames.

    The union of a raw asset's stored partitions is the endpoint's full table, so a whole
    table stands in for "every partition in the window"; endpoints absent from ``tables``
    become empty typed frames.
    """
    out: dict[str, pl.LazyFrame] = {}
    for source in RAW_SOURCES.values():
        table = tables.get(source.endpoint.path)
        if table is None:
            table = pl.DataFrame(schema=source.endpoint.schema())
        out[source.asset] = table.lazy()
    return out


def load_raw_window(
    store: PartitionStore, sources: Sequence[str], days: Sequence[dt.date]
) -> dict[str, pl.LazyFrame]:
    """Lazily scan the stored partitions of each raw source for ``days``.

    A source published sessions after its date (index options: 03:00 the next day) is read
    without its last ``available_sessions_later`` days: the evening run of the last day
    cannot have them, and no feature of that day may use them. A missing partition otherwise
    raises ``StorageError`` naming the asset and the day: features are never computed from a
    silently shorter history.
    """
    out = {}
    for source in sources:
        raw = RAW_SOURCES.get(source)
        available = list(days)[: len(days) - raw.available_sessions_later] if raw else list(days)
        if raw is not None and not available:
            out[source] = pl.LazyFrame(schema=raw.endpoint.schema())  # nothing published yet
        else:
            out[source] = store.scan(source, available)
    return out
