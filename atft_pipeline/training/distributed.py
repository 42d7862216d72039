"""Multi-process training with ``torch.distributed`` (DistributedDataParallel).

Every process holds the whole panel and the same model. Each optimiser step's dates are
split across the processes (``np.array_split``: process r takes the r-th part); each process
runs its part through the DDP-wrapped model, and DDP averages the gradients. A part's loss is
weighted by ``world_size · |part| / |step|``, so the averaged gradient is the gradient of the
step's date-weighted mean loss — what one process computes — except for the batch-level
terms (the long-short Sharpe is computed over a part's dates, not the step's), hence equal
metrics only within a tolerance. Validation runs on every process (no collective, the same
numbers); process 0 tracks, the others write their checkpoints to their own directory.

Launch, one process per GPU (NCCL) or per CPU slot (gloo):

    torchrun --nproc-per-node 4 -m atft_pipeline.training.distributed \\
        --home $ATFT_HOME --config configs/production.yaml --run-dir runs/ddp

It trains on ``ml_dataset`` and ``normalization_stats`` as stored under ``--home`` (what the
pipeline materialized), with the splits, model and training sections of ``--config``.
Without torchrun it runs as a single process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

DATASET_ASSET = "ml_dataset"  # the pipeline's stored assets this entry point reads
STATS_ASSET = "normalization_stats"


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the group; ``world_size == 1`` is plain single-process."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to run training forward passes through (DDP when distributed)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # Phases leave parts of the model unused (no GAT in `baseline`): DDP must allow that.
        ids = [torch.cuda.current_device()] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def part(self, chunk: np.ndarray) -> tuple[np.ndarray, float]:
        """This process's dates of a step and the weight of its loss. A process with no date
        (a step shorter than the group) runs one date at weight 0: DDP needs every process
        in every backward pass."""
        if not self.active:
            return chunk, 1.0
        mine = np.array_split(chunk, self.world_size)[self.rank]
        if mine.size == 0:
            return chunk[:1], 0.0
        return mine, self.world_size * mine.size / chunk.size

    def mean_terms(self, terms: Tensor, weight: float) -> Tensor:
        """The step's date-weighted mean of each loss term, on every process."""
        if not self.active:
            return terms
        total = terms * (weight / self.world_size)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def from_environment() -> DataParallel:
    """Join the group torchrun describes (``WORLD_SIZE``, ``RANK``); alone without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DataParallel()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return DataParallel(rank=dist.get_rank(), world_size=dist.get_world_size())


def device_for(parallel: DataParallel) -> str:
    """One GPU per process (``LOCAL_RANK`` becomes the current device), else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    if parallel.active:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return "cuda"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train ATFT-GAT-FAN on the stored dataset")
    parser.add_argument("--home", type=Path, required=True, help="ATFT_HOME of the stored data")
    parser.add_argument("--config", type=Path, help="pipeline configuration YAML")
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    from atft_pipeline.config import PipelineConfig, load_config
    from atft_pipeline.features.catalog import META_COLUMNS, TARGET_COLUMNS
    from atft_pipeline.storage import PartitionStore
    from atft_pipeline.training import JsonTracker, Panel, train

    parallel = from_environment()
    try:
        config = load_config(args.config) if args.config else PipelineConfig()
        store = PartitionStore(args.home / "data")
        keys = store.partitions(DATASET_ASSET)
        dataset = store.scan(DATASET_ASSET, keys).collect()
        stats = store.read(STATS_ASSET)
        splits = config.splits.resolve([dt.date.fromisoformat(k) for k in keys])
        reserved = {*META_COLUMNS, *TARGET_COLUMNS}
        model_config = config.model.build(sum(c not in reserved for c in dataset.columns))
        training_config = config.training.build().model_copy(
            update={"device": device_for(parallel)}
        )
        if training_config.ensemble_members != 1:
            raise ValueError(
                f"training.ensemble_members is {training_config.ensemble_members}: distributed "
                "training trains one model (run it once per seed, or train the ensemble with "
                "`atft run`)"
            )
        panel = Panel.for_model(
            dataset, stats, model_config, return_column=config.training.graph_return_column,
            span=(splits.train.start, splits.val.end),
        )
        run_dir = args.run_dir if parallel.is_main else args.run_dir / f"rank-{parallel.rank}"
        tracker = JsonTracker(run_dir / "metrics.jsonl")
        result = train(panel, splits, model_config, training_config, run_dir, tracker,
                       parallel=parallel)
        tracker.finish()
        if parallel.is_main:
            print(json.dumps({"world_size": parallel.world_size, "best_phase": result.best_phase,
                              "val": {str(h): m for h, m in result.final_metrics.items()}}))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
