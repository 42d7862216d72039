"""Raw assets end to end: Dagster -> resource -> client -> real stand-in server on loopback."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from dagster import AssetKey, build_sensor_context

from assets.definitions import build_definitions
from assets.recovery import RECOVERY_SENSOR
from assets.runner import materialize_range
from atft_pipeline import calendar
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.names import CALENDAR_ASSET
from atft_pipeline.sandbox.faults import FaultSettings
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from atft_pipeline.settings import Settings
from atft_pipeline.stages.raw import SCHEMA_CHECK
from atft_pipeline.storage import PartitionStore
from resources.jquants import JQuantsResource
from tests.helpers import atft_test_instance

START, END = dt.date(2023, 1, 4), dt.date(2023, 2, 28)
RAW_ASSETS = list(RAW_SOURCES)


@pytest.fixture(scope="module")
def market():
    return generate_market(
        MarketConfig(seed=11, n_stocks=25, start=dt.date(2022, 10, 3), end=dt.date(2023, 3, 31))
    )


@pytest.fixture
def instance():
    with atft_test_instance() as inst:
        yield inst


def _defs(tmp_path, base_url: str, plan: str = "premium", start: dt.date = dt.date(2022, 10, 3)):
    settings = Settings(home=tmp_path, start_date=start, plan=plan, api_key="sandbox", base_url=base_url)
    fast = JQuantsResource(
        settings=settings,
        client_overrides=dict(backoff_base_s=0.01, backoff_429_s=0.05, min_backoff_429_s=0.0, max_retries=2),
    )
    return build_definitions(settings, resources={"jquants": fast})


def _quiet(_: str) -> None:
    pass


def _store(tmp_path) -> PartitionStore:
    return PartitionStore(tmp_path / "data")


@pytest.mark.slow
def test_each_raw_asset_is_one_run_and_each_endpoint_date_is_fetched_once(
    tmp_path, market, instance
):
    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        defs = _defs(tmp_path, server.base_url)
        result = materialize_range(defs, instance, RAW_ASSETS, START, END, _store(tmp_path), progress=_quiet)
        assert result.success, [s.error for s in result.stages if not s.success]
        assert [s.asset for s in result.stages] == RAW_ASSETS  # one run per asset
        days = calendar.trading_days(START, END)
        store = PartitionStore(tmp_path / "data")
        for name, source in RAW_SOURCES.items():
            assert store.partitions(name) == [d.isoformat() for d in days], name
            for day in days:
                n = server.stats.count(source.endpoint.path, **source.params_for(day))
                assert n == 1, (name, day, n)
                if source.published_query is not None:
                    n = server.stats.count(source.endpoint.path, **source.published_query(day))
                    assert n == 1, (name, day, n)
        # every request the server saw belongs to one of those (endpoint, day) queries
        queries_per_day = sum(1 + (s.published_query is not None) for s in RAW_SOURCES.values())
        assert server.stats.total == len(days) * queries_per_day

        # rows are exactly what the server holds for that day
        bars = store.read("raw_daily_quotes", "2023-02-01")
        expected = market.tables["equities/bars/daily"].filter(pl.col("Date") == dt.date(2023, 2, 1))
        assert bars.height == expected.height > 0
        assert bars.sort("Code").equals(expected.sort("Code"))

        # a second run over the same range fetches nothing
        server.stats.reset()
        again = materialize_range(defs, instance, RAW_ASSETS, START, END, _store(tmp_path), progress=_quiet)
        assert again.success and server.stats.total == 0


@pytest.mark.slow
def test_recovery_sensor_requests_exactly_the_lost_partitions(tmp_path, market, instance):
    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        defs = _defs(tmp_path, server.base_url)
        assert materialize_range(defs, instance, RAW_ASSETS, START, END, _store(tmp_path), progress=_quiet).success
        store = PartitionStore(tmp_path / "data")
        lost = ["2023-01-11", "2023-01-12", "2023-02-01", "2023-02-14", "2023-02-27"]
        store.delete("raw_short_selling", lost[:4])
        store.path("raw_short_selling", lost[4]).write_bytes(b"truncated")

        sensor = defs.get_sensor_def(RECOVERY_SENSOR)
        repository = defs.get_repository_def()
        context = build_sensor_context(
            instance=instance, resources={"storage": repository.get_top_level_resources()["storage"]},
            repository_def=repository,
        )
        requests = sensor.evaluate_tick(context).run_requests
        assert sorted(r.partition_key for r in requests) == lost
        assert {tuple(k.path[-1] for k in r.asset_selection) for r in requests} == {("raw_short_selling",)}

        server.stats.reset()
        job = defs.resolve_implicit_global_asset_job_def()
        for request in requests:
            outcome = job.execute_in_process(
                instance=instance, partition_key=request.partition_key,
                asset_selection=list(request.asset_selection),
            )
            assert outcome.success
        assert server.stats.endpoints_called() == {"markets/short-ratio"}
        assert sorted(dict(r.params)["date"] for r in server.stats.records) == lost
        assert all(store.is_readable("raw_short_selling", d) for d in lost)
        assert not sensor.evaluate_tick(context).run_requests


@pytest.mark.slow
def test_a_failing_endpoint_fails_only_its_asset_and_a_rerun_completes_the_set(
    tmp_path, market, instance
):
    broken = ServerSettings(faults=FaultSettings(fail_endpoints=frozenset({"markets/short-ratio"})))
    with serve_in_thread(create_app(market.tables, settings=broken)) as server:
        result = materialize_range(
            _defs(tmp_path, server.base_url), instance, RAW_ASSETS, START, END, _store(tmp_path), progress=_quiet
        )
    failed = [s.asset for s in result.stages if not s.success]
    assert failed == ["raw_short_selling"]
    store = PartitionStore(tmp_path / "data")
    assert store.partitions("raw_short_selling") == []
    assert len(store.partitions("raw_daily_quotes")) == len(calendar.trading_days(START, END))

    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        rerun = materialize_range(
            _defs(tmp_path, server.base_url), instance, RAW_ASSETS, START, END, _store(tmp_path), progress=_quiet
        )
        assert rerun.success
        assert server.stats.endpoints_called() == {"markets/short-ratio"}
    assert len(store.partitions("raw_short_selling")) == len(calendar.trading_days(START, END))


def test_schema_check_fails_on_planted_bad_rows_naming_asset_partition_and_column(
    tmp_path, market, instance
):
    tables = dict(market.tables)
    bad_day = dt.date(2023, 1, 10)
    bars = tables["equities/bars/daily"]
    victim = bars.filter(pl.col("Date") == bad_day, pl.col("C").is_not_null())["Code"][0]
    tables["equities/bars/daily"] = bars.with_columns(
        pl.when((pl.col("Date") == bad_day) & (pl.col("Code") == victim))
        .then(pl.col("L") * 0.5)
        .otherwise(pl.col("H"))
        .alias("H")
    )
    with serve_in_thread(create_app(tables, settings=ServerSettings())) as server:
        defs = _defs(tmp_path, server.base_url)
        result = materialize_range(
            defs, instance, ["raw_daily_quotes"], bad_day, dt.date(2023, 1, 12), _store(tmp_path), progress=_quiet
        )
    # validated before writing: the bad day is quarantined (never stored where a dependant
    # reads), the good days are stored, and the error names asset, partition and column
    error = result.stages[0].error
    assert not result.success and "raw_daily_quotes[2023-01-10]" in error and "'H'" in error
    store = _store(tmp_path)
    assert store.partitions("raw_daily_quotes") == ["2023-01-11", "2023-01-12"]
    assert list(store.quarantined("raw_daily_quotes")) == ["2023-01-10"]
    assert instance.get_materialized_partitions(AssetKey("raw_daily_quotes")) == {"2023-01-11", "2023-01-12"}


def test_plan_without_entitlement_disables_the_source(tmp_path, market, instance):
    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        defs = _defs(tmp_path, server.base_url, plan="light")
        result = materialize_range(
            defs, instance, ["raw_short_selling"], START, dt.date(2023, 1, 6), _store(tmp_path), progress=_quiet
        )
        assert not result.success
        assert "disabled" in result.stages[0].error and "needs 'standard'" in result.stages[0].error
        assert server.stats.total == 0  # not fetched, not faked
    assert PartitionStore(tmp_path / "data").partitions("raw_short_selling") == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_realdata_replays_through_the_raw_assets(tmp_path, realdata_dir):
    """Half a year of the real replay (with its sparse 2016-10-14) through the stand-in and
    the raw assets, every row kept. The whole 1,237-session range runs in
    ``python -m bench stages --realdata`` (BENCHMARKS.md), which checks the same counts."""
    from atft_pipeline.sandbox.replay import read_replay

    tables = read_replay(realdata_dir)
    start, end = dt.date(2016, 7, 1), dt.date(2016, 12, 30)
    settings_today = ServerSettings(today=dt.date(2018, 11, 16), plan="premium")
    with serve_in_thread(create_app(tables, settings=settings_today)) as server, atft_test_instance() as inst:
        defs = _defs(tmp_path, server.base_url, start=start)
        assets = [CALENDAR_ASSET, "raw_daily_quotes", "raw_listed_info", "raw_topix"]
        result = materialize_range(defs, inst, assets, start, end, _store(tmp_path), progress=_quiet)
        assert result.success, [s.error for s in result.stages if not s.success]
    store = PartitionStore(tmp_path / "data")
    days = calendar.trading_days(start, end)
    assert len(days) == 123
    for asset in ("raw_daily_quotes", "raw_listed_info", "raw_topix"):
        assert store.partitions(asset) == [d.isoformat() for d in days], asset
    total = pl.scan_parquet(str(tmp_path / "data" / "raw_daily_quotes" / "*.parquet")).select(pl.len()).collect().item()
    bars = tables["equities/bars/daily"]
    assert total == bars.filter(pl.col("Date").is_between(start, end)).height
    sparse = store.read("raw_daily_quotes", "2016-10-14")
    assert 0 < sparse.height < 1000  # a real sparse day survives as-is
