"""The evening run of day t reads index options only up to t-1 (they are published at 03:00
on t+1), and gets the same options features as a run that had them."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atft_pipeline.calendar import trading_days
from atft_pipeline.dataset.raw_frames import load_raw_window, raw_frames_from_tables
from atft_pipeline.features.registry import compute_family, default_catalog
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.storage import PartitionStore, StorageError

OPTIONS = "raw_index_options"


@pytest.fixture(scope="module")
def market():
    return generate_market(
        MarketConfig(seed=2, n_stocks=12, start=dt.date(2024, 1, 4), end=dt.date(2024, 6, 28))
    )


def _store(tmp_path, market, family, window: list[dt.date]) -> PartitionStore:
    """Partitions as they stand on the evening of ``window[-1]``: options up to the day
    before, every other source up to the day itself."""
    store = PartitionStore(tmp_path)
    raw = raw_frames_from_tables(market.tables)
    for source in family.sources:
        frame = raw[source].collect()
        date_field = RAW_SOURCES[source].endpoint.date_field
        days = window[:-1] if source == OPTIONS else window
        for day in days:
            store.write(source, day, frame.filter(pl.col(date_field) == day))
    return store


def test_evening_run_needs_options_only_up_to_the_day_before(tmp_path, market) -> None:
    family = default_catalog().family("options")
    window = trading_days("2024-02-01", "2024-05-31")
    tonight = window[-1]
    store = _store(tmp_path, market, family, window)
    assert not store.exists(OPTIONS, tonight)
    with pytest.raises(StorageError, match=f"{OPTIONS}.*{tonight}"):
        store.scan(OPTIONS, window)  # what the window held before: the partition of tonight

    raw = load_raw_window(store, family.sources, window)
    got = compute_family(family, raw, [tonight], window)
    full = {
        source: frame.filter(
            pl.col(RAW_SOURCES[source].endpoint.date_field).is_between(window[0], tonight)
        )
        for source, frame in raw_frames_from_tables(market.tables).items()
        if source in family.sources
    }
    expected = compute_family(family, full, [tonight], window)
    assert got.height > 0 and got.drop("date", "code").null_count().sum_horizontal().item() < (
        got.height * (got.width - 2)
    )
    assert_frame_equal(got, expected)


def test_a_window_of_one_day_has_no_options_yet(tmp_path, market) -> None:
    day = dt.date(2024, 3, 1)
    store = PartitionStore(tmp_path)
    raw = load_raw_window(store, [OPTIONS], [day])
    frame = raw[OPTIONS].collect()
    assert frame.height == 0
    assert frame.schema == RAW_SOURCES[OPTIONS].endpoint.schema()
