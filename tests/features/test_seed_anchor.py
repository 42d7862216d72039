"""A recursive family (exponential averages seeded at a series' first bar) computes each date
from a window starting on a fixed anchor, so a nightly run of one date and a backfill of many
give the same values to 1e-9 — the tolerance ``atft simulate --check-backfill`` holds them to.
A window starting ``lookback`` sessions back seeds every EMA on a different bar each night
(dist_ema_50 then differs by ~1e-6)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from atft_pipeline import calendar
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.features.catalog import SEED_ANCHOR_REACH
from atft_pipeline.features.registry import default_catalog
from atft_pipeline.nightly.compare import frame_difference
from atft_pipeline.stages.features import feature_family
from atft_pipeline.stages.windows import history_windows, lookback_window, seed_anchor
from atft_pipeline.storage import PartitionStore
from tests.helpers import BARS, contract_tables, long_gap_codes, sessions_of

TECHNICAL = default_catalog().family("technical")


def test_anchor_is_a_first_session_of_a_year_and_covers_the_lookback():
    first = dt.date(2010, 1, 4)
    for day in calendar.trading_days("2016-01-04", "2019-12-30"):
        anchor = seed_anchor(day, TECHNICAL.lookback, first)
        back = calendar.shift_trading_days(day, -TECHNICAL.lookback)
        assert anchor <= back
        assert len(calendar.trading_days(anchor, day)) - 1 <= TECHNICAL.history
        year_start = calendar.trading_days(dt.date(anchor.year, 1, 1), anchor)
        assert year_start == [anchor]
    # clipped to the first partition
    assert seed_anchor(dt.date(2016, 3, 1), TECHNICAL.lookback, dt.date(2015, 6, 1)) == dt.date(2015, 6, 1)


def test_every_year_of_the_calendar_fits_the_reach():
    for year in range(2001, 2030):
        assert len(calendar.trading_days(dt.date(year, 1, 1), dt.date(year, 12, 31))) < SEED_ANCHOR_REACH


def test_windows_group_dates_by_anchor():
    days = calendar.trading_days("2021-09-01", "2022-06-30")
    first = dt.date(2020, 7, 1)
    groups = history_windows(days, TECHNICAL.lookback, first, anchored=True)
    assert [g for g, _ in groups] == [
        [d for d in days if seed_anchor(d, TECHNICAL.lookback, first) == a]
        for a in sorted({seed_anchor(d, TECHNICAL.lookback, first) for d in days})
    ]
    assert len(groups) == 2
    assert [w[0] for _, w in groups] == [first, dt.date(2021, 1, 4)]
    assert all(w[-1] == g[-1] for g, w in groups)
    plain = history_windows(days, TECHNICAL.lookback, first, anchored=False)
    assert plain == [(days, lookback_window(days, TECHNICAL.lookback, first))]


@pytest.fixture(scope="module")
def bar_store(tmp_path_factory):
    tables = contract_tables()
    days = sessions_of(tables)
    store = PartitionStore(tmp_path_factory.mktemp("seed-anchor"))
    bars = raw_frames_from_tables({BARS: tables[BARS]})["raw_daily_quotes"].collect()
    for (day,), frame in bars.partition_by("Date", as_dict=True).items():
        store.write("raw_daily_quotes", day, frame)
    return store, days


@pytest.mark.slow
def test_nightly_dates_equal_the_backfill(bar_store):
    store, days = bar_store
    backfill_days = days[-200:]
    backfill = feature_family(store, TECHNICAL, backfill_days, days[0]).frames
    anchors = [seed_anchor(d, TECHNICAL.lookback, days[0]) for d in backfill_days]
    # a date of each anchor, the first of the second anchor, and the last date
    nights = sorted({backfill_days[0], backfill_days[anchors.index(anchors[-1])], backfill_days[-1]})
    assert len({seed_anchor(d, TECHNICAL.lookback, days[0]) for d in nights}) == 2
    halted, missing = long_gap_codes(contract_tables())
    for night in nights:
        nightly = feature_family(store, TECHNICAL, [night], days[0]).frames[night.isoformat()]
        expected = backfill[night.isoformat()]
        assert expected.height > 20 and {halted, missing} <= set(expected["code"])
        assert expected["dist_ema_50"].drop_nulls().len() > 15
        assert frame_difference(nightly, expected) is None, night
        assert nightly.select(pl.all().is_null().sum()).row(0) == expected.select(
            pl.all().is_null().sum()
        ).row(0)
