"""ml_dataset assembly: exact catalog columns, loud family failures, real data with families disabled."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import polars as pl
import pytest

from atft_pipeline import calendar
from atft_pipeline.dataset.assemble import DatasetSchemaError, assemble_dataset, build_meta
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.dataset.targets import compute_targets
from atft_pipeline.features.registry import (
    FeatureFamilyError,
    compute_family,
    default_catalog,
    enabled_families,
)
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.sandbox.market import MarketConfig, generate_market


@pytest.fixture(scope="module")
def small_market():
    return generate_market(MarketConfig(seed=5, n_stocks=30, start=dt.date(2022, 1, 4), end=dt.date(2022, 12, 29)))


def _build(tables, families, dates, days):
    catalog = default_catalog()
    raw = raw_frames_from_tables(tables)
    frames = {name: compute_family(catalog.family(name), raw, dates, days) for name in families}
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, days)
    targets = compute_targets(raw["raw_daily_quotes"], days, dates)
    return assemble_dataset(meta, frames, targets, catalog, families), frames


def test_every_family_builds_a_dataset_equal_to_the_catalog(small_market):
    catalog = default_catalog()
    days = calendar.trading_days(small_market.config.start, small_market.config.end)
    dates = days[-15:]
    families = list(catalog.families)
    dataset, _ = _build(small_market.tables, families, dates, days)
    assert dataset.columns == catalog.expected_columns(families)
    assert len(catalog.feature_columns(families)) >= 300
    assert dataset.height == small_market.tables["equities/bars/daily"].filter(pl.col("Date").is_in(dates)).height
    floats = [c for c, t in dataset.schema.items() if t in (pl.Float32, pl.Float64)]
    assert dataset.select(pl.any_horizontal(pl.col(floats).is_nan()).sum()).item() == 0
    assert dataset["sector33"].null_count() == 0


def test_a_family_that_raises_fails_the_build_naming_it(small_market):
    catalog = default_catalog()
    days = calendar.trading_days(small_market.config.start, small_market.config.end)

    def broken(_inputs):
        raise RuntimeError("upstream column vanished")

    family = replace(catalog.family("margin_weekly"), compute=broken)
    with pytest.raises(FeatureFamilyError, match="'margin_weekly' failed: upstream column vanished"):
        compute_family(family, raw_frames_from_tables(small_market.tables), days[-3:], days)


def test_a_missing_family_never_yields_a_narrower_dataset(small_market):
    catalog = default_catalog()
    days = calendar.trading_days(small_market.config.start, small_market.config.end)
    dates = days[-3:]
    _, frames = _build(small_market.tables, ["price", "volatility"], dates, days)
    raw = raw_frames_from_tables(small_market.tables)
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, days)
    targets = compute_targets(raw["raw_daily_quotes"], days, dates)
    with pytest.raises(DatasetSchemaError, match=r"missing \['volatility'\]"):
        assemble_dataset(meta, {"price": frames["price"]}, targets, catalog, ["price", "volatility"])


def test_sector_membership_comes_from_the_master_row_in_force(small_market):
    master = small_market.tables["equities/master"].sort("Date")
    changes = master.group_by("Code").agg(pl.col("S33").n_unique().alias("n")).filter(pl.col("n") > 1)
    if changes.is_empty():
        pytest.skip("no sector reclassification in this market")
    code = changes["Code"][0]
    rows = master.filter(pl.col("Code") == code).select("Date", "S33").unique("S33", keep="first").sort("Date")
    change_day = rows["Date"][1]
    days = calendar.trading_days(small_market.config.start, small_market.config.end)
    before = [d for d in days if d < change_day][-1]
    after = [d for d in days if d >= change_day][0]
    raw = raw_frames_from_tables(small_market.tables)
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], [before, after], days).collect()
    got = dict(meta.filter(pl.col("code") == code).select("date", "sector33").iter_rows())
    assert got[before] == rows["S33"][0] and got[after] == rows["S33"][1]


@pytest.mark.slow
def test_realdata_builds_with_families_whose_sources_are_absent_disabled(realdata_dir):
    from atft_pipeline.sandbox.replay import read_replay

    tables = read_replay(realdata_dir)
    codes = tables["equities/bars/daily"]["Code"].unique().sort().head(120)
    tables = {
        path: (t.filter(pl.col("Code").is_in(codes.implode())) if "Code" in t.columns and path != "markets/calendar" else t)
        for path, t in tables.items()
    }
    catalog = default_catalog()
    # the replay has bars, master, TOPIX and the calendar only
    absent = ["statements", "earnings", "flow"]
    families = enabled_families(catalog, Plan.LIGHT, None, absent)
    assert set(families) == {"price", "technical", "volatility", "market", "sector", "graph"}
    days = calendar.trading_days("2017-01-04", "2018-11-16")
    dates = days[-40:]
    dataset, _ = _build(tables, families, dates, days)
    assert dataset.columns == catalog.expected_columns(families)
    assert not any(c.startswith(("stmt_", "mrgw_", "flow_")) for c in dataset.columns)
    assert dataset.height > 0 and dataset["target_1d"].is_not_null().sum() > 0
