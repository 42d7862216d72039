"""Partitioned Parquet storage: one file per (asset, trading day), written atomically.

Layout: ``<root>/<asset>/<YYYY-MM-DD>.parquet`` for partitioned assets and
``<root>/<asset>.parquet`` for unpartitioned ones. ``root`` is any UPath (local directory or
object storage). A write goes to a temporary sibling with a unique name and is renamed into
place, so a reader never sees a half-written file and a crashed write leaves the previous file
intact.

Every write also records the file's SHA-256 under ``<root>/_checksums/``; reads and the
"done" test compare against it, so a file damaged inside (footer intact) is found, named and
re-materialized instead of failing deep inside Parquet decoding. A partition whose new data
failed a blocking check is kept under ``<root>/_quarantine/`` with the reason; it is never
read by a dependant and never counts as done until a later write replaces it.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from upath import UPath

from atft_pipeline.errors import UsageError

PARQUET_COMPRESSION = "zstd"
# Protocols polars scans natively (lazily, with predicate pushdown).
_POLARS_NATIVE_PROTOCOLS = frozenset({"", "file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


CHECKSUM_DIR = "_checksums"
QUARANTINE_DIR = "_quarantine"
_READ_CHUNK = 1 << 20


class StorageError(RuntimeError):
    """A stored partition is missing or unreadable; the message names asset and partition."""


class HomeInUseError(UsageError, RuntimeError):
    """Another process holds the lock on this ``ATFT_HOME``."""


def atomic_write_bytes(path: os.PathLike | UPath, data: bytes) -> None:
    """Write ``data`` to ``path`` through a uniquely named temporary sibling and a rename.

    A reader sees the old or the new content, never a mix; concurrent writers never share a
    temporary file; a crash leaves the previous content (and at most a hidden ``.tmp``).
    """
    target = UPath(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
        if target.protocol in ("", "file", "local"):
            os.replace(tmp, target)  # atomic on POSIX
        else:
            tmp.rename(target)  # object stores: whole objects appear on close anyway
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def atomic_write_text(path: os.PathLike | UPath, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sha256(path: UPath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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

    def _checksum_path(self, asset: str, partition: dt.date | str | None) -> UPath:
        name = f"{asset}.sha256" if partition is None else f"{asset}/{_key(partition)}.sha256"
        return self.root / CHECKSUM_DIR / name

    def _quarantine_base(self, asset: str, partition: dt.date | str | None) -> UPath:
        return self.root / QUARANTINE_DIR / (asset if partition is None else f"{asset}/{_key(partition)}")

    def write(self, asset: str, partition: dt.date | str | None, frame: pl.DataFrame) -> UPath:
        """Atomically write one partition (temp file + rename); returns the final path.

        The checksum is recorded before the rename: a crash in between leaves a file that no
        longer matches its checksum, which counts as lost (re-materialized), never as good; a
        failed write (disk full) puts the previous checksum back.
        A successful write lifts any quarantine of the partition.
        """
        target = self.path(asset, partition)
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression=PARQUET_COMPRESSION, statistics=True)
        data = buffer.getvalue()
        checksum = self._checksum_path(asset, partition)
        previous = checksum.read_text() if checksum.exists() else None
        atomic_write_text(checksum, hashlib.sha256(data).hexdigest())
        try:
            atomic_write_bytes(target, data)
        except BaseException:
            # the previous file is still in place (disk full, ...): so is its checksum
            if previous is not None:
                atomic_write_text(checksum, previous)
            elif checksum.exists():
                checksum.unlink()
            raise
        self._release(asset, partition)
        return target

    def exists(self, asset: str, partition: dt.date | str | None = None) -> bool:
        return self.path(asset, partition).exists()

    def problem(self, asset: str, partition: dt.date | str | None = None) -> str | None:
        """Why the partition cannot be used (missing, damaged, quarantined); None when it can.

        Content is checked against the checksum recorded at write time; a file written without
        one (before checksums existed) is checked for a readable Parquet footer and schema.
        """
        reason = self.quarantine_reason(asset, partition)
        if reason is not None:
            return f"quarantined: {reason}"
        path = self.path(asset, partition)
        if not path.exists():
            return "no stored file"
        checksum = self._checksum_path(asset, partition)
        try:
            if checksum.exists():
                if _sha256(path) != checksum.read_text().strip():
                    return f"file {path} does not match its recorded SHA-256 (damaged)"
                return None
            with path.open("rb") as fh:
                pq.read_schema(fh)
        except Exception as exc:  # any unreadable file is a damaged one
            return f"file {path} is unreadable: {type(exc).__name__}: {exc}"
        return None

    def is_readable(self, asset: str, partition: dt.date | str | None = None) -> bool:
        """True when the file exists, is not quarantined and its content verifies."""
        return self.problem(asset, partition) is None

    def quarantine(
        self, asset: str, partition: dt.date | str | None, frame: pl.DataFrame | None, reason: str
    ) -> UPath:
        """Keep rejected data (if any) and the reason aside; the partition stops counting as done.

        A file already stored for the partition stays where it is (no stored data is ever
        lost), but no reader gets it while the partition is quarantined.
        """
        base = self._quarantine_base(asset, partition)
        if frame is not None:
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression=PARQUET_COMPRESSION)
            atomic_write_bytes(base.parent / f"{base.name}.parquet", buffer.getvalue())
        record = {"asset": asset, "partition": None if partition is None else _key(partition), "reason": reason}
        atomic_write_text(base.parent / f"{base.name}.json", json.dumps(record, sort_keys=True))
        return base

    def quarantine_reason(self, asset: str, partition: dt.date | str | None = None) -> str | None:
        record = self._quarantine_base(asset, partition)
        record = record.parent / f"{record.name}.json"
        if not record.exists():
            return None
        return json.loads(record.read_text())["reason"]

    def quarantined(self, asset: str) -> dict[str, str]:
        """Quarantined partition keys of ``asset`` -> reason, ascending."""
        directory = self.root / QUARANTINE_DIR / asset
        if not directory.exists():
            return {}
        keys = sorted(p.name.removesuffix(".json") for p in directory.iterdir() if p.name.endswith(".json"))
        return {k: reason for k in keys if (reason := self.quarantine_reason(asset, k)) is not None}

    def _release(self, asset: str, partition: dt.date | str | None) -> None:
        base = self._quarantine_base(asset, partition)
        for suffix in (".json", ".parquet"):
            path = base.parent / f"{base.name}{suffix}"
            if path.exists():
                path.unlink()

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
        if not paths:
            raise StorageError(f"asset {asset!r}: no partitions requested")
        keys = [None] if partitions is None else list(partitions)
        problems = {_key(k) if k is not None else asset: p for k in keys if (p := self.problem(asset, k))}
        if problems:
            shown = "; ".join(f"{k}: {p}" for k, p in list(problems.items())[:10])
            more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
            raise StorageError(f"asset {asset!r}: unusable partition(s) {shown}{more}")
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
            for path in (self.path(asset, partition), self._checksum_path(asset, partition)):
                if path.exists():
                    path.unlink()


def lost_partitions(store: PartitionStore, asset: str, partition_keys: Iterable[str]) -> list[str]:
    """Of the partitions recorded as materialized, those that are not done: the file is
    missing, damaged (content differs from its checksum) or the partition is quarantined."""
    return sorted(k for k in partition_keys if not store.is_readable(asset, k))


@contextmanager
def home_lock(directory: os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (an ``ATFT_HOME``) for the ``with`` block.

    The lock is an ``flock`` on ``<directory>/.atft.lock``: the kernel drops it when the holder
    exits in any way (``kill -9`` included), so a dead holder never blocks the next run.
    """
    path = Path(directory) / ".atft.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise HomeInUseError(
                f"{directory} is in use by another atft process (pid {holder}); wait for it to "
                "finish or point ATFT_HOME elsewhere"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
