"""Feature-family and target stages: read the raw window, compute the requested dates only.

A family's history window is its catalog ``lookback`` (the asset's partition mapping covers
``history``), and a recursive family's window starts on a fixed anchor, so a nightly run and a
backfill compute the same value for the same date.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.dataset.raw_frames import load_raw_window
from atft_pipeline.dataset.targets import compute_targets, last_traded_counts
from atft_pipeline.features.catalog import HORIZONS, TARGET_COLUMNS, FeatureFamily
from atft_pipeline.features.registry import compute_family
from atft_pipeline.stages import StageOutput
from atft_pipeline.stages.windows import frames_by_partition, history_windows, stored_keys
from atft_pipeline.storage import PartitionStore

TARGETS_SOURCE = "raw_daily_quotes"
TARGET_REACH = 1 + max(HORIZONS)  # sessions after t that targets look at


def feature_family(
    store: PartitionStore, family: FeatureFamily, dates: list[dt.date], first_partition: dt.date
) -> StageOutput:
    windows = history_windows(dates, family.lookback, first_partition, family.recursive)
    frame = pl.concat(
        [
            compute_family(family, load_raw_window(store, family.sources, window), group, window)
            for group, window in windows
        ]
    )
    cells = max(frame.height * len(family.columns), 1)
    null_share = frame.select(family.columns).null_count().sum_horizontal().item() / cells
    return StageOutput(
        frames_by_partition(frame, dates),
        metadata={
            "rows": frame.height,
            "columns": len(family.columns),
            "codes": frame["code"].n_unique(),
            "null_share": round(null_share, 4),
            "history_days": len(calendar.trading_days(windows[0][1][0], dates[-1])),
        },
    )


def targets(store: PartitionStore, dates: list[dt.date]) -> StageOutput:
    """Forward returns from the stored bars up to ``TARGET_REACH`` sessions after each date."""
    ahead = calendar.trading_days(dates[0], calendar.shift_trading_days(dates[-1], TARGET_REACH))
    window = stored_keys(store, TARGETS_SOURCE, ahead)
    flagged = compute_targets(store.scan(TARGETS_SOURCE, window), ahead, dates, flags=True).collect()
    frame = flagged.select("date", "code", *TARGET_COLUMNS)
    known = {c: int(frame[c].is_not_null().sum()) for c in TARGET_COLUMNS}
    # rows whose exit is the last traded close (delisted / halted inside the horizon)
    last_traded = {f"last_traded_{c}": n for c, n in last_traded_counts(flagged).items()}
    return StageOutput(
        frames_by_partition(frame, dates),
        metadata={"rows": frame.height, **{f"known_{k}": v for k, v in known.items()}, **last_traded},
    )
