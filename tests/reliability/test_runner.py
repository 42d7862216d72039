"""The runner on a small two-stage pipeline: kill -9 and SIGTERM mid-stage, the home lock,
dependants of a failed stage skipped, quarantined partitions redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterRun, DagsterRunStatus, RunsFilter

from assets.runner import INTERRUPTED
from atft_pipeline import calendar
from atft_pipeline.storage import HomeInUseError, PartitionStore, home_lock, lost_partitions
from tests.reliability import toy_pipeline
from tests.reliability.cases import CONCURRENCY, KILLS, STORAGE
from tests.reliability.toy_pipeline import ASSETS, END, START, open_instance

REPO = Path(__file__).resolve().parents[2]
N_DAYS = len(calendar.trading_days(START, END))


def _control(home: Path, **control) -> None:
    (home / "control.json").write_text(json.dumps(control))


def _start(home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.toy_pipeline", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _wait_for(path: Path, process: subprocess.Popen, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        assert process.poll() is None, "the run ended before its step started"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.1)


def _result(stdout: str) -> dict:
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _runs(home: Path):
    with open_instance(home) as instance:
        runs = instance.get_runs(RunsFilter())
        slots = instance.event_log_storage.get_concurrency_run_ids()
    return runs, slots


@pytest.mark.slow
def test_after_kill_9_mid_stage_the_next_run_completes_without_manual_steps(tmp_path):
    assert KILLS[3].startswith("kill -9 of atft run")
    _control(tmp_path, sleep={"source": 120})
    first = _start(tmp_path)
    _wait_for(tmp_path / "started-source", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    runs, slots = _runs(tmp_path)
    (killed,) = runs
    assert killed.status is DagsterRunStatus.STARTED and killed.run_id in slots  # what leaked

    _control(tmp_path)
    second = subprocess.run(
        [sys.executable, "-m", "tests.reliability.toy_pipeline", str(tmp_path)], capture_output=True,
        text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=240,
    )
    assert second.returncode == 0, second.stdout[-3000:]
    assert "finalized 1 abandoned run(s)" in second.stdout
    runs, slots = _runs(tmp_path)
    assert {r.run_id: r.status for r in runs}[killed.run_id] is DagsterRunStatus.FAILURE
    assert all(r.status is DagsterRunStatus.SUCCESS for r in runs if r.run_id != killed.run_id)
    assert not slots
    store = PartitionStore(tmp_path / "data")
    for asset in ASSETS:
        assert len(store.partitions(asset)) == N_DAYS
        assert lost_partitions(store, asset, store.partitions(asset)) == []


@pytest.mark.slow
def test_sigterm_stops_the_whole_run_and_finalizes_its_run_state(tmp_path):
    assert KILLS[4].startswith("SIGTERM")
    _control(tmp_path, sleep={"source": 120})
    process = _start(tmp_path)
    _wait_for(tmp_path / "started-source", process)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=90)
    result = _result(stdout)
    assert process.returncode == 1 and result["interrupted"]
    assert [(s["asset"], s["error"]) for s in result["stages"]] == [("source", INTERRUPTED), ("derived", INTERRUPTED)]
    assert not (tmp_path / "started-derived").exists()  # the next stage never started
    runs, slots = _runs(tmp_path)
    assert [r.status for r in runs] in ([DagsterRunStatus.FAILURE], [DagsterRunStatus.CANCELED])
    assert not slots


@pytest.mark.slow
def test_failed_stage_skips_its_dependants_and_a_quarantined_partition_is_redone(tmp_path):
    _control(tmp_path, fail=["source"])
    failed = toy_pipeline.run(tmp_path)
    assert not failed.success
    source, derived = failed.stages
    assert not source.success and "failing as the control file asks" in source.error
    assert derived.skipped and derived.error == "skipped: upstream source (failed)"
    assert not (tmp_path / "started-derived").exists()

    _control(tmp_path)
    done = toy_pipeline.run(tmp_path)
    assert done.success and [s.partitions for s in done.stages] == [N_DAYS, N_DAYS]

    # quarantine = not done, for the runner and the recovery sensor (lost_partitions)
    assert STORAGE[3].startswith("a quarantined partition")
    store = PartitionStore(tmp_path / "data")
    day = store.partitions("source")[2]
    store.quarantine("source", day, None, "planted: blocked data")
    with open_instance(tmp_path) as instance:
        recorded = instance.get_materialized_partitions(AssetKey("source"))
    assert lost_partitions(store, "source", recorded) == [day]
    again = toy_pipeline.run(tmp_path)
    assert again.success and again.stages[0].partitions == 1
    assert store.quarantined("source") == {} and lost_partitions(store, "source", recorded) == []


@pytest.mark.slow
def test_a_second_run_on_the_same_home_is_refused_with_a_clear_message(tmp_path):
    assert CONCURRENCY[0].startswith("a second atft run")
    with open_instance(tmp_path) as instance, home_lock(instance.root_directory):
        with pytest.raises(HomeInUseError, match=rf"{tmp_path}.*in use by another atft process \(pid {os.getpid()}\)"):
            toy_pipeline.run(tmp_path)
    assert not (tmp_path / "started-source").exists()
    assert toy_pipeline.run(tmp_path).success  # released with the holder


@pytest.mark.slow
def test_a_slot_held_by_a_live_run_fails_the_stage_after_a_bounded_wait(tmp_path):
    assert CONCURRENCY[2].startswith("a pool slot held by another live run")
    with open_instance(tmp_path) as instance:
        live = DagsterRun(job_name="ui_launched", run_id="0f0f0f0f-live", status=DagsterRunStatus.STARTED)
        instance.add_run(live)
        instance.event_log_storage.initialize_concurrency_limit_to_default("jquants")
        instance.event_log_storage.claim_concurrency_slot("jquants", live.run_id, "other_step")
    result = toy_pipeline.run(tmp_path, pool_wait_s=1.0)
    source, derived = result.stages
    assert not source.success and "pool 'jquants' had no free slot for 1 s" in source.error
    assert "0f0f0f0f-live" in source.error and derived.skipped
    assert not (tmp_path / "started-source").exists()
    runs, slots = _runs(tmp_path)
    assert [r.status for r in runs] == [DagsterRunStatus.STARTED] and slots == {live.run_id}  # not ours: untouched
