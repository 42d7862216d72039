"""Graph family: each stock's place in the trailing-correlation network of its date.

For every emitted date t the stocks listed that day form a graph built by
``graph_builder.build_correlation_graph`` from their daily returns of the ``GRAPH.window``
sessions ending at t (only returns <= t): top-k partners by |ρ| above a threshold, made
symmetric. From that graph and the stocks' returns at t:

- connectivity: degree, weighted degree (Σ|ρ|), mean |ρ| to neighbours, mean neighbour degree,
  PageRank (|ρ|-weighted, scaled so the mean over the date's eligible stocks is 1), strongest
  |ρ| to any stock and mean ρ to all stocks;
- neighbourhood returns: ρ-weighted mean of the neighbours' 1/5/20/60-session returns
  (Σ ρ·r / Σ|ρ|, so an anti-correlated neighbour counts with its sign flipped), their
  dispersion today, and the stock's own return minus the neighbours' (1 and 5 sessions);
- share of neighbours in the stock's own S33 sector (point-in-time membership).

A stock with fewer than ``min_obs`` returns in the window is not in the graph: all its
columns are null. A stock in the graph without any neighbour has degree 0 and null
neighbour statistics.

This is the one family that steps through dates: each step is a BLAS product over the
[window × N] return matrix of that date (never a loop over stocks), and memory stays at one
window plus one block of scores per thread (dates run on as many threads as torch may use).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import polars as pl
from scipy import sparse

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.graph_builder import (
    CorrelationGraph,
    GraphConfig,
    build_correlation_graph,
)
from atft_pipeline.features.market import RETURN_HORIZONS, SESSION, stock_panel
from atft_pipeline.features.sector import sector_membership

FAMILY_NAME = "graph"
GRAPH = GraphConfig(window=60, k=10, threshold=0.3, min_obs=40)
PAGERANK_DAMPING = 0.85
PAGERANK_TOL = 1e-10
PAGERANK_MAX_ITER = 200

_W = GRAPH.window
FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("graph_degree", "number of neighbours in the correlation graph", _W),
    FeatureSpec("graph_weighted_degree", "sum of |ρ| to the neighbours", _W),
    FeatureSpec("graph_mean_abs_corr", "mean |ρ| to the neighbours", _W),
    FeatureSpec("graph_nbr_degree", "mean degree of the neighbours (centrality proxy)", _W),
    FeatureSpec("graph_pagerank", "|ρ|-weighted PageRank times the number of graph nodes", _W),
    FeatureSpec("graph_max_abs_corr", "largest |ρ| to any other stock", _W),
    FeatureSpec("graph_mean_corr", "mean ρ to all other stocks", _W),
    FeatureSpec("graph_nbr_ret_1d", "ρ-weighted mean of the neighbours' return today", _W),
    FeatureSpec("graph_nbr_ret_5d", "ρ-weighted mean of the neighbours' 5-session return", _W),
    FeatureSpec("graph_nbr_ret_20d", "ρ-weighted mean of the neighbours' 20-session return", _W),
    FeatureSpec("graph_nbr_mom_60d", "ρ-weighted mean of the neighbours' 60-session return", _W),
    FeatureSpec("graph_nbr_ret_std_1d", "std of the neighbours' returns today", _W),
    FeatureSpec("graph_rel_ret_1d", "return today minus graph_nbr_ret_1d", _W),
    FeatureSpec("graph_rel_ret_5d", "5-session return minus graph_nbr_ret_5d", _W),
    FeatureSpec("graph_same_sector_share", "share of neighbours in the same S33 sector", _W),
)
_RETURNS = tuple(f"ret_{n}d" for n in RETURN_HORIZONS)


def pagerank(edge_index: np.ndarray, weight: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Weighted PageRank over the ``nodes`` (bool mask) by power iteration, scaled to mean 1.

    Dangling nodes (no edges) spread their mass uniformly; non-nodes get NaN.
    """
    out = np.full(nodes.shape[0], np.nan)
    members = np.flatnonzero(nodes)
    n = members.size
    if n == 0:
        return out
    local = np.full(nodes.shape[0], -1)
    local[members] = np.arange(n)
    src, dst = local[edge_index[0]], local[edge_index[1]]
    strength = np.bincount(src, weight, minlength=n)
    transition = sparse.csr_matrix((weight / strength[src], (dst, src)), shape=(n, n))
    dangling = strength == 0
    rank = np.full(n, 1.0 / n)
    for _ in range(PAGERANK_MAX_ITER):
        new = PAGERANK_DAMPING * (transition @ rank + rank[dangling].sum() / n)
        new += (1.0 - PAGERANK_DAMPING) / n
        done = np.abs(new - rank).sum() < PAGERANK_TOL
        rank = new
        if done:
            break
    out[members] = rank * n
    return out


