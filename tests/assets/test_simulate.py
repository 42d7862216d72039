"""Nights run as the schedules request them, against the stand-in's clock, add up to a one-shot
backfill fetched after the last night (``atft simulate``; docs/nightly.md)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from dagster import DagsterInstance

from assets.definitions import build_definitions
from assets.jobs import STATEMENTS_CATCHUP_JOB, previous_session_partition
from assets.partitions import TOKYO
from assets.simulate import schedule_ticks, simulate_nights
from atft_pipeline.nightly.compare import frame_difference
from atft_pipeline.config import load_config
from atft_pipeline.errors import UsageError
from atft_pipeline.settings import Settings
from atft_pipeline.stages.scope import resolve_scope
from atft_pipeline.storage import PartitionStore
from tests.helpers import REPO_ROOT


def test_catchup_schedule_refetches_the_previous_session_before_the_evening(tmp_path):
    defs = build_definitions(Settings(home=tmp_path, start_date=dt.date(2024, 1, 4)))
    repository = defs.get_repository_def()
    schedule = repository.get_schedule_def("statements_catchup_schedule")
    assert schedule.job_name == STATEMENTS_CATCHUP_JOB
    selected = repository.get_job(STATEMENTS_CATCHUP_JOB).asset_layer.executable_asset_keys
    assert {k.to_user_string() for k in selected} == {"raw_statements"}
    # Tuesday 2024-05-07 04:45, after Golden Week: the previous session is Thursday 05-02.
    assert previous_session_partition(dt.datetime(2024, 5, 7, 4, 45, tzinfo=TOKYO)) == "2024-05-02"


def test_ticks_follow_the_schedules_crons_in_tokyo_time(tmp_path):
    defs = build_definitions(Settings(home=tmp_path, start_date=dt.date(2024, 1, 4)))
    ticks = schedule_ticks(defs, dt.datetime(2024, 5, 10, 12), dt.datetime(2024, 5, 11, 12))  # Fri night
    assert [(t.strftime("%a %H:%M"), s.name) for t, s in ticks] == [
        ("Fri 19:30", "nightly_update_schedule"),
        ("Fri 19:45", "targets_refresh_schedule"),
        ("Sat 04:30", "options_morning_schedule"),
        ("Sat 04:45", "statements_catchup_schedule"),
        ("Sat 09:00", "weekly_retrain_schedule"),
    ]


def test_frame_difference_is_exact_for_keys_and_relative_for_floats():
    base = pl.DataFrame({"code": ["A", "B"], "n": [1, 2], "x": [1.0, float("nan")], "y": [None, 2e-300]})
    assert frame_difference(base, base.reverse()) is None  # row order does not matter
    assert frame_difference(base, base.with_columns(pl.col("x") * (1 + 5e-10))) is None
    assert "'x'" in frame_difference(base, base.with_columns(pl.col("x") * (1 + 2e-9)))
    assert "'n'" in frame_difference(base, base.with_columns(pl.col("n") + 1))
    assert "'y'" in frame_difference(base, base.with_columns(pl.col("y").fill_null(0.0)))
    assert "'y'" in frame_difference(base, base.with_columns(pl.col("y") * 2))  # tiny is not zero
    assert "rows" in frame_difference(base, base.head(1))
    # every differing column is named, not only the first
    both = frame_difference(base, base.with_columns(pl.col("n") + 1, pl.col("x") * 2))
    assert "'n'" in both and "'x'" in both


def test_cancellation_residue_near_zero_is_equal_to_zero():
    """A rolling sum that is 0 on paper: 0.0 in one run, 1e-17 in the other, in a column whose
    values are ~0.01. A difference of 1e-9 of the column's scale still counts."""
    sums = pl.DataFrame({"code": ["A", "B", "C"], "ret_20": [0.0, 0.012, -0.031]})
    residue = sums.with_columns(pl.when(pl.col("code") == "A").then(1e-17).otherwise(pl.col("ret_20")).alias("ret_20"))
    assert frame_difference(sums, residue) is None
    shifted = sums.with_columns(pl.when(pl.col("code") == "A").then(1e-10).otherwise(pl.col("ret_20")).alias("ret_20"))
    assert "'ret_20'" in frame_difference(sums, shifted)



def test_a_history_too_short_to_train_stops_before_anything_runs(tmp_path):
    """The demo configuration leaves its first 260 sessions out of training: a history of 112
    sessions (2023-06-01..2023-11-10) cannot train the model every night predicts with, so the
    simulation stops at once, naming the settings, instead of failing every night."""
    settings = Settings(home=tmp_path, start_date=dt.date(2023, 6, 1))
    scope = resolve_scope(settings, load_config(REPO_ROOT / "configs" / "demo.yaml"))
    ran: list[str] = []
    with DagsterInstance.ephemeral() as instance, pytest.raises(UsageError) as error:
        simulate_nights(
            build_definitions(settings, config=scope.config), instance, scope,
            PartitionStore(tmp_path / "data"), clock=None, first_night=dt.date(2023, 11, 13),
            nights=40, progress=ran.append,
        )
    assert str(error.value).startswith(
        "the history before the first night (2023-06-01..2023-11-10) cannot train the model: "
        "ml_dataset will have 112 session(s), too few"
    )
    assert "ATFT_START_DATE" in str(error.value)
    assert ran == [] and not list((tmp_path / "data").glob("*"))
