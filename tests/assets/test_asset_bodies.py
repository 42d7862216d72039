"""Single assets invoked directly on a small sandbox market: each writes what its stage
returns, one file per partition, through the storage resource."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from dagster import AssetKey, MaterializeResult, PartitionKeyRange, build_asset_context
from polars.testing import assert_frame_equal

from assets.definitions import build_definitions
from atft_pipeline import calendar
from atft_pipeline.names import TARGETS_ASSET
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from atft_pipeline.settings import Settings
from atft_pipeline.stages import features as feature_stages
from atft_pipeline.stages.raw import SCHEMA_CHECK
from atft_pipeline.stages.scope import resolve_scope
from atft_pipeline.storage import PartitionStore
from resources.jquants import JQuantsResource
from resources.storage import StorageResource

START, END = dt.date(2023, 1, 4), dt.date(2023, 4, 28)
DAYS = calendar.trading_days(START, END)


@pytest.fixture(scope="module")
def market():
    return generate_market(MarketConfig(seed=5, n_stocks=12, start=START, end=END))


@pytest.fixture
def stored_quotes(tmp_path, market):
    """``raw_daily_quotes`` for every day of the market, written by its asset in one call."""
    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        settings = Settings(
            home=tmp_path, start_date=START, plan="premium", api_key="sandbox", base_url=server.base_url
        )
        defs = build_definitions(settings)
        quotes = defs.get_assets_def(AssetKey("raw_daily_quotes"))
        context = build_asset_context(
            partition_key_range=PartitionKeyRange(DAYS[0].isoformat(), DAYS[-1].isoformat())
        )
        jquants = JQuantsResource(settings=settings)
        jquants.setup_for_execution(context)
        result = quotes(context, jquants=jquants, storage=StorageResource(root=str(tmp_path / "data")))
    return settings, defs, result


def _invoke(defs, asset: str, tmp_path, days: list[dt.date]) -> MaterializeResult:
    context = build_asset_context(partition_key_range=PartitionKeyRange(days[0].isoformat(), days[-1].isoformat()))
    return defs.get_assets_def(AssetKey(asset))(context, storage=StorageResource(root=str(tmp_path / "data")))


def test_raw_asset_writes_every_partition_as_the_api_returned_it(tmp_path, market, stored_quotes):
    _, _, result = stored_quotes
    store = PartitionStore(tmp_path / "data")
    assert store.partitions("raw_daily_quotes") == [d.isoformat() for d in DAYS]
    bars = market.tables["equities/bars/daily"]
    day = DAYS[10]
    stored = store.read("raw_daily_quotes", day).sort("Code")
    expected = bars.filter(pl.col("Date") == day).sort("Code")
    assert stored.height == expected.height > 0
    assert stored["Code"].to_list() == expected["Code"].to_list()
    assert stored["C"].to_list() == expected["C"].to_list()
    assert result.metadata["partitions"] == len(DAYS)
    assert result.metadata["rows"] == bars.filter(pl.col("Date").is_between(START, END)).height
    [check] = [c for c in result.check_results if c.check_name == SCHEMA_CHECK]
    assert check.passed


def test_feature_asset_writes_its_stage_output_per_partition(tmp_path, stored_quotes):
    settings, defs, _ = stored_quotes
    family = resolve_scope(settings).catalog.family("volatility")
    days = DAYS[-3:]
    result = _invoke(defs, family.asset, tmp_path, days)
    store = PartitionStore(tmp_path / "data")
    expected = feature_stages.feature_family(store, family, days, START)
    assert store.partitions(family.asset) == [d.isoformat() for d in days]
    for key, frame in expected.frames.items():
        assert_frame_equal(store.read(family.asset, key), frame)
    # The history window is the catalog's lookback, clamped to the first partition.
    assert result.metadata["history_days"] == len(DAYS)
    assert result.metadata["files"] == 3


def test_targets_asset_reads_ahead_only_what_is_stored(tmp_path, stored_quotes):
    _, defs, _ = stored_quotes
    early, late = DAYS[5:7], DAYS[-2:]
    _invoke(defs, TARGETS_ASSET, tmp_path, early)
    _invoke(defs, TARGETS_ASSET, tmp_path, late)
    store = PartitionStore(tmp_path / "data")
    known_early = store.read(TARGETS_ASSET, early[0])
    known_late = store.read(TARGETS_ASSET, late[-1])
    # 20 sessions ahead exist for the early day; nothing after the last stored day is known.
    assert known_early["target_20d"].null_count() < known_early.height
    assert known_late["target_1d"].null_count() == known_late.height
    # Cross-check target_1d with the stored closes: C(t+2) / C(t+1) - 1 for the stocks without
    # a corporate action on those days (adjustment factor 1).
    day, t1, t2 = early[0], DAYS[6], DAYS[7]
    quotes = store.scan("raw_daily_quotes", [t1, t2]).collect()
    split = quotes.filter(pl.col("AdjFactor") != 1.0)["Code"].unique()
    closes = quotes.filter(~pl.col("Code").is_in(split.to_list())).pivot("Date", index="Code", values="C")
    expected = closes.select(
        pl.col("Code").alias("code"), (pl.col(str(t2)) / pl.col(str(t1)) - 1).alias("expected")
    )
    got = store.read(TARGETS_ASSET, day).join(expected, on="code")
    assert got.height > 0
    assert (got["target_1d"] - got["expected"]).abs().max() < 1e-9
