"""A two-stage partitioned pipeline (``source`` -> ``derived``) on the real runner, for the
kill, signal, lock and skip cases; run as ``python -m tests.reliability.toy_pipeline HOME``.

``HOME/control.json`` steers it: ``{"fail": [asset...], "sleep": {asset: seconds}}``. An asset
touches ``HOME/started-<asset>`` when its step begins.
"""


import datetime as dt
import json
import sys
import time
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    Failure,
    MaterializeResult,
    asset,
)

from assets.partitions import trading_day_partitions
from assets.runner import RangeResult, materialize_range
from atft_pipeline.storage import PartitionStore, atomic_write_text
from resources.storage import StorageResource

START, END = dt.date(2023, 2, 1), dt.date(2023, 2, 7)
ASSETS = ["source", "derived"]
# One slot: a slot leaked by a killed run would block every later run of the pool.
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""


def _steer(home: Path, name: str) -> None:
    (home / f"started-{name}").touch()
    control = json.loads((home / "control.json").read_text()) if (home / "control.json").exists() else {}
    deadline = time.monotonic() + control.get("sleep", {}).get(name, 0)
    while time.monotonic() < deadline:
        time.sleep(0.05)
    if name in control.get("fail", []):
        raise Failure(f"{name}: failing as the control file asks")


def build_defs(home: Path) -> Definitions:
    partitions = trading_day_partitions(dt.date(2023, 1, 4))

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run(), pool="jquants")
    def source(context: AssetExecutionContext, storage: StorageResource):
        _steer(home, "source")
        frames = {k: pl.DataFrame({"day": [k], "x": [1.0]}) for k in context.partition_keys}
        written = storage.write_output("source", context.partition_keys, frames)
        return MaterializeResult(metadata={k: str(v) for k, v in written.items()})

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run(), deps=[source])
    def derived(context: AssetExecutionContext, storage: StorageResource):
        _steer(home, "derived")
        rows = storage.store().scan("source", context.partition_keys).collect()
        frames = {k: rows.filter(pl.col("day") == k).with_columns(y=pl.col("x") * 2) for k in context.partition_keys}
        written = storage.write_output("derived", context.partition_keys, frames)
        return MaterializeResult(metadata={k: str(v) for k, v in written.items()})

    storage = StorageResource(root=str(home / "data"))
    return Definitions(assets=[source, derived], resources={"storage": storage})


def open_instance(home: Path) -> DagsterInstance:
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        atomic_write_text(dagster_home / "dagster.yaml", DAGSTER_YAML)
    return DagsterInstance.from_config(str(dagster_home))


def run(home: Path, **options) -> RangeResult:
    with open_instance(home) as instance:
        return materialize_range(
            build_defs(home), instance, ASSETS, START, END, PartitionStore(home / "data"), progress=print,
            **options,
        )


if __name__ == "__main__":
    result = run(Path(sys.argv[1]))
    summary = {
        "interrupted": result.interrupted,
        "stages": [
            {"asset": s.asset, "success": s.success, "skipped": s.skipped, "error": s.error}
            for s in result.stages
        ],
    }
    print("RESULT " + json.dumps(summary), flush=True)
    sys.exit(0 if result.success else 1)
