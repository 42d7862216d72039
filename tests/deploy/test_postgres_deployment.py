"""The native deployment end to end on PostgreSQL: code server, webserver and daemon as three
processes (``assets.serve``), driven only through the webserver's GraphQL API.

A tiny sandbox market is built into ``ATFT_HOME`` first (in-process, throwaway instance), so
the deployment starts from stored data; then, through the deployment:

1. a 5-partition backfill of ``raw_short_selling`` plus its feature family (daemon: backfill
   and run queue), rewriting byte-identical files, and ``weekly_retrain`` (stats,
   ATFT-GAT-FAN, LightGBM, predictions, report; its steps in-process) launched beside it;
2. once both finished, 3 of those raw files are deleted; the recovery sensor (daemon:
   sensors) re-runs exactly those partitions of exactly that asset, restoring the same bytes
   (nothing else runs meanwhile, so the events after the deletion are the recovery's alone);
3. the backfill is COMPLETED, and weekly_retrain's outputs are where they belong.

Runs, events and materializations are checked in the Postgres tables themselves, the MLflow
run in its store. The sensor ticks every RECOVERY_INTERVAL_S seconds here (configured through
``orchestration.recovery_sensor_interval_s`` in the code location's config file; 300 s when
shipped), and the code location's sensor is checked to carry it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from assets.definitions import build_definitions
from assets.jobs import WEEKLY_RETRAIN_JOB
from atft_pipeline.names import (
    CALENDAR_ASSET,
    DATASET_ASSET,
    MODEL_ASSETS,
    STATS_ASSET,
    TARGETS_ASSET,
)
from atft_pipeline.stages.scope import config_path, resolve_scope
from assets.recovery import RECOVERY_SENSOR
from assets.runner import materialize_range
from assets.serve import Deployment, free_port, graphql
from atft_pipeline import calendar
from atft_pipeline.config import (
    DatasetConfig,
    OrchestrationSection,
    PipelineConfig,
    SplitSpec,
    dump_config,
)
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from atft_pipeline.settings import SANDBOX_API_KEY, Settings
from atft_pipeline.storage import PartitionStore
from tests.helpers import atft_test_instance

START, END = dt.date(2021, 1, 4), dt.date(2021, 5, 31)
RAW = "raw_short_selling"
RECOVERY_INTERVAL_S = 5
FAMILY = "short_selling"
LOCATION = {"repositoryLocationName": "atft_pipeline", "repositoryName": "__repository__"}
FINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}"""
RUN_STATUS = """
query($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { status } ... on Error { message } }
}
"""


