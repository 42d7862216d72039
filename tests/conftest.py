from __future__ import annotations

import os
from pathlib import Path

# Each pytest-xdist worker gets an equal share of the cores for OpenMP (torch, LightGBM): a
# full-size pool per worker makes the pools' spinning threads fight over the same cores, which
# made model tests several times slower. Set before any test module imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest

from assets.instance import configure_dagster_process
from tests.helpers import REPO_ROOT

# Tests write Dagster events as atft does: batched, no fsync per SQLite commit.
configure_dagster_process()

REALDATA = REPO_ROOT.parent / "shared" / "realdata" / "tse_2013_2018"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    if not (REALDATA / "manifest.json").exists():
        pytest.skip("../shared/realdata/tse_2013_2018 is not present")
    return REALDATA
