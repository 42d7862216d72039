"""Training throughput of the demo preset: the panel feed beside a plain DataLoader feed.

``python -m bench training`` builds a panel of random normalized features (the demo's shape
by default: 1,025 stocks, 330 features, the preset's window unless ``--window``) and times
optimiser steps of ``dates_per_batch`` whole dates — gather, forward, the combined loss,
backward, gradient clipping, AdamW — for each model phase, with two feeds of the same model
in the same process, interleaved:

* ``panel``: ``Panel.gather`` (a few indexing kernels on the dense panel), as ``train`` does;
* ``dataloader``: a ``torch.utils.data.DataLoader`` over (date, stock) samples, each
  window sliced from the same arrays, batched by a sampler that yields the samples of the
  same dates and stacked by the default collate (the graph comes from the panel's cache).

Both run inside ``reuse_freed_memory`` as ``train`` does; ``--default-heap`` runs both
without it, which is how the trainer ran before it. Reported: stock-days per second of
wall time and per CPU second (the latter is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from atft_pipeline.model.atft_gat_fan import ATFTGATFAN
from atft_pipeline.model.config import LossConfig, ModelConfig
from atft_pipeline.model.losses import CombinedLoss
from atft_pipeline.training.host_memory import reuse_freed_memory
from atft_pipeline.training.panel import Batch, Panel, graph_config


def synthetic_panel(n_dates: int, n_stocks: int, n_features: int, config: ModelConfig) -> Panel:
    rng = np.random.default_rng(0)
    shape = (n_dates, n_stocks)
    return Panel(
        features=torch.from_numpy(rng.standard_normal((*shape, n_features), dtype=np.float32)),
        valid=torch.from_numpy(rng.random(shape) < 0.97),
        targets=torch.from_numpy((0.02 * rng.standard_normal((*shape, 4))).astype(np.float32)),
        sector_ids=torch.from_numpy(rng.integers(0, 33, shape)),
        segment_ids=torch.from_numpy(rng.integers(0, 3, shape)),
        returns=torch.from_numpy((0.02 * rng.standard_normal(shape)).astype(np.float32)),
        dates=[dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(n_dates)],
        codes=[f"{1000 + i}" for i in range(n_stocks)],
        feature_columns=[f"f{i}" for i in range(n_features)],
        window=config.window,
        graph=graph_config(config),
        stats_hash="bench",
    )


class StockDays(Dataset):
    """One sample per (date, stock): the window [T, F] sliced from the panel's arrays."""

    def __init__(self, panel: Panel) -> None:
        self.features = panel.features.numpy()
        self.targets = panel.targets.numpy()
        self.sector = panel.sector_ids.numpy()
        self.segment = panel.segment_ids.numpy()
        self.window = panel.window

    def __len__(self) -> int:
        return self.features.shape[0] * self.features.shape[1]

    def __getitem__(self, cell: tuple[int, int]) -> dict[str, object]:
        t, n = cell
        start = t - self.window + 1
        x = self.features[max(start, 0) : t + 1, n]
        if start < 0:
            x = np.concatenate([np.zeros((-start, x.shape[1]), np.float32), x])
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x)),
            "static_ids": torch.tensor([self.sector[t, n], self.segment[t, n]]),
            "targets": torch.from_numpy(self.targets[t, n]),
            "date": t,
            "stock": n,
        }


class DateBatches(Sampler):
    """The valid (date, stock) cells of each chunk of dates, date-major, codes ascending."""

    def __init__(self, valid: np.ndarray, chunks: list[np.ndarray]) -> None:
        self.valid = valid
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for chunk in self.chunks:
            yield [(int(t), int(n)) for t in chunk for n in np.flatnonzero(self.valid[t])]