def _poll(what: str, check, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value is not None:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _materializations(engine, since_id: int = 0) -> list[tuple[str, str | None, str]]:
    """(asset, partition, run_id) of every materialization event after ``since_id``."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT asset_key, partition, run_id FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND id > :since ORDER BY id"
            ),
            {"since": since_id},
        ).all()
    return [(json.loads(key)[0], partition, run_id) for key, partition, run_id in rows]


def _last_event_id(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT COALESCE(MAX(id), 0) FROM event_logs")).scalar()


def _runs(engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT run_id, status FROM runs")).all())


def _run_tags(engine, run_id: str) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT key, value FROM run_tags WHERE run_id = :id"), {"id": run_id}
        ).all()
    return dict(rows)


@pytest.mark.slow
@pytest.mark.xdist_group("postgres_deployment")
@pytest.mark.timeout(1800)
def test_backfill_sensor_recovery_and_retrain_through_the_deployment(
    tmp_path, monkeypatch, postgres_url
):
    market = generate_market(MarketConfig(seed=5, n_stocks=10, start=START, end=END))
    app = create_app(market.tables, settings=ServerSettings(), oracle=market.oracle)
    config = PipelineConfig(
        dataset=DatasetConfig(families=["price", FAMILY]),  # two families keep the build short
        splits=SplitSpec(warmup_days=20, val_fraction=0.2, test_fraction=0.2, max_train_days=40),
        # the recovery then waits seconds, not the shipped 300-s interval, for the next tick
        orchestration=OrchestrationSection(recovery_sensor_interval_s=RECOVERY_INTERVAL_S),
    )
    with serve_in_thread(app) as server:
        for name, value in {
            "ATFT_HOME": str(tmp_path),
            "ATFT_POSTGRES_URL": postgres_url,
            "JQUANTS_API_KEY": SANDBOX_API_KEY,
            "JQUANTS_BASE_URL": server.base_url,
            "JQUANTS_PLAN": "premium",
            "ATFT_START_DATE": START.isoformat(),
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        dump_config(config, config_path(settings))  # the code location reads it
        scope = resolve_scope(settings, config)
        family_asset = scope.catalog.family(FAMILY).asset
        store = PartitionStore(settings.data_root)

        # The stored dataset the deployment starts from (not recorded in its Postgres).
        with atft_test_instance() as scratch:
            built = materialize_range(
                build_definitions(settings, config=config), scratch,
                _dataset_assets(scope),
                START, END, store, progress=lambda _: None,
            )
        assert built.success, [(s.asset, s.error) for s in built.stages if not s.success]
        assert len(store.partitions(DATASET_ASSET)) == len(calendar.trading_days(START, END))

        sensor = build_definitions(settings).get_sensor_def(RECOVERY_SENSOR)  # from config.yaml
        assert sensor.minimum_interval_seconds == RECOVERY_INTERVAL_S
        days = [d.isoformat() for d in calendar.trading_days(START, END)][-25:-20]
        before = {(a, d): store.path(a, d).read_bytes() for a in (RAW, family_asset) for d in days}

        engine = create_engine(postgres_url)
        deployment = Deployment(settings, webserver_port=free_port())
        try:
            deployment.start(timeout=300)
            assert "dagster_webserver_version" in deployment_info(deployment)

            # 1. backfill: 5 partitions of the raw source and its feature family, and
            # weekly_retrain beside it (the backfill daemon only looks every 30 s; the two
            # touch different assets, and the backfill rewrites identical bytes).
            # Partitions per asset: exactly these five of each (a partitionNames backfill
            # would extend to every feature partition whose 270-day lookback reads them).
            window = {"range": {"start": days[0], "end": days[-1]}}
            launched = graphql(
                deployment.url,
                LAUNCH_BACKFILL,
                {"params": {"partitionsByAssets": [
                    {"assetKey": {"path": [RAW]}, "partitions": window},
                    {"assetKey": {"path": [family_asset]}, "partitions": window},
                ]}},
            )["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            backfill_id = launched["backfillId"]
            started = graphql(
                deployment.url,
                LAUNCH_RUN,
                # its steps in the run's own process: the backfill and recovery runs cover the
                # multiprocess executor, and six more step processes would only add start-ups
                {"params": {"selector": {**LOCATION, "jobName": WEEKLY_RETRAIN_JOB},
                            "runConfigData": {"execution": {"config": {"in_process": {}}}}}},
            )["launchRun"]
            assert started["__typename"] == "LaunchRunSuccess", started
            retrain_id = started["run"]["runId"]
            backfilled = _poll(
                "the backfill's runs",
                lambda: _backfill_materializations(engine, backfill_id, len(before)),
                timeout=600,
            )
            assert sorted((a, p) for a, p, _ in backfilled) == sorted(before), backfilled
            assert {(a, d): store.path(a, d).read_bytes() for a, d in before} == before
            status = _poll(
                "weekly_retrain",
                lambda: _final(graphql(deployment.url, RUN_STATUS, {"id": retrain_id})["runOrError"],
                               FINAL_RUN),
                timeout=900,
                interval=2,
            )
            assert status == "SUCCESS", deployment.log_tail("code")

            # 2. the recovery sensor re-runs exactly the deleted partitions of that asset
            lost = days[1:4]
            mark = _last_event_id(engine)
            store.delete(RAW, lost)
            recovered = _poll(
                "the recovery sensor's runs",
                lambda: _recovery_runs(engine, mark, len(lost)),
                timeout=900,
                interval=1,
            )
            assert sorted((a, p) for a, p, _ in recovered) == [(RAW, d) for d in lost], recovered
            runs = _runs(engine)
            for _, partition, run_id in recovered:
                assert runs[run_id] == "SUCCESS"
                tags = _run_tags(engine, run_id)
                assert tags["atft/reason"] == "missing-file-recovery"
                assert tags["dagster/partition"] == partition
                assert tags["dagster/sensor_name"] == RECOVERY_SENSOR
            for day in lost:
                assert store.path(RAW, day).read_bytes() == before[(RAW, day)], day

            # 3. the backfill ends COMPLETED (its daemon's next tick after the runs), and
            # weekly_retrain's outputs
            status = _poll(
                "the backfill's status",
                lambda: _final(graphql(deployment.url, BACKFILL_STATUS,
                                       {"id": backfill_id})["partitionBackfillOrError"],
                               FINAL_BACKFILL),
                timeout=600,
            )
            assert status in {"COMPLETED", "COMPLETED_SUCCESS"}, deployment.log_tail("daemon")
            assert _runs(engine)[retrain_id] == "SUCCESS"
            retrained = {a for a, _, r in _materializations(engine) if r == retrain_id}
            assert retrained == {STATS_ASSET, *MODEL_ASSETS}
            checkpoint = store.read("atft_model")["checkpoint"][0]
            assert (tmp_path / "models").exists() and checkpoint.endswith(".pt")
            assert store.path("evaluation_report").exists()
            assert list((tmp_path / "reports").glob("*/report.md"))
            # MLflow: the training run ended, carries the checkpoint and the report, and
            # its model is registered.
            from mlflow.tracking import MlflowClient

            mlflow = MlflowClient(settings.mlflow_uri)
            mlflow_run = mlflow.get_run(store.read("atft_model")["mlflow_run_id"][0])
            assert mlflow_run.info.status == "FINISHED"
            assert mlflow_run.info.run_name.startswith("atft_gat_fan-")
            assert mlflow_run.data.tags["dagster_run_id"] == retrain_id
            logged = {a.path for a in mlflow.list_artifacts(mlflow_run.info.run_id)}
            assert {"report.md", Path(checkpoint).name} <= logged, logged
            assert [v.run_id for v in mlflow.search_model_versions("name='atft_gat_fan'")] == [
                mlflow_run.info.run_id
            ]
            running = mlflow.search_runs(
                [e.experiment_id for e in mlflow.search_experiments()],
                "attributes.status = 'RUNNING'",
            )
            assert not running, [r.info.run_name for r in running]
            assert not deployment.exited(), deployment.exited()
        finally:
            groups = [p.pid for p in deployment.processes.values()]
            deployment.stop()
            engine.dispose()
        assert groups and not any(_group_alive(g) for g in groups)
        assert not list((deployment.state_dir / "pids").iterdir())


def _dataset_assets(scope) -> list[str]:
    """The calendar, the raw sources of the enabled families, targets, families, dataset."""
    sources = {s for n in scope.families for s in scope.catalog.family(n).sources}
    raw = [a for a in scope.raw_assets if a in sources | {"raw_daily_quotes", "raw_listed_info"}]
    return [CALENDAR_ASSET, *raw, *scope.feature_assets, TARGETS_ASSET, DATASET_ASSET]


def deployment_info(deployment: Deployment) -> dict:
    import httpx

    return httpx.get(f"{deployment.url}/server_info", timeout=10).json()


def _final(result: dict, final: set[str]) -> str | None:
    assert "message" not in result, result
    return result["status"] if result["status"] in final else None


def _backfill_materializations(engine, backfill_id: str, expected: int):
    """The materializations of the backfill's runs once they all succeeded and wrote
    ``expected`` partitions; None until then."""
    with engine.connect() as connection:
        statuses = dict(connection.execute(
            text("SELECT r.run_id, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                 "WHERE t.key = 'dagster/backfill' AND t.value = :id"),
            {"id": backfill_id},
        ).all())
    if not statuses:
        return None
    failed = {r: s for r, s in statuses.items() if s in FINAL_RUN - {"SUCCESS"}}
    assert not failed, failed
    if any(s != "SUCCESS" for s in statuses.values()):
        return None
    events = [e for e in _materializations(engine) if e[2] in statuses]
    return events if len(events) >= expected else None


def _recovery_runs(engine, since_id: int, expected: int):
    runs = _runs(engine)
    finished = [e for e in _materializations(engine, since_id) if runs.get(e[2]) == "SUCCESS"]
    return finished if len(finished) >= expected else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