def graph_features(
    graph: CorrelationGraph, returns: dict[str, np.ndarray], sector: np.ndarray
) -> dict[str, np.ndarray]:
    """The family's columns for the nodes of one date's graph.

    ``returns`` maps ``ret_{1,5,20,60}d`` to each node's return at t (NaN = none); ``sector``
    holds an integer S33 id per node (-1 = unknown).
    """
    n = graph.num_nodes
    src, dst = graph.edge_index
    rho = graph.edge_weight
    strength = np.abs(rho)

    def per_node(values: np.ndarray) -> np.ndarray:
        return np.bincount(src, values, minlength=n)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)

    degree = per_node(np.ones(src.size))

    def nbr_mean(values: np.ndarray) -> np.ndarray:
        seen = np.isfinite(values[dst])
        weighted = per_node(np.where(seen, rho * values[dst], 0.0))
        return ratio(weighted, per_node(np.where(seen, strength, 0.0)))

    today = returns["ret_1d"][dst]
    seen = np.isfinite(today)
    count = per_node(seen.astype(np.float64))
    mean = ratio(per_node(np.where(seen, today, 0.0)), count)
    square = ratio(per_node(np.where(seen, today * today, 0.0)), count)
    nbr_std = np.where(count >= 2, np.sqrt(np.clip(square - mean * mean, 0.0, None)), np.nan)

    known = (sector[src] >= 0) & (sector[dst] >= 0)
    same = known & (sector[src] == sector[dst])
    nbr = {name: nbr_mean(returns[name]) for name in _RETURNS}
    columns = {
        "graph_degree": degree,
        "graph_weighted_degree": per_node(strength),
        "graph_mean_abs_corr": ratio(per_node(strength), degree),
        "graph_nbr_degree": ratio(per_node(degree[dst]), degree),
        "graph_pagerank": pagerank(graph.edge_index, strength, graph.eligible),
        "graph_max_abs_corr": graph.max_abs_corr,
        "graph_mean_corr": graph.mean_corr,
        "graph_nbr_ret_1d": nbr["ret_1d"],
        "graph_nbr_ret_5d": nbr["ret_5d"],
        "graph_nbr_ret_20d": nbr["ret_20d"],
        "graph_nbr_mom_60d": nbr["ret_60d"],
        "graph_nbr_ret_std_1d": nbr_std,
        "graph_rel_ret_1d": returns["ret_1d"] - nbr["ret_1d"],
        "graph_rel_ret_5d": returns["ret_5d"] - nbr["ret_5d"],
        "graph_same_sector_share": ratio(
            per_node(same.astype(np.float64)), per_node(known.astype(np.float64))
        ),
    }
    return {name: np.where(graph.eligible, values, np.nan) for name, values in columns.items()}


