"""Raw inputs for the feature families, from stored partitions or from endpoint tables."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from atft_pipeline.jquants.sources import RAW_SOURCES


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
