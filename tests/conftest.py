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

# The longest modules start first, so no worker is left with one of them at the end while the
# others idle (longest-processing-time-first; the durations are `make test`'s, BENCHMARKS.md).
# The xdist scheduler hands out whole modules in collection order (`--no-loadscope-reorder`).
LONGEST_MODULES = (
    "tests/deploy/test_postgres_deployment.py",  # ~100 s: three processes + daemon ticks
    "tests/assets/test_pipeline.py",  # the whole graph
    "tests/deploy/test_mlflow_tracking.py",
    "tests/assets/test_raw_assets.py",
    "tests/training/test_distributed.py",
    "tests/assets/test_cli.py",
)


def _start_rank(item: pytest.Item) -> tuple[int, int]:
    module = item.nodeid.split("::", 1)[0]
    if module in LONGEST_MODULES:
        return (0, LONGEST_MODULES.index(module))
    # then modules holding slow tests, then the rest, each in collection order
    return (1, 0) if item.get_closest_marker("slow") else (2, 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    module_rank: dict[str, tuple[int, int]] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_rank[module] = min(module_rank.get(module, (9, 0)), _start_rank(item))
    # a stable sort: tests keep their order within a module
    items.sort(key=lambda item: module_rank[item.nodeid.split("::", 1)[0]])


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    if not (REALDATA / "manifest.json").exists():
        pytest.skip("../shared/realdata/tse_2013_2018 is not present")
    return REALDATA
