"""Does the GATv2's correlation graph contain the sandbox's hidden peers?

``python -m bench peer_graph [--stocks N --seed S --window W --k K --threshold T]``

The planted peer lead-lag signal (docs/sandbox.md) moves each stock after its 3 hidden peers
(~70 % from its own sector). The model's graph links stocks by same-day return correlation
over a trailing window (``features.graph_builder``). For several dates this prints the share of
hidden (stock, peer) pairs that are edges of that graph, split into same-sector and
cross-sector peers, beside the share a random graph of the same degree would reach.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl


def _adjusted_returns(bars: pl.DataFrame, codes: list[str]) -> np.ndarray:
    """[T - 1, N] adjusted close-to-close returns, columns in ``codes`` order (NaN: no bar)."""
    wide = (
        bars.select("Date", "Code", "AdjC")
        .sort("Date")
        .pivot(on="Code", index="Date", values="AdjC")
    )
    closes = wide.select(
        pl.col(c) if c in wide.columns else pl.lit(None, pl.Float64).alias(c) for c in codes
    )
    px = closes.to_numpy().astype(np.float64)
    return px[1:] / px[:-1] - 1.0


def main(argv: list[str]) -> int:
    from atft_pipeline.features.graph_builder import build_correlation_graph
    from atft_pipeline.model.config import ModelConfig
    from atft_pipeline.sandbox.market.config import MarketConfig
    from atft_pipeline.sandbox.market.generate import generate_market
    from atft_pipeline.training.panel import graph_config

    parser = argparse.ArgumentParser(prog="python -m bench peer_graph")
    parser.add_argument("--stocks", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    # the model's own graph settings and its min_obs rule (training.panel.graph_config)
    fields = ModelConfig.model_fields
    parser.add_argument("--window", type=int, default=fields["graph_window"].default)
    parser.add_argument("--k", type=int, default=fields["graph_k"].default)
    parser.add_argument("--threshold", type=float, default=fields["graph_threshold"].default)
    args = parser.parse_args(argv)
    settings = graph_config(
        ModelConfig(
            n_features=1,
            graph_window=args.window,
            graph_k=args.k,
            graph_threshold=args.threshold,
        )
    )

    market = generate_market(MarketConfig(n_stocks=args.stocks, seed=args.seed))
    universe = market.hidden.universe
    codes = [str(c) for c in universe.codes]
    returns = _adjusted_returns(market.tables["equities/bars/daily"], codes)
    n = len(codes)
    stock = np.repeat(np.arange(n), universe.peers.shape[1])
    peer = universe.peers.ravel()
    same_sector = universe.sector[stock] == universe.sector[peer]
    print(
        f"{n} stocks, {len(peer)} hidden (stock, peer) pairs ({same_sector.mean():.0%} same "
        f"sector); graph: {settings}"
    )
    header = ("session", "edges", "degree", "recall", "same", "cross", "random")
    print(" ".join(f"{h:>7}" for h in header))
    for end in np.linspace(settings.window + 1, len(returns), 5).astype(int):
        graph = build_correlation_graph(
            returns[end - settings.window : end],
            k=settings.k,
            threshold=settings.threshold,
            min_obs=settings.min_obs,
        )
        adjacency = np.zeros((n, n), dtype=bool)
        adjacency[graph.edge_index[0], graph.edge_index[1]] = True
        both = graph.eligible[stock] & graph.eligible[peer]
        hit = adjacency[stock, peer] & both
        degree = adjacency.sum(axis=1)[graph.eligible].mean()
        random = degree / max(graph.eligible.sum() - 1, 1)
        row = (
            f"{end}",
            f"{graph.edge_index.shape[1] // 2}",
            f"{degree:.1f}",
            f"{hit.sum() / both.sum():.3f}",
            f"{hit[same_sector].sum() / both[same_sector].sum():.3f}",
            f"{hit[~same_sector].sum() / both[~same_sector].sum():.3f}",
            f"{random:.3f}",
        )
        print(" ".join(f"{v:>7}" for v in row))
    return 0
