"""The batching SQLite event log records exactly what Dagster's own records: the same events,
partition states, asset records and planned/failed partitions, read back by Dagster's readers."""

from __future__ import annotations

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    EventRecordsFilter,
    Failure,
    MaterializeResult,
    asset,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.test_utils import instance_for_test
from dagster._serdes import deserialize_value
from sqlalchemy import sql as db

from assets.event_storage import BatchingSqliteEventLogStorage
from assets.instance import EVENT_BATCH_ENV
from tests.helpers import atft_test_instance

DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


@asset(partitions_def=DAYS, check_specs=[AssetCheckSpec("rows_ok", asset="daily_thing")])
def daily_thing(context):
    if "2024-02-10" in context.partition_keys:
        raise Failure("2024-02-10 is bad")
    return MaterializeResult(check_results=[AssetCheckResult(passed=len(context.partition_keys) > 20)])


DEFS = Definitions(assets=[daily_thing])


def _instance(batching: bool):
    """An instance on atft's batching event log, or on Dagster's own."""
    return atft_test_instance() if batching else instance_for_test()


def _materialize(instance: DagsterInstance, first: str, last: str) -> bool:
    job = DEFS.resolve_implicit_global_asset_job_def()
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False).success


def _state(instance: DagsterInstance) -> dict:
    key = AssetKey("daily_thing")
    storage = instance.event_log_storage

    def records(event_type):
        found = instance.get_event_records(EventRecordsFilter(event_type=event_type, asset_key=key), ascending=True)
        return [r.event_log_entry.dagster_event.partition for r in found]

    latest = instance.get_latest_materialization_event(key)
    with storage.index_connection() as conn:  # one planned row per partition of each run
        check_rows = conn.execute(
            db.select(
                AssetCheckExecutionsTable.c.partition,
                AssetCheckExecutionsTable.c.execution_status,
                AssetCheckExecutionsTable.c.evaluation_event,
                AssetCheckExecutionsTable.c.run_id,
            )
        ).fetchall()
    runs = {run_id: n for n, run_id in enumerate(dict.fromkeys(r[3] for r in check_rows))}
    check = storage.get_latest_asset_check_execution_by_key([AssetCheckKey(key, "rows_ok")])
    (record,) = instance.get_asset_records([key])
    return {
        "materialized": sorted(instance.get_materialized_partitions(key)),
        "materializations": records(DagsterEventType.ASSET_MATERIALIZATION),
        "planned": records(DagsterEventType.ASSET_MATERIALIZATION_PLANNED),
        "latest": latest.dagster_event.partition,
        "record_latest": record.asset_entry.last_materialization.dagster_event.partition,
        "check": [(c.status.value, c.event.dagster_event.event_specific_data.passed) for c in check.values()],
        "check_rows": sorted(
            (runs[run_id], partition or "", status, deserialize_value(event).dagster_event_type.value)
            for partition, status, event, run_id in check_rows
        ),
        "failed": sorted(
            storage.get_latest_asset_partition_materialization_attempts_without_materializations(key)
        ),
        "tags": sorted(
            (p, k) for p, tags in storage.get_latest_tags_by_partition(
                key, DagsterEventType.ASSET_MATERIALIZATION, ["dagster/data_version"]
            ).items() for k in tags
        ),
    }


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("batch", ["10000", "7"])
def test_batched_events_read_back_exactly_like_dagsters_own(monkeypatch, batch):
    monkeypatch.setenv(EVENT_BATCH_ENV, batch)
    states = {}
    for batching in (False, True):
        with _instance(batching) as instance:
            assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage) == batching
            assert _materialize(instance, "2024-01-01", "2024-01-31")
            assert not _materialize(instance, "2024-02-01", "2024-02-15")  # fails: nothing stored
            assert _materialize(instance, "2024-01-20", "2024-02-05")  # overlaps: re-materialized
            states[batching] = _state(instance)
    assert states[True] == states[False]
    state = states[True]
    assert state["materialized"][0] == "2024-01-01" and state["materialized"][-1] == "2024-02-05"
    assert len(state["materialized"]) == 36
    assert len(state["materializations"]) == 31 + 17
    assert len(state["planned"]) == 31 + 15 + 17
    assert state["failed"] == [f"2024-02-{d:02d}" for d in range(6, 16)]
    assert state["latest"] == state["record_latest"] == "2024-02-05"
    assert state["check"] == [("FAILED", False)]  # the last run covered 17 partitions
    kinds = [row[3] for row in state["check_rows"]]
    assert kinds.count("ASSET_CHECK_EVALUATION_PLANNED") == 31 + 15 + 17  # a row per partition
    assert kinds.count("ASSET_CHECK_EVALUATION") == 2  # the two runs that got to their check


def test_a_batch_is_one_insert_per_shard(monkeypatch):
    """The point of the class: a 40-partition run writes its 80 asset events in two batches
    (planned with the check's planned event beside them, then materialized), not one statement
    (and engine) each."""
    monkeypatch.setenv(EVENT_BATCH_ENV, "10000")
    with _instance(True) as instance:
        storage = instance.event_log_storage
        calls = []
        original = BatchingSqliteEventLogStorage._store_asset_events
        monkeypatch.setattr(
            BatchingSqliteEventLogStorage, "_store_asset_events",
            lambda self, events: calls.append(len(events)) or original(self, events),
        )
        assert _materialize(instance, "2024-01-01", "2024-02-09")
        assert sorted(calls) == [40, 40]
        assert len(storage._engines) == 2  # the run's shard and the index
