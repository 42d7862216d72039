"""Multi-process training (torch.distributed DDP, gloo on CPU): two processes launched by
``torchrun`` reach the same validation metrics as one process, within a stated tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers import RETURN_COLUMN, make_dataset, make_stats

from atft_pipeline.config import (
    ModelSection,
    PipelineConfig,
    SplitSpec,
    TrainingSection,
    dump_config,
)
from atft_pipeline.storage import PartitionStore
from atft_pipeline.training.distributed import DATASET_ASSET, STATS_ASSET, DataParallel

# Two processes split each step's dates; the long-short Sharpe term is then computed over
# half a step's dates, so the optimisation path differs slightly from one process's.
TOLERANCE = {"rank_ic": 0.02, "ic": 0.02}  # measured: |Δ| ≤ 0.005 (RankIC), ≤ 0.0021 (IC)
CONFIG = PipelineConfig(
    splits=SplitSpec(val_fraction=0.2, test_fraction=0.1),
    model=ModelSection(
        overrides=dict(hidden=16, attn_heads=2, gat_heads=(2, 2), fan_top_k=1, graph_k=4)
    ),
    training=TrainingSection(
        overrides=dict(
            seed=7, dates_per_batch=8, early_stopping_patience=5,
            phases=[
                {"name": "baseline", "epochs": 3, "lr": 3e-3},
                {"name": "gat", "epochs": 1, "lr": 1e-3},
            ],
        ),
        graph_return_column=RETURN_COLUMN,
    ),
)


def test_parts_cover_each_step_once_with_weights_summing_to_the_group_size():
    import numpy as np

    chunk = np.arange(10, 17)
    parts = [DataParallel(rank=r, world_size=2).part(chunk) for r in range(2)]
    assert np.array_equal(np.concatenate([p for p, _ in parts]), chunk)
    assert sum(w for _, w in parts) == pytest.approx(2.0)  # DDP averages: mean weight 1
    short = [DataParallel(rank=r, world_size=3).part(chunk[:2]) for r in range(3)]
    assert [w for _, w in short] == [1.5, 1.5, 0.0]  # the idle process still joins, at weight 0


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("ddp")
    dataset = make_dataset(n_stocks=24, n_dates=100, seed=4)
    days = sorted(dataset["date"].unique().to_list())
    splits = CONFIG.splits.resolve(days)
    store = PartitionStore(home / "data")
    for day in days:
        store.write(DATASET_ASSET, day, dataset.filter(dataset["date"] == day))
    store.write(STATS_ASSET, None, make_stats(dataset, train_end=splits.train.end))
    dump_config(CONFIG, home / "config.yaml")
    return home


def _train(home: Path, run_dir: Path, launcher: list[str]) -> dict:
    done = subprocess.run(
        [*launcher, "-m", "atft_pipeline.training.distributed", "--home", str(home),
         "--config", str(home / "config.yaml"), "--run-dir", str(run_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_processes_reproduce_one_process_metrics(home, tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    single = _train(home, tmp_path / "single", [sys.executable])
    double = _train(home, tmp_path / "ddp", [torchrun, "--standalone", "--nproc-per-node", "2"])
    assert (single["world_size"], double["world_size"]) == (1, 2)
    print(json.dumps({"single": single["val"], "ddp": double["val"]}, indent=1))
    for horizon, metrics in single["val"].items():
        for name, tolerance in TOLERANCE.items():
            assert abs(double["val"][horizon][name] - metrics[name]) <= tolerance, (horizon, name)
    assert single["val"]["1"]["rank_ic"] > 0.3  # both learned the planted signal
    # Process 1 trained too (its own checkpoints), on its half of every step.
    assert (tmp_path / "ddp" / "rank-1" / "metrics.jsonl").exists()
