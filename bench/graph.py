"""Per-date correlation graphs: ``build_correlation_graph`` beside a plain numpy loop.

``python -m bench graph --stocks 4000 --dates 2500`` draws daily returns of a one-factor
market (5 % of them missing), then for each date builds the top-k |ρ| graph of the trailing
window two ways in the same process:

* ``naive``: float64 ρ matrix per date (the same mean-imputed standardization), top-k per
  row by ``np.argpartition``, made symmetric — on the first ``--naive-dates`` dates only;
* ``ours``: ``graph_builder.build_correlation_graph`` (float32 block products, two-stage
  top-k, exact float64 weights of the chosen edges) on every date, as the graph family does.

It checks that both give the same edges on the dates both ran, and prints seconds per date,
the extrapolation to ``--dates`` for the naive loop, and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from atft_pipeline.features.graph import GRAPH
from atft_pipeline.features.graph_builder import build_correlation_graph, standardized_returns


def one_factor_returns(n_dates: int, n_stocks: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = 0.01 * rng.standard_normal((n_dates, 1))
    beta = rng.uniform(0.0, 2.0, n_stocks)
    returns = market * beta + 0.02 * rng.standard_normal((n_dates, n_stocks))
    returns[rng.random(returns.shape) < 0.05] = np.nan
    return returns


def naive_edges(window: np.ndarray) -> set[tuple[int, int]]:
    z, eligible = standardized_returns(window, GRAPH.min_obs)
    cols = np.flatnonzero(eligible)
    rho = z[:, cols].T @ z[:, cols]
    np.fill_diagonal(rho, 0.0)
    strength = np.abs(rho)
    k = min(GRAPH.k, cols.size - 1)
    top = np.argpartition(-strength, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(cols.size), k)
    picked = top.ravel()
    keep = strength[rows, picked] >= GRAPH.threshold
    return {
        (int(cols[min(a, b)]), int(cols[max(a, b)]))
        for a, b in zip(rows[keep], picked[keep], strict=True)
    }


def our_edges(window: np.ndarray) -> set[tuple[int, int]]:
    graph = build_correlation_graph(
        window, k=GRAPH.k, threshold=GRAPH.threshold, min_obs=GRAPH.min_obs
    )
    src, dst = graph.edge_index
    return {(int(a), int(b)) for a, b in zip(src, dst, strict=True) if a < b}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench graph")
    parser.add_argument("--stocks", type=int, default=4000)
    parser.add_argument("--dates", type=int, default=2500)
    parser.add_argument("--naive-dates", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # the graph family runs single-threaded
    returns = one_factor_returns(args.dates + GRAPH.window - 1, args.stocks)
    windows = (returns[t : t + GRAPH.window] for t in range(args.dates))
    timing = {"naive": 0.0, "ours": 0.0}
    cpu = {"naive": 0.0, "ours": 0.0}
    mismatched = 0
    for t, window in enumerate(windows):
        start, start_cpu = time.perf_counter(), time.process_time()
        ours = our_edges(window)
        timing["ours"] += time.perf_counter() - start
        cpu["ours"] += time.process_time() - start_cpu
        if t < args.naive_dates:
            start, start_cpu = time.perf_counter(), time.process_time()
            naive = naive_edges(window)
            timing["naive"] += time.perf_counter() - start
            cpu["naive"] += time.process_time() - start_cpu
            mismatched += naive != ours
    naive_dates = min(args.naive_dates, args.dates)
    naive_per_date = timing["naive"] / max(naive_dates, 1)
    print(f"{args.stocks} stocks, window {GRAPH.window}, k={GRAPH.k}, {args.threads} thread(s)")
    print(
        f"naive: {naive_per_date * 1e3:7.1f} ms/date wall, "
        f"{cpu['naive'] / max(naive_dates, 1) * 1e3:7.1f} ms/date CPU over {naive_dates} dates "
        f"(x{args.dates} dates = {naive_per_date * args.dates:.0f}s wall)"
    )
    print(
        f"ours:  {timing['ours'] / args.dates * 1e3:7.1f} ms/date wall, "
        f"{cpu['ours'] / args.dates * 1e3:7.1f} ms/date CPU over {args.dates} dates "
        f"= {timing['ours']:.1f}s wall"
    )
    print(f"dates whose edges differ: {mismatched} of {naive_dates}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS {peak:.2f} GB")
    return 0 if mismatched == 0 else 1
