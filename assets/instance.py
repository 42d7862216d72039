"""The persistent local Dagster instance under ``ATFT_HOME`` (sqlite storage).

``atft run`` / ``atft demo`` record their runs here, so ``atft ui`` shows them afterwards.
"""

from __future__ import annotations

from pathlib import Path

from atft_pipeline.settings import Settings
from atft_pipeline.storage import atomic_write_text

# At most this many J-Quants-calling steps run at once across all runs (pool "jquants").
JQUANTS_POOL_LIMIT = 2

_DAGSTER_YAML = f"""\
# Written by atft; edit freely (it is only created when missing).
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: {JQUANTS_POOL_LIMIT}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
"""


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
        atomic_write_text(config, _DAGSTER_YAML)  # concurrent starts never see half a file
    return home