def _listed_returns(inputs: FeatureInputs) -> pl.DataFrame:
    """Listed (code, session) rows of the sessions the emitted dates' windows need, sorted by
    session, code, with an integer code id and an integer S33 id (-1 = none)."""
    panel = (
        sector_membership(
            inputs, stock_panel(inputs, FAMILY_NAME).filter(pl.col("listed")), FAMILY_NAME
        )
        .select("date", SESSION, "code", "sector33", *_RETURNS)
        .collect()
    )
    emitted = panel.filter(pl.col("date").is_in(list(inputs.dates)))[SESSION]
    if emitted.is_empty():
        return panel.clear().with_columns(
            pl.lit(0, pl.Int64).alias("_code_id"), pl.lit(0, pl.Int64).alias("_sector_id")
        )
    return (
        panel.filter(
            pl.col(SESSION).is_between(emitted.min() - (GRAPH.window - 1), emitted.max())
        )
        .select(
            "date",
            SESSION,
            "code",
            (pl.col("code").rank("dense") - 1).cast(pl.Int64).alias("_code_id"),
            pl.col("sector33").cast(pl.Int64, strict=False).fill_null(-1).alias("_sector_id"),
            *(pl.col(r).fill_null(np.nan) for r in _RETURNS),
        )
        .sort(SESSION, "code")
    )


def compute_graph(inputs: FeatureInputs) -> pl.LazyFrame:
    rows = _listed_returns(inputs)
    session = rows[SESSION].to_numpy()
    code_id = rows["_code_id"].to_numpy()
    sector = rows["_sector_id"].to_numpy()
    returns = {r: rows[r].to_numpy() for r in _RETURNS}
    emitted = rows["date"].is_in(list(inputs.dates)).to_numpy()

    columns: dict[str, np.ndarray] = {f.name: np.full(rows.height, np.nan) for f in FEATURES}
    if rows.height:
        first_session = int(session[0])
        daily = np.full((int(session[-1]) - first_session + 1, int(code_id.max()) + 1), np.nan)
        daily[session - first_session, code_id] = returns["ret_1d"]

        # rows are sorted by session: one [lo, hi) slice per date
        cuts = np.flatnonzero(np.diff(session)) + 1
        slices = [
            (lo, hi)
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, rows.height], strict=True)
            if emitted[lo]
        ]

        def one_date(bounds: tuple[int, int]) -> None:
            lo, hi = bounds
            t = int(session[lo]) - first_session
            window = daily[max(0, t - GRAPH.window + 1) : t + 1, code_id[lo:hi]]
            graph = build_correlation_graph(
                window, k=GRAPH.k, threshold=GRAPH.threshold, min_obs=GRAPH.min_obs
            )
            today = {r: values[lo:hi] for r, values in returns.items()}
            for name, values in graph_features(graph, today, sector[lo:hi]).items():
                columns[name][lo:hi] = values  # dates own disjoint row slices

        # Dates are independent: as many Python threads as torch may use cores (its intra-op
        # setting: OMP_NUM_THREADS or the machine's cores), each running single-threaded
        # torch / numpy kernels that release the GIL (1.9x on 2 idle cores at 4,000 stocks).
        with _single_intra_op_thread() as cores:
            with ThreadPoolExecutor(max(1, min(len(slices), cores))) as pool:
                for _ in pool.map(one_date, slices):
                    pass
    frame = rows.select("date", "code").with_columns(
        pl.Series(name, values, dtype=pl.Float64) for name, values in columns.items()
    )
    return common.emit(frame.lazy(), FAMILY, inputs.dates)


@contextmanager
def _single_intra_op_thread() -> Iterator[int]:
    """Run torch ops single-threaded (restored afterwards); yields the thread count before.

    One date's block product and passes are a few milliseconds each; torch's OpenMP workers
    synchronize after every op, and on shared cores waiting at those barriers cost 2-5x in
    measurements, while a single thread never waits. The cores are used by running whole
    dates on parallel Python threads instead.
    """
    import torch  # lazily: the code location imports this module and must stay torch-free

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


FAMILY = FeatureFamily(
    name=FAMILY_NAME,
    sources=("raw_daily_quotes", "raw_listed_info"),
    lookback=GRAPH.window,
    features=FEATURES,
    compute=compute_graph,
    description="position in the per-date trailing-correlation network and neighbours' returns",
)
