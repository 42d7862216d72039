"""Freed heap memory stays with the process inside ``reuse_freed_memory`` only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from atft_pipeline.training.host_memory import _glibc, reuse_freed_memory

SIZE = 256 * 1024**2  # far above glibc's largest mmap threshold (32 MB)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _glibc() is None, reason="needs glibc"
)


def resident_bytes() -> int:
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024


def rss_drop_after_free() -> int:
    block = np.ones(SIZE, dtype=np.uint8)  # touched: resident
    before = resident_bytes()
    del block
    return before - resident_bytes()


def test_freed_blocks_stay_resident_inside_and_return_after():
    assert rss_drop_after_free() > SIZE // 2  # default: unmapped on free
    with reuse_freed_memory():
        assert rss_drop_after_free() < SIZE // 4  # kept in the heap for the next step
        inside = resident_bytes()
    assert resident_bytes() < inside - SIZE // 2  # trimmed on exit
    assert rss_drop_after_free() > SIZE // 2  # defaults restored


def test_nested_use_keeps_the_setting_until_the_outermost_exit():
    """Prediction inside training nests the context: the inner exit must not restore the
    defaults under the still-running training."""
    with reuse_freed_memory():
        with reuse_freed_memory():
            pass
        assert rss_drop_after_free() < SIZE // 4  # still kept after the inner exit
    assert rss_drop_after_free() > SIZE // 2  # restored by the outer one
