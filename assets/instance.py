"""The persistent local Dagster instance under ``ATFT_HOME`` (sqlite storage).

``atft run`` / ``atft demo`` record their runs here, so ``atft ui`` shows them afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from assets.event_storage import EVENT_BATCH_SIZE, BatchingSqliteEventLogStorage
from atft_pipeline.settings import Settings
from atft_pipeline.storage import atomic_write_text

# At most this many J-Quants-calling steps run at once across all runs (pool "jquants").
JQUANTS_POOL_LIMIT = 2

# Dagster's switch for handing a step's per-partition events to the storage as one batch
# (read from the environment by every Dagster process that writes events).
EVENT_BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"

_DAGSTER_YAML = """\
# Written by atft; edit freely (it is only created when missing).
# Dagster's SQLite event log, written in batches (assets/event_storage.py; same files).
{event_log_storage}
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: {pool_limit}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
"""


def event_log_storage_config(dagster_home: Path) -> dict[str, object]:
    """The ``event_log_storage`` entry of an instance's ``dagster.yaml`` under ``dagster_home``:
    Dagster's SQLite files at their default place, written by ``BatchingSqliteEventLogStorage``."""
    return {
        "module": BatchingSqliteEventLogStorage.__module__,
        "class": BatchingSqliteEventLogStorage.__name__,
        "config": {"base_dir": str(dagster_home / "history" / "runs")},
    }


def dagster_environment() -> dict[str, str]:
    """What the environment of a Dagster process writing to an atft instance must hold."""
    return {EVENT_BATCH_ENV: os.environ.get(EVENT_BATCH_ENV, str(EVENT_BATCH_SIZE))}


def configure_dagster_process() -> None:
    """Set up this process to write Dagster events the fast way: batched
    (``dagster_environment``) and without an fsync per SQLite commit."""
    os.environ.update(dagster_environment())
    relax_sqlite_durability()


def relax_sqlite_durability() -> None:
    """Let this process's SQLite connections commit without an fsync each (``synchronous=OFF``).

    Dagster's SQLite storage opens a connection and commits for every event; a backfill writes
    one materialization event per partition, so thousands of fsyncs dominated ``atft run``.
    Without them a crash can lose the last events (Dagster then re-runs those partitions), but
    cannot corrupt the database. Deployments use Postgres (docker-compose.yml) instead.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if event.contains(Engine, "connect", _sqlite_no_fsync):
        return
    event.listen(Engine, "connect", _sqlite_no_fsync)


def _sqlite_no_fsync(dbapi_connection, _record) -> None:
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=OFF")


def ensure_dagster_home(settings: Settings) -> Path:
    """Create ``<ATFT_HOME>/dagster`` with a ``dagster.yaml``; returns the directory (what
    ``DAGSTER_HOME`` must name for the Dagster processes that share this instance)."""
    home = settings.dagster_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        storage = yaml.safe_dump({"event_log_storage": event_log_storage_config(home)}, sort_keys=False)
        text = _DAGSTER_YAML.format(event_log_storage=storage.strip(), pool_limit=JQUANTS_POOL_LIMIT)
        atomic_write_text(config, text)  # concurrent starts never see half a file
    return home
