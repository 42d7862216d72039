"""Orchestration overhead per data stage: the stage's wall time (one Dagster run over the whole
range, exactly as ``atft run`` materializes it) beside the library compute inside it (the
stage function plus the partition writes), and their ratio (budget: ≤ 1.25).

``python -m bench stages``: the demo's sandbox market (300 stocks, 2021-01-04..2023-12-29)
through every data stage, raw to ``normalization_stats``, in a fresh ``ATFT_HOME``.
``--realdata DIR``: the real replay's price, master and TOPIX raw stages over its 1,237
sessions (2013-11-01..2018-11-16), checking every stored row against the replay.
``--stock-storage``: also the same stages on Dagster's stock SQLite event log (one engine and
statement per event), the baseline the batching event log replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from atft_pipeline.names import CALENDAR_ASSET, DATASET_ASSET, STATS_ASSET, TARGETS_ASSET

REALDATA_RANGE = (dt.date(2013, 11, 1), dt.date(2018, 11, 16))
REALDATA_ASSETS = ["raw_daily_quotes", "raw_listed_info", "raw_topix"]


@contextmanager
def _timed_compute() -> Iterator[dict[str, float]]:
    """Seconds spent in each stage's library function and in its partition writes, keyed by
    asset, while the block runs (the functions the asset bodies call, wrapped in place)."""
    from atft_pipeline.stages import dataset, features, raw
    from resources.storage import StorageResource

    spent: dict[str, float] = defaultdict(float)
    wrapped = [
        (raw, "raw_source", lambda args: args[2].asset),
        (raw, "trading_calendar", lambda args: CALENDAR_ASSET),
        (features, "feature_family", lambda args: args[1].asset),
        (features, "targets", lambda args: TARGETS_ASSET),
        (dataset, "ml_dataset", lambda args: DATASET_ASSET),
        (dataset, "normalization_stats", lambda args: STATS_ASSET),
    ]
    originals = [(module, name, getattr(module, name)) for module, name, _ in wrapped]

    def timer(function: Callable, asset_of: Callable) -> Callable:
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[asset_of(args)] += time.perf_counter() - started

        return timed

    write = StorageResource.write_output

    def timed_write(self, asset, keys, output):
        started = time.perf_counter()
        try:
            return write(self, asset, keys, output)
        finally:
            spent[asset] += time.perf_counter() - started

    for (module, name, asset_of), (_, _, function) in zip(wrapped, originals, strict=True):
        setattr(module, name, timer(function, asset_of))
    StorageResource.write_output = timed_write
    try:
        yield spent
    finally:
        for module, name, function in originals:
            setattr(module, name, function)
        StorageResource.write_output = write


def _run(settings, assets: list[str], start: dt.date, end: dt.date, stock_storage: bool) -> list[tuple]:
    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.instance import configure_dagster_process, ensure_dagster_home
    from assets.runner import StageLog, materialize_range
    from atft_pipeline.storage import PartitionStore

    configure_dagster_process()
    log = StageLog(settings.home / "logs" / "bench.log")  # Dagster's DEBUG lines, as atft run
    home = ensure_dagster_home(settings)
    if stock_storage:  # Dagster's own event log: the dagster.yaml without atft's entry
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    defs = build_definitions(settings)
    store = PartitionStore(settings.data_root)
    rows = []
    with DagsterInstance.from_config(str(home)) as instance, _timed_compute() as compute:
        for asset in assets:
            result = materialize_range(
                defs, instance, [asset], start, end, store, progress=lambda _: None, log=log
            )
            (stage,) = [s for s in result.stages if s.asset == asset]
            if not stage.success:
                raise SystemExit(f"{asset} failed: {stage.error}")
            rows.append((asset, stage.partitions, stage.seconds, compute.get(asset, 0.0)))
    return rows


def _print(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print(f"{'stage':<30} {'partitions':>10} {'stage s':>8} {'compute s':>9} {'ratio':>6}")
    for asset, partitions, seconds, compute in rows:
        ratio = f"{seconds / compute:6.2f}" if compute > 0 else "     -"
        print(f"{asset:<30} {partitions:>10} {seconds:8.1f} {compute:9.1f} {ratio}")
    data = [(s, c) for _, _, s, c in rows if c > 0]
    total_s, total_c = sum(s for s, _ in data), sum(c for _, c in data)
    print(f"{'total':<30} {'':>10} {total_s:8.1f} {total_c:9.1f} {total_s / total_c:6.2f}")


def _sandbox(home: Path, stock_storage: bool) -> list[tuple]:
    from atft_pipeline.jquants.endpoints import Plan
    from atft_pipeline.sandbox.embedded import sandbox_settings, serve_sandbox_market
    from atft_pipeline.settings import SANDBOX_END, SANDBOX_START, Settings
    from atft_pipeline.stages.scope import resolve_scope

    with serve_sandbox_market() as server:
        settings = sandbox_settings(Settings(home=home), server.base_url).model_copy(
            update={"plan": Plan.PREMIUM, "start_date": SANDBOX_START}
        )
        pipeline = resolve_scope(settings, None).pipeline_assets()
        assets = pipeline[: pipeline.index(STATS_ASSET) + 1]
        if stock_storage:
            assets = [CALENDAR_ASSET, "raw_daily_quotes", "features_price"]
        return _run(settings, assets, SANDBOX_START, SANDBOX_END, stock_storage)


def _realdata(home: Path, directory: Path, stock_storage: bool) -> list[tuple]:
    import polars as pl

    from atft_pipeline import calendar
    from atft_pipeline.jquants.sources import RAW_SOURCES
    from atft_pipeline.sandbox.replay import read_replay
    from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
    from atft_pipeline.settings import Settings
    from atft_pipeline.storage import PartitionStore

    tables = read_replay(directory)
    start, end = REALDATA_RANGE
    with serve_in_thread(create_app(tables, settings=ServerSettings(today=end, plan="premium"))) as server:
        settings = Settings(home=home, start_date=start, plan="premium", api_key="replay", base_url=server.base_url)
        assets = [CALENDAR_ASSET, *(REALDATA_ASSETS[:1] if stock_storage else REALDATA_ASSETS)]
        rows = _run(settings, assets, start, end, stock_storage)
    store = PartitionStore(settings.data_root)
    days = [d.isoformat() for d in calendar.trading_days(start, end)]
    for asset in assets[1:]:
        if store.partitions(asset) != days:
            raise SystemExit(f"{asset}: stored partitions differ from the {len(days)} sessions")
        if asset == "raw_listed_info":  # the master is served as of each day, not row for row
            continue
        stored = pl.scan_parquet(str(settings.data_root / asset / "*.parquet")).select(pl.len()).collect().item()
        served = tables[RAW_SOURCES[asset].endpoint.path].height
        if stored != served:
            raise SystemExit(f"{asset}: {stored} stored rows, the replay has {served}")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stages", description=__doc__)
    parser.add_argument("--realdata", type=Path, default=None, help="a replay directory")
    parser.add_argument("--stock-storage", action="store_true")
    args = parser.parse_args(argv)
    variants = [False, True] if args.stock_storage else [False]
    for stock in variants:
        with tempfile.TemporaryDirectory() as home:
            started = time.perf_counter()
            if args.realdata is not None:
                rows = _realdata(Path(home), args.realdata, stock)
            else:
                rows = _sandbox(Path(home), stock)
            title = "Dagster's stock SQLite event log" if stock else "atft's batching event log"
            _print(f"{title} ({time.perf_counter() - started:.0f}s in all)", rows)
    return 0
