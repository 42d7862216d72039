from __future__ import annotations

from pathlib import Path

import pytest

from assets.instance import relax_sqlite_durability
from tests.helpers import REPO_ROOT

# Dagster's SQLite test instances commit once per event; tests need no fsync per commit.
relax_sqlite_durability()

REALDATA = REPO_ROOT.parent / "shared" / "realdata" / "tse_2013_2018"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    if not (REALDATA / "manifest.json").exists():
        pytest.skip("../shared/realdata/tse_2013_2018 is not present")
    return REALDATA
