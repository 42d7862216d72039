from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from atft_pipeline.storage import PartitionStore, StorageError, lost_partitions


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"Date": [dt.date(2024, 1, 4)] * n, "x": list(range(n))})


def test_write_then_scan_round_trip(tmp_path):
    store = PartitionStore(tmp_path)
    store.write("raw_a", "2024-01-04", _frame(3))
    store.write("raw_a", dt.date(2024, 1, 5), _frame(2))
    assert store.partitions("raw_a") == ["2024-01-04", "2024-01-05"]
    assert (tmp_path / "raw_a" / "2024-01-04.parquet").exists()
    lazy = store.scan("raw_a", ["2024-01-04", "2024-01-05"])
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect()["x"].to_list() == [0, 1, 2, 0, 1]


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    store = PartitionStore(tmp_path)
    store.write("raw_a", "2024-01-04", _frame(3))

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write("raw_a", "2024-01-04", _frame(10))
    monkeypatch.undo()
    assert store.read("raw_a", "2024-01-04").height == 3
    assert [p.name for p in (tmp_path / "raw_a").iterdir()] == ["2024-01-04.parquet"]


def test_missing_partition_error_names_asset_and_partition(tmp_path):
    store = PartitionStore(tmp_path)
    store.write("raw_a", "2024-01-04", _frame(1))
    with pytest.raises(StorageError, match=r"raw_a.*2024-01-05"):
        store.scan("raw_a", ["2024-01-04", "2024-01-05"])


def test_lost_partitions_finds_missing_and_corrupt_files(tmp_path):
    store = PartitionStore(tmp_path)
    for day in ("2024-01-04", "2024-01-05", "2024-01-09"):
        store.write("raw_a", day, _frame(2))
    store.path("raw_a", "2024-01-05").unlink()
    store.path("raw_a", "2024-01-09").write_bytes(b"not parquet")
    assert lost_partitions(store, "raw_a", ["2024-01-04", "2024-01-05", "2024-01-09"]) == [
        "2024-01-05",
        "2024-01-09",
    ]


def test_object_storage_roots_work(tmp_path):
    store = PartitionStore("memory:///atft-test")
    store.write("raw_a", "2024-01-04", _frame(4))
    assert store.partitions("raw_a") == ["2024-01-04"]
    assert store.read("raw_a", "2024-01-04").height == 4
