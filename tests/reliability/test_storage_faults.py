"""Stored files: damage inside a file is found and named, a killed writer never leaves a file
that counts as good, disk full keeps the previous file, concurrent writers never collide."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

import atft_pipeline.storage as storage
from atft_pipeline.storage import PartitionStore, StorageError, atomic_write_text, lost_partitions
from tests.reliability.cases import CONCURRENCY, KILLS, STORAGE

REPO = Path(__file__).resolve().parents[2]
KEYS = [f"2023-02-{d:02d}" for d in (1, 2, 3, 6, 7)]


def _frame(i: int, n: int = 2000) -> pl.DataFrame:
    return pl.DataFrame({"i": [i] * n, "v": list(range(n)), "w": [float(i) * 0.5] * n})


def _filled(tmp_path) -> PartitionStore:
    store = PartitionStore(tmp_path)
    for i, key in enumerate(KEYS):
        store.write("raw_daily_quotes", key, _frame(i))
    return store


@pytest.mark.parametrize("damage", ["flip", "truncate"], ids=STORAGE[:2])
def test_damaged_file_is_found_named_and_repaired(damage, tmp_path):
    store = _filled(tmp_path)
    path = store.path("raw_daily_quotes", KEYS[2])
    data = bytearray(path.read_bytes())
    if damage == "flip":
        middle = len(data) // 2  # inside the data pages: the footer stays intact
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))

    assert lost_partitions(store, "raw_daily_quotes", KEYS) == [KEYS[2]]  # not done: redone
    with pytest.raises(StorageError, match=rf"raw_daily_quotes.*{KEYS[2]}.*{path.name}"):
        store.scan("raw_daily_quotes", KEYS)
    store.write("raw_daily_quotes", KEYS[2], _frame(2))  # the rerun
    assert lost_partitions(store, "raw_daily_quotes", KEYS) == []
    assert store.scan("raw_daily_quotes", KEYS).collect()["i"].unique().sort().to_list() == [0, 1, 2, 3, 4]


def test_disk_full_during_a_write_keeps_the_previous_file(tmp_path, monkeypatch):
    assert STORAGE[2].startswith("disk full")
    store = _filled(tmp_path)
    real_write = storage.atomic_write_bytes

    def full(path, data):
        if str(path).endswith(".parquet"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(storage, "atomic_write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        store.write("raw_daily_quotes", KEYS[0], _frame(99))
    monkeypatch.undo()
    assert lost_partitions(store, "raw_daily_quotes", KEYS) == []  # nothing lost
    assert store.read("raw_daily_quotes", KEYS[0])["i"][0] == 0
    assert not [p for p in (tmp_path / "raw_daily_quotes").iterdir() if p.name.endswith(".tmp")]


WRITER = """
import itertools, json, sys
import polars as pl
from atft_pipeline.storage import PartitionStore, atomic_write_text
root, asset = sys.argv[1], sys.argv[2]
store = PartitionStore(root)
keys = %r
for i in itertools.count():
    if asset == "final_metrics":
        atomic_write_text(root + "/final_metrics.json", json.dumps({"round": i, "val": [0.5] * 50000}))
    else:
        store.write(asset, keys[i %% len(keys)], pl.DataFrame({"i": [i] * 200000, "v": range(200000)}))
    if i == 2:
        print("writing", flush=True)
""" % KEYS


@pytest.mark.parametrize("asset", ["raw_daily_quotes", "features_price", "final_metrics"], ids=KILLS[:3])
def test_kill_9_while_writing_never_leaves_a_file_that_counts_as_good(asset, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), asset], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    if asset == "final_metrics":
        assert json.loads((tmp_path / "final_metrics.json").read_text())["round"] >= 2
        return
    store = PartitionStore(tmp_path)
    stored = store.partitions(asset)
    assert stored and set(stored) <= set(KEYS)
    # every stored file either verifies or is reported not done (never read as good data)
    for key in stored:
        problem = store.problem(asset, key)
        if problem is None:
            assert store.read(asset, key).height == 200000
        else:
            assert "does not match its recorded SHA-256" in problem
    for key in lost_partitions(store, asset, stored):  # the next run redoes exactly these
        store.write(asset, key, pl.DataFrame({"i": [0], "v": [0]}))
    assert lost_partitions(store, asset, stored) == []


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    assert CONCURRENCY[1].startswith("concurrent writers")
    target = tmp_path / "dagster.yaml"
    texts = [f"writer: {n}\n" + "x" * 100000 for n in range(8)]
    errors: list[BaseException] = []

    def write(text):
        try:
            for _ in range(10):
                atomic_write_text(target, text)
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert target.read_text() in texts  # one whole text, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["dagster.yaml"]  # no temp left behind