def dataloader_batches(panel: Panel, chunks: list[np.ndarray], with_graph: bool) -> Iterator[Batch]:
    loader = DataLoader(
        StockDays(panel), batch_sampler=DateBatches(panel.valid.numpy(), chunks), num_workers=0
    )
    for chunk, samples in zip(chunks, loader, strict=True):
        local_date = torch.searchsorted(torch.from_numpy(chunk), samples["date"])
        edge_index = edge_attr = None
        if with_graph:
            edge_index, edge_attr = panel._batch_graph(chunk.tolist())
        targets = samples["targets"]
        yield Batch(
            x=samples["x"],
            static_ids=samples["static_ids"],
            date_index=local_date,
            targets=targets,
            target_mask=torch.isfinite(targets),
            dates=torch.from_numpy(chunk),
            stocks=samples["stock"],
            edge_index=edge_index,
            edge_attr=edge_attr,
        )


def panel_batches(panel: Panel, chunks: list[np.ndarray], with_graph: bool) -> Iterator[Batch]:
    for chunk in chunks:
        yield panel.gather(chunk, with_graph=with_graph)


FEEDS = {"panel": panel_batches, "dataloader": dataloader_batches}


def time_feed(
    feed: str, model: ATFTGATFAN, loss: CombinedLoss, panel: Panel, chunks: list[np.ndarray]
) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, stock-days) of one optimiser step per chunk."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in FEEDS[feed](panel, chunks, model.phase.uses_gat):
        optimizer.zero_grad(set_to_none=True)
        out = model(batch.x, batch.static_ids, batch.date_index, batch.edge_index, batch.edge_attr)
        terms = loss(
            out.quantiles,
            out.point,
            batch.targets,
            batch.date_index,
            valid=batch.target_mask,
            n_dates=batch.n_dates,
        )
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        rows += batch.n_rows
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench training")
    parser.add_argument("--stocks", type=int, default=1025)
    parser.add_argument("--features", type=int, default=330)
    parser.add_argument("--dates-per-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per feed and phase")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--phases", nargs="*", default=["baseline", "fan", "gat"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--default-heap", action="store_true")
    parser.add_argument("--window", type=int, default=None, help="steps (default: the preset's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    window = {} if args.window is None else {"window": args.window}
    config = ModelConfig.demo(args.features, **window)
    n_dates = config.graph_window + args.dates_per_batch * args.steps
    panel = synthetic_panel(n_dates, args.stocks, args.features, config)
    first = config.graph_window - 1
    dates = np.arange(first, first + args.dates_per_batch * args.steps)
    chunks = list(dates.reshape(args.steps, args.dates_per_batch))
    for t in dates:  # graphs are cached per date in training too: build them untimed
        panel.date_graph(int(t))
    heap = contextlib.nullcontext() if args.default_heap else reuse_freed_memory()
    print(
        f"demo preset, {args.stocks} stocks x {args.features} features, window {config.window}, "
        f"{args.dates_per_batch} dates/step, {args.threads} threads, "
        f"{'default' if args.default_heap else 'reused'} heap"
    )
    with heap:
        for phase in args.phases:
            torch.manual_seed(0)
            model = ATFTGATFAN(config, phase=phase).train()
            loss = CombinedLoss(LossConfig(), config.quantiles, len(config.horizons))
            time_feed("panel", model, loss, panel, chunks[:1])  # warm-up
            results: dict[str, list[tuple[float, float, int]]] = {f: [] for f in FEEDS}
            for _ in range(args.rounds):
                for feed in FEEDS:
                    results[feed].append(time_feed(feed, model, loss, panel, chunks))
            for feed, runs in results.items():
                wall = sum(r[0] for r in runs)
                cpu = sum(r[1] for r in runs)
                rows = sum(r[2] for r in runs)
                print(
                    f"{phase:<9} {feed:<11} {rows / wall:7.0f} stock-days/s wall  "
                    f"{rows / cpu:7.0f} per CPU-s  ({wall:.1f}s wall, {rows} stock-days)"
                )
    return 0
