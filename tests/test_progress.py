"""Progress records: throttled counters, and how a run's console shows them."""

from __future__ import annotations

import io
import logging

import pytest

from assets.cli import Console
from assets.runner import StageLog, StageProgress
from atft_pipeline.progress import Counter, progress_extra, progress_of


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def records():
    logger = logging.getLogger("atft_pipeline.test_progress")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, seen
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_counter_logs_the_first_step_then_at_most_once_per_interval_and_always_the_last(records):
    logger, seen = records
    clock = _Clock()
    counter = Counter("days fetched", 10, every_s=1.0, logger=logger, clock=clock)
    for step in range(10):
        clock.now = step * 0.4  # 0.0, 0.4, ..., 3.6
        counter.advance()
    assert [r.getMessage() for r in seen] == [
        "days fetched 1/10",  # t=0.0
        "days fetched 4/10",  # t=1.2
        "days fetched 7/10",  # t=2.4
        "days fetched 10/10",  # the last one, though only 1.2 s after the previous
    ]
    assert {progress_of(r) for r in seen} == {("days fetched", False)}


def test_an_ordinary_record_is_not_progress(records):
    logger, seen = records
    logger.info("phase a epoch 1")
    logger.info("phase a epoch 2", extra=progress_extra("phase a", keep=True))
    assert [progress_of(r) for r in seen] == [None, ("phase a", True)]


def test_a_stage_log_relays_only_the_progress_records_of_the_library(tmp_path):
    updates: list[StageProgress] = []
    library = logging.getLogger("atft_pipeline.jquants")
    with StageLog(tmp_path / "run.log", progress=updates.append).capture("raw_daily_quotes"):
        Counter("/equities/bars/daily queries", 2, every_s=0.0, logger=library).advance(2)
        library.info("an ordinary library message")
        logging.getLogger("elsewhere").warning("not the library's")
    assert updates == [
        StageProgress("raw_daily_quotes", "/equities/bars/daily queries",
                      "/equities/bars/daily queries 2/2", False)
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_redraws_one_progress_line_and_clears_it_for_the_next_stage_line():
    screen = _Terminal()
    console = Console(screen)
    console.progress(StageProgress("ml_dataset", "partitions written", "partitions written 5/9", False))
    console.progress(StageProgress("ml_dataset", "partitions written", "partitions written 9/9", False))
    console.line("  ml_dataset ok")
    assert screen.getvalue() == (
        "\r\033[K    ml_dataset: partitions written 5/9"
        "\r\033[K    ml_dataset: partitions written 9/9"
        "\r\033[K  ml_dataset ok\n"
    )


def test_a_pipe_gets_each_training_phase_once_and_no_counters():
    pipe = io.StringIO()
    console = Console(pipe)
    for key, message, keep in [
        ("raw queries", "raw queries 3/5", False),
        ("phase temporal", "phase temporal epoch 1: val RankIC(h=1) 0.0100", True),
        ("phase temporal", "phase temporal epoch 2: val RankIC(h=1) 0.0200", True),
        ("phase full", "phase full epoch 1: val RankIC(h=1) 0.0300", True),
        ("valid dates predicted", "valid dates predicted 60/60", False),
    ]:
        console.progress(StageProgress("atft_model", key, message, keep))
    console.line("  atft_model ok")
    assert pipe.getvalue().splitlines() == [
        "    atft_model: phase temporal epoch 2: val RankIC(h=1) 0.0200",
        "    atft_model: phase full epoch 1: val RankIC(h=1) 0.0300",
        "  atft_model ok",
    ]
