"""SQLite event log storage that writes a backfill's per-partition events in batches.

A single-run backfill over N partitions records 2N asset events (one materialization planned
and one materialization per partition; each partition stays individually visible and
re-materializable in the UI). Dagster's ``SqliteEventLogStorage`` stores each one on its own:
a new SQLAlchemy engine per statement (so every INSERT is compiled afresh), two databases
(run shard and index), a schema inspection per event. That bookkeeping took ~14 ms per event,
most of a feature family's stage time.

This subclass keeps the storage format and files exactly as Dagster's (the UI, the daemon and
``dagster`` itself read them unchanged) and changes only how writes are issued:

- one engine per shard, kept for the process (its compiled-statement cache then works);
- ``store_event_batch``: the events Dagster groups in a batch (a step's per-partition
  materializations, a run's per-partition planned events; see ``DAGSTER_EVENT_BATCH_SIZE``)
  are inserted with one statement per shard in one transaction each;
- a partitioned check's planned rows (one per partition) share one serialized event.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Events whose storage is an insert into the run shard and its mirror in the index shard
# (with asset event tags and the asset's latest-event row): these can be written together.
_BATCHED_EVENT_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)
# How many events Dagster buffers before handing them to ``store_event_batch``; a step's
# events are handed over at its end anyway. Set in the environment of every Dagster process
# that writes to the instance (``configure_dagster_process``).
EVENT_BATCH_SIZE = 10_000


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with cached engines and batched asset-event writes."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: dict[str, Engine] = {}
        self._tables: set[str] = set()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is None:
            # NullPool as in Dagster's: no connection outlives its statement, so several
            # processes (daemon, webserver, runs) keep sharing the files safely.
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            self._engines[shard] = engine
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        # Tables are only ever added (by migrations): a table once seen stays.
        if table_name in self._tables:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables.add(table_name)
        return found

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # A run's planned events mix per-partition asset events with a few check events:
        # the asset events of one run go in together, the rest one by one as Dagster does.
        batch = [event for event in events if _batchable(event)]
        if len(batch) < 2 or len({event.run_id for event in batch}) != 1:
            batch = []
        in_batch = {id(event) for event in batch}
        for event in events:
            if id(event) not in in_batch:
                self.store_event(event)
        if batch:
            self._store_asset_events(batch)

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        insert = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )
        with self.index_transaction() as conn:
            event_ids = [row[0] for row in conn.execute(insert, rows)]
            self._store_asset_event_tags(conn, events, event_ids)
            # The asset row keeps the latest event of each kind: the batch's last one per asset.
            last = {
                (event.dagster_event.asset_key, event.dagster_event_type): (event, event_id)
                for event, event_id in zip(events, event_ids, strict=True)
            }
            for event, event_id in last.values():
                self._store_asset_event(conn, event, event_id)


    def _store_asset_check_evaluation_planned(
        self, event: EventLogEntry, event_id: int | None
    ) -> None:
        # Dagster's version inserts one row per partition of the check's subset and serializes
        # the same event again for each (a 735-partition raw stage: 735 serializations of an
        # event that carries the whole subset, about half a second per check). The rows differ
        # only in their partition, so the event is serialized once.
        planned = event.dagster_event.event_specific_data
        subset = planned.partitions_subset
        keys = subset.get_partition_keys() if subset else [None]
        shared = dict(
            asset_key=planned.asset_key.to_string(),
            check_name=planned.check_name,
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event=serialize_value(event),
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        with self.index_connection() as conn:
            rows = [{**shared, "partition": key} for key in keys]
            conn.execute(AssetCheckExecutionsTable.insert().values(rows))


def _batchable(event: EventLogEntry) -> bool:
    return (
        event.is_dagster_event
        and event.dagster_event_type in _BATCHED_EVENT_TYPES
        and event.dagster_event.asset_key is not None
    )
