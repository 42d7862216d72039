"""``ml_dataset`` and ``normalization_stats`` stages."""

from __future__ import annotations

import datetime as dt

from atft_pipeline.dataset.assemble import assemble_dataset, build_meta, universe_exclusions
from atft_pipeline.dataset.normalization import compute_normalization_stats, stats_hash
from atft_pipeline.names import DATASET_ASSET, TARGETS_ASSET
from atft_pipeline.stages import CheckOutcome, StageOutput
from atft_pipeline.stages.scope import PipelineScope
from atft_pipeline.stages.windows import frames_by_partition, lookback_window
from atft_pipeline.storage import PartitionStore

CATALOG_CHECK = "columns_equal_catalog"
# The raw sources the dataset's meta columns (universe, sector, segment) read over its window.
META_SOURCES = ("raw_daily_quotes", "raw_listed_info")


def ml_dataset(store: PartitionStore, dates: list[dt.date], scope: PipelineScope) -> StageOutput:
    """Meta + every enabled family + targets for ``dates``; meta looks back
    ``dataset.min_history_days`` sessions (the configuration states the number once)."""
    history = scope.config.dataset.min_history_days
    families, enabled = scope.enabled_families, list(scope.families)
    keys = [d.isoformat() for d in dates]
    window = lookback_window(dates, history, scope.start)
    quotes, listed = (store.scan(source, window) for source in META_SOURCES)
    meta = build_meta(quotes, listed, dates, window, history)
    excluded = universe_exclusions(quotes, listed, dates, window)  # not stocks as of the date
    frames = {f.name: store.scan(f.asset, keys).collect() for f in families}
    targets = store.scan(TARGETS_ASSET, keys)
    # Sorted by (date, code) inside the assembly: a partition's file (and the statistics fit
    # on it) is byte-for-byte reproducible.
    dataset = assemble_dataset(meta, frames, targets, scope.catalog, enabled)
    expected = scope.catalog.expected_columns(enabled)
    return StageOutput(
        frames_by_partition(dataset, dates),
        metadata={
            "rows": dataset.height,
            "columns": dataset.width,
            "feature_columns": len(scope.feature_columns),
            "universe_rows": int(dataset["universe"].sum()),
            "excluded_codes": excluded,
            "catalog_hash": scope.catalog_hash,
        },
        checks={
            CATALOG_CHECK: CheckOutcome(
                passed=dataset.columns == expected,
                metadata={"columns": dataset.width, "expected": len(expected)},
            )
        },
    )


def normalization_stats(store: PartitionStore, scope: PipelineScope) -> StageOutput:
    """Robust per-feature statistics over every universe row of the training window."""
    stored = [dt.date.fromisoformat(k) for k in store.partitions(DATASET_ASSET)]
    if not stored:
        raise ValueError("normalization_stats: ml_dataset has no stored partitions")
    splits = scope.config.splits.resolve(stored)
    train_keys = [d.isoformat() for d in stored if splits.train.contains(d)]
    rows = store.scan(DATASET_ASSET, train_keys)
    stats = compute_normalization_stats(rows.filter("universe"), scope.feature_columns)
    return StageOutput(
        stats,
        metadata={
            "train_start": str(splits.train.start),
            "train_end": str(splits.train.end),
            "train_dates": len(train_keys),
            "row_count": int(stats["rows"][0]) if stats.height else 0,
            "features": stats.height,
            "stats_hash": stats_hash(stats),
        },
    )
