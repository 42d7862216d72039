"""Correlation-graph builder against a dense brute force (symmetric, no self loops, top-k by
|ρ|, threshold, NaN-safe eligibility) and the graph family's node features against loops over
an independently built adjacency, and real data.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.features import graph
from atft_pipeline.features.graph_builder import (
    GraphConfig,
    build_correlation_graph,
    correlation_graph,
)
from tests.helpers import (
    BARS,
    MASTER,
    Panel,
    asof_master,
    assert_contract,
    real_tables,
    run,
    sandbox_tables,
    sessions_of,
)

FAMILY = graph.FAMILY


# --------------------------------------------------------------------------------------
# brute force: dense ρ of the mean-imputed series, then top-k per row, union both ways


def mean_imputed(window: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return np.where(np.isfinite(window), window, np.nanmean(window, axis=0))


def dense_corr(window: np.ndarray, min_obs: int) -> tuple[np.ndarray, np.ndarray]:
    observed = np.isfinite(window)
    filled = mean_imputed(window)
    std = filled.std(axis=0)
    eligible = (observed.sum(axis=0) >= min_obs) & (std > 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        corr = np.corrcoef(filled.T)
    corr[~eligible] = np.nan
    corr[:, ~eligible] = np.nan
    np.fill_diagonal(corr, np.nan)
    return corr, eligible


def brute_edges(corr: np.ndarray, k: int, threshold: float) -> dict[tuple[int, int], float]:
    edges = {}
    for i in range(corr.shape[0]):
        row = np.nan_to_num(np.abs(corr[i]), nan=-1.0)
        for j in np.argsort(-row, kind="stable")[:k]:
            if row[j] >= threshold:
                edges[i, j] = edges[j, i] = corr[i, j]
    return edges


def factor_returns(seed: int, t: int, n: int, missing: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, size=n)
    factors = rng.standard_normal((t, 4))
    loadings = rng.uniform(0.3, 1.2, size=n) * rng.choice([-1, 1], size=n, p=[0.15, 0.85])
    returns = 0.01 * (loadings * factors[:, groups] + rng.standard_normal((t, n)))
    returns[rng.random((t, n)) < missing] = np.nan
    return returns


@pytest.mark.parametrize(("seed", "n", "k", "threshold", "missing"), [
    (0, 70, 10, 0.3, 0.0), (1, 70, 5, 0.2, 0.1), (2, 70, 3, 0.0, 0.05), (3, 70, 25, 0.5, 0.0),
    (4, 601, 10, 0.3, 0.03),  # several row blocks, a partial column group
])
def test_builder_matches_brute_force(seed, n, k, threshold, missing):
    window = factor_returns(seed, 60, n, missing)
    window[:, 3] = np.nan  # no history
    window[:25, 4] = np.nan  # 35 of 60 observations: not eligible
    window[:15, 5] = np.nan  # 45 of 60: eligible
    window[:, 6] = 0.0  # no variance
    corr, eligible = dense_corr(window, 40)
    want = brute_edges(corr, k, threshold)
    g = build_correlation_graph(window, k=k, threshold=threshold, min_obs=40)
    got = {(int(s), int(d)): w for s, d, w in zip(*g.edge_index, g.edge_weight, strict=True)}
    assert set(got) == set(want)
    for edge, w in got.items():
        assert w == pytest.approx(want[edge], abs=1e-12)
    i, j = next(iter(got))  # ρ of the mean-imputed series, as scipy computes it
    filled = mean_imputed(window)
    scipy_rho = stats.pearsonr(filled[:, i], filled[:, j]).statistic
    assert got[i, j] == pytest.approx(scipy_rho, abs=1e-12)
    np.testing.assert_array_equal(g.eligible, eligible)
    assert not g.eligible[[3, 4, 6]].any() and g.eligible[5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(g.max_abs_corr, np.nanmax(np.abs(corr), axis=1), atol=1e-12)
        np.testing.assert_allclose(g.mean_corr, np.nanmean(corr, axis=1), atol=1e-12)


def test_builder_invariants():
    window = factor_returns(7, 60, 200, 0.05)
    edge_index, weight = correlation_graph(window, k=10, threshold=0.3)
    src, dst = edge_index
    assert edge_index.dtype == np.int64 and edge_index.shape == (2, weight.size)
    assert not (src == dst).any()  # no self loops
    assert (np.abs(weight) >= 0.3).all()  # threshold respected
    pairs = dict(zip(zip(src.tolist(), dst.tolist(), strict=True), weight.tolist(), strict=True))
    assert all(pairs[(d, s)] == w for (s, d), w in pairs.items())  # symmetric, same weight
    assert list(zip(src, dst)) == sorted(zip(src, dst))  # sorted by (source, target)
    assert len(pairs) == weight.size  # no duplicate edges
    # each node keeps at least its own top-k above the threshold (more through symmetry)
    degree = np.bincount(src, minlength=window.shape[1])
    corr, _ = dense_corr(window, 40)
    above = (np.nan_to_num(np.abs(corr), nan=0) >= 0.3).sum(axis=1)
    assert (degree >= np.minimum(10, above)).all()


def test_builder_edge_cases():
    assert correlation_graph(np.full((60, 5), np.nan))[0].shape == (2, 0)
    one = factor_returns(1, 60, 1)
    g = build_correlation_graph(one)
    assert g.edge_index.shape == (2, 0) and g.eligible.tolist() == [True]
    assert np.isnan(g.max_abs_corr).all()
    three = factor_returns(2, 60, 3)
    edge_index, _ = correlation_graph(three, k=10, threshold=0.0)  # k larger than N - 1
    assert edge_index.shape[1] == 6  # complete graph, both directions
    short = factor_returns(3, 30, 10)  # a window shorter than min_obs: nobody eligible
    assert not build_correlation_graph(short, min_obs=40).eligible.any()
    with pytest.raises(ValueError, match="2-D"):
        correlation_graph(np.zeros(60))
    with pytest.raises(ValueError):
        GraphConfig(window=60, min_obs=61)
    with pytest.raises(ValueError):
        GraphConfig(threshold=1.5)


# --------------------------------------------------------------------------------------
# the family


@pytest.fixture(scope="module")
def case():
    tables = sandbox_tables()
    days = sessions_of(tables)
    out = run(FAMILY, tables, days, days)
    return tables, days, out, Panel(tables[BARS], days)


def pagerank_dense(adjacency: np.ndarray, damping: float = 0.85) -> np.ndarray:
    """Exact PageRank by solving the linear system (dangling nodes teleport uniformly)."""
    n = adjacency.shape[0]
    strength = adjacency.sum(axis=1)
    safe = np.where(strength > 0, strength, 1.0)[:, None]
    transition = np.where(strength[:, None] > 0, adjacency / safe, 1.0 / n)
    rank = np.linalg.solve(np.eye(n) - damping * transition.T, np.full(n, (1 - damping) / n))
    return rank / rank.sum() * n


def expected_features(tables, panel: Panel, days, t: int) -> dict[str, dict[str, float]]:
    cols = np.flatnonzero(panel.listed[t])
    window = panel.ret1[max(0, t - 59) : t + 1, cols]
    corr, eligible = dense_corr(window, 40)
    edges = brute_edges(corr, 10, 0.3)  # the brief: top-10 by |ρ|, |ρ| >= 0.3, 40 of 60
    n = cols.size
    adjacency = np.zeros((n, n))
    for (i, j), w in edges.items():
        adjacency[i, j] = w
    nodes = np.flatnonzero(eligible)
    pr = np.full(n, np.nan)
    pr[nodes] = pagerank_dense(np.abs(adjacency[np.ix_(nodes, nodes)]))
    sectors = {}
    for j in range(n):
        row = asof_master(tables[MASTER], panel.codes[cols[j]], days[t])
        sectors[j] = row["S33"] if row and row["S33"] not in ("9999", "") else None
    rets = {n_: panel.ret(n_)[t, cols] for n_ in (1, 5, 20, 60)}
    out = {}
    for i in range(n):
        code = panel.codes[cols[i]]
        if not eligible[i]:
            out[code] = {name: None for name in FAMILY.columns}
            continue
        nbrs = np.flatnonzero(adjacency[i])
        w = adjacency[i, nbrs]
        row = {
            "graph_degree": float(nbrs.size),
            "graph_weighted_degree": np.abs(w).sum(),
            "graph_mean_abs_corr": np.abs(w).mean() if nbrs.size else None,
            "graph_nbr_degree": (
                np.mean([np.count_nonzero(adjacency[j]) for j in nbrs]) if nbrs.size else None
            ),
            "graph_pagerank": pr[i],
            "graph_max_abs_corr": np.nanmax(np.abs(corr[i])),
            "graph_mean_corr": np.nanmean(corr[i]),
        }
        named = {1: "graph_nbr_ret_1d", 5: "graph_nbr_ret_5d", 20: "graph_nbr_ret_20d",
                 60: "graph_nbr_mom_60d"}
        for n_, name in named.items():
            r = rets[n_][nbrs]
            ok = np.isfinite(r)
            row[name] = (w[ok] * r[ok]).sum() / np.abs(w[ok]).sum() if ok.any() else None
        r1 = rets[1][nbrs][np.isfinite(rets[1][nbrs])]
        row["graph_nbr_ret_std_1d"] = r1.std() if r1.size >= 2 else None
        for n_, name in ((1, "graph_rel_ret_1d"), (5, "graph_rel_ret_5d")):
            nbr = row[f"graph_nbr_ret_{n_}d"]
            row[name] = rets[n_][i] - nbr if nbr is not None and np.isfinite(rets[n_][i]) else None
        known = [j for j in nbrs if sectors[i] is not None and sectors[j] is not None]
        same = [sectors[j] == sectors[i] for j in known]
        row["graph_same_sector_share"] = np.mean(same) if known else None
        out[code] = row
    return out


@pytest.mark.slow
def test_family_matches_brute_force(case):
    tables, days, out, panel = case
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for t in (45, 59, 60, 130, 250, len(days) - 1):
            want = expected_features(tables, panel, days, t)
            day = out.filter(pl.col("date") == days[t])
            for row in day.iter_rows(named=True):
                for column, expected in want[row["code"]].items():
                    got = row[column]
                    if expected is None or not np.isfinite(expected):
                        assert got is None, (column, days[t], row["code"], got)
                    else:
                        where = (column, days[t], row["code"])
                        assert got == pytest.approx(expected, rel=2e-5, abs=2e-6), where
                        checked += 1
    assert checked > 1500
    # before 40 returns exist nobody is in the graph: nulls, not zeros
    early = out.filter(pl.col("date") < days[40])
    assert early["graph_degree"].null_count() == early.height


@pytest.mark.realdata
def test_real_data(realdata_dir):
    tables = real_tables(realdata_dir, n_codes=300, n_days=90)
    days = sessions_of(tables)
    out = run(FAMILY, tables, days[-3:], days)
    assert_contract(out, FAMILY, tables, days[-3:])
    panel = Panel(tables[BARS], days)
    t = len(days) - 1
    cols = np.flatnonzero(panel.listed[t])
    window = panel.ret1[t - 59 : t + 1, cols]
    corr, _ = dense_corr(window, 40)
    want = brute_edges(corr, 10, 0.3)
    degree = np.bincount(np.array([i for i, _ in want], dtype=int), minlength=cols.size)
    got = out.filter(pl.col("date") == days[t]).sort("code")["graph_degree"].to_numpy()
    np.testing.assert_array_equal(np.nan_to_num(got, nan=0), degree)
    last = out.filter(pl.col("date") == days[t])
    # real stocks correlate through the market: mean ρ well above 0, same-sector links common
    assert last["graph_mean_corr"].median() > 0.1
    assert last["graph_same_sector_share"].mean() > 0.1


@pytest.mark.slow
def test_dates_on_parallel_threads_give_the_serial_result(case):
    import torch

    tables, days, out, _ = case
    threads = torch.get_num_threads()
    try:
        for workers in (1, 3):  # the family runs as many date threads as torch may use
            torch.set_num_threads(workers)
            again = run(FAMILY, tables, days, days)
            assert again.equals(out), workers
            assert torch.get_num_threads() == workers  # restored after the family
    finally:
        torch.set_num_threads(threads)
