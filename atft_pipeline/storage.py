"""Partitioned Parquet storage: one file per (asset, trading day), written atomically.

Layout: ``<root>/<asset>/<YYYY-MM-DD>.parquet`` for partitioned assets and
``<root>/<asset>.parquet`` for unpartitioned ones. ``root`` is any UPath (local directory or
object storage). A write goes to a temporary sibling and is renamed into place, so a reader
never sees a half-written file and a crashed write leaves the previous file intact.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable, Sequence
import polars as pl
import pyarrow.parquet as pq
from upath import UPath

PARQUET_COMPRESSION = "zstd"
# Protocols polars scans natively (lazily, with predicate pushdown).
_POLARS_NATIVE_PROTOCOLS = frozenset({"", "file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


class StorageError(RuntimeError):
    """A stored partition is missing or unreadable; the message names asset and partition."""


def _key(partition: dt.date | str) -> str:
    return partition.isoformat() if isinstance(partition, dt.date) else str(partition)


class PartitionStore:
    def __init__(self, root: str | os.PathLike | UPath) -> None:
        self.root = UPath(root)

    def __repr__(self) -> str:
        return f"PartitionStore({str(self.root)!r})"

    def path(self, asset: str, partition: dt.date | str | None = None) -> UPath:
        if partition is None:
            return self.root / f"{asset}.parquet"
        return self.root / asset / f"{_key(partition)}.parquet"

    def write(self, asset: str, partition: dt.date | str | None, frame: pl.DataFrame) -> UPath:
        """Atomically write one partition (temp file + rename); returns the final path."""
        target = self.path(asset, partition)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            with tmp.open("wb") as fh:
                frame.write_parquet(fh, compression=PARQUET_COMPRESSION, statistics=True)
            if target.protocol in ("", "file", "local"):
                os.replace(tmp, target)  # atomic on POSIX
            else:
                tmp.rename(target)  # object stores: whole objects appear on close anyway
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        return target

    def exists(self, asset: str, partition: dt.date | str | None = None) -> bool:
        return self.path(asset, partition).exists()

    def is_readable(self, asset: str, partition: dt.date | str | None = None) -> bool:
        """True when the file exists and its Parquet footer and schema can be read."""
        path = self.path(asset, partition)
        if not path.exists():
            return False
        try:
            with path.open("rb") as fh:
                pq.read_schema(fh)
        except Exception:
            return False
        return True

    def partitions(self, asset: str) -> list[str]:
        """Partition keys with a stored file, ascending."""
        directory = self.root / asset
        if not directory.exists():
            return []
        return sorted(
            p.name.removesuffix(".parquet")
            for p in directory.iterdir()
            if p.name.endswith(".parquet") and not p.name.startswith(".")
        )

    def read(self, asset: str, partition: dt.date | str | None = None) -> pl.DataFrame:
        return self.scan(asset, [partition] if partition is not None else None).collect()

    def scan(self, asset: str, partitions: Sequence[dt.date | str] | None = None) -> pl.LazyFrame:
        """Lazily scan one unpartitioned file or the given partitions (in order), concatenated.

        A missing partition raises ``StorageError`` naming asset and partition, never an
        empty frame: an absent file means the partition was never materialized or was lost.
        """
        if partitions is None:
            paths = [self.path(asset)]
        else:
            paths = [self.path(asset, p) for p in partitions]
        missing = [p for p in paths if not p.exists()]
        if missing:
            names = ", ".join(p.name.removesuffix(".parquet") for p in missing[:10])
            more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
            raise StorageError(f"asset {asset!r}: no stored file for partition(s) {names}{more}")
        if not paths:
            raise StorageError(f"asset {asset!r}: no partitions requested")
        if self.root.protocol in _POLARS_NATIVE_PROTOCOLS:
            return pl.scan_parquet([str(p) for p in paths])
        # Other fsspec filesystems (memory://, ...) are read through their file objects.
        frames = []
        for p in paths:
            with p.open("rb") as fh:
                frames.append(pl.read_parquet(fh))
        return pl.concat(frames, how="vertical").lazy()

    def delete(self, asset: str, partitions: Iterable[dt.date | str]) -> None:
        for partition in partitions:
            path = self.path(asset, partition)
            if path.exists():
                path.unlink()


def lost_partitions(store: PartitionStore, asset: str, partition_keys: Iterable[str]) -> list[str]:
    """Of the partitions recorded as materialized, those whose file is missing or unreadable."""
    return sorted(k for k in partition_keys if not store.is_readable(asset, k))
