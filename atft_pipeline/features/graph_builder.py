"""Per-date stock graphs from trailing return correlations (shared by the graph features and
the GATv2 model).

Given a window of daily returns ``[T, N]`` (NaN = not observed), each stock with at least
``min_obs`` observations is linked to its ``k`` partners of largest |ρ| whose |ρ| is at least
``threshold``; the graph is the union of those links in both directions (so it is symmetric
and a degree can exceed ``k``), with no self loops.

ρ is the Pearson correlation of the mean-imputed series: a missing return is replaced by the
stock's own mean over the window, so it adds nothing to the covariance. For stocks missing
the same sessions (a day absent from the feed for everybody) this equals the
pairwise-complete ρ; for different gaps (halts, a recent listing) it shrinks ρ toward 0 in
proportion to the non-overlap, so a short overlap cannot create a spuriously strong link.
It keeps the whole date one matrix product.

Cost: one [N × T] × [T × N] product per date (torch, on the caller's torch thread setting),
done in row blocks so memory stays at ``block × N`` scores. Candidate selection uses float32
scores; the weights of the chosen edges are then recomputed exactly in float64, so only a
near tie at the k-th place (|Δρ| ≲ 1e-6) can differ from an all-float64 selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A column whose centred norm is below this has no usable variance (e.g. a stock whose price
# never moved in the window).
_MIN_NORM = 1e-9
_BLOCK_ROWS = 256  # a 256 × N float32 block stays in cache (measured fastest)
_GROUP_SIZE = 16  # columns per group in the exact two-stage top-k
# float32 scores are within ~1e-6 of the exact ρ; candidates this close to the threshold are
# decided by their exact value
_SCORE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GraphConfig:
    """How a per-date correlation graph is built (the features and the model share it)."""

    window: int = 60  # trailing sessions of daily returns, ending at t
    k: int = 10  # neighbours kept per stock (before symmetrization)
    threshold: float = 0.3  # minimum |ρ| for an edge
    min_obs: int = 40  # observed returns a stock needs in the window to be in the graph

    def __post_init__(self) -> None:
        if self.window < 2 or self.k < 1 or not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"invalid graph config {self!r}")
        if not 2 <= self.min_obs <= self.window:
            raise ValueError(f"min_obs must be in [2, window]; got {self!r}")


@dataclass(frozen=True)
class CorrelationGraph:
    """A symmetric graph over the ``N`` columns of a returns window.

    ``edge_index`` [2, E] int64 holds both directions of every edge, sorted by (source,
    target); ``edge_weight`` [E] float64 is the pair's ρ (signed). ``eligible`` marks columns
    with enough observations; ``max_abs_corr`` / ``mean_corr`` summarize each eligible
    column's ρ to every other eligible column (NaN for ineligible columns).
    """

    edge_index: np.ndarray
    edge_weight: np.ndarray
    eligible: np.ndarray
    max_abs_corr: np.ndarray
    mean_corr: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.eligible.shape[0])


def correlation_graph(
    returns_window: np.ndarray, k: int = 10, threshold: float = 0.3, min_obs: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """``(edge_index [2, E] int64, edge_weight [E] float64)`` of the top-k |ρ| graph."""
    graph = build_correlation_graph(returns_window, k=k, threshold=threshold, min_obs=min_obs)
    return graph.edge_index, graph.edge_weight


def build_correlation_graph(
    returns_window: np.ndarray, k: int = 10, threshold: float = 0.3, min_obs: int = 40
) -> CorrelationGraph:
    window = np.asarray(returns_window, dtype=np.float64)
    if window.ndim != 2:
        raise ValueError(f"returns window must be 2-D [T, N]; got shape {window.shape}")
    if k < 1 or min_obs < 2:
        raise ValueError(f"k must be >= 1 and min_obs >= 2; got k={k}, min_obs={min_obs}")
    n_total = window.shape[1]
    z, eligible = standardized_returns(window, min_obs)
    cols = np.flatnonzero(eligible)
    max_abs = np.full(n_total, np.nan)
    mean_corr = np.full(n_total, np.nan)
    if cols.size < 2:
        return CorrelationGraph(
            np.zeros((2, 0), dtype=np.int64), np.zeros(0), eligible, max_abs, mean_corr
        )
    rows_of = np.ascontiguousarray(z[:, cols].T)  # [n, T]: one stock's z per row
    n = cols.size
    k = min(k, n - 1)
    partners, scores = _top_partners(rows_of, k)
    mean_corr[cols] = (rows_of @ rows_of.sum(axis=0) - 1.0) / (n - 1)  # drops ρ(i, i) = 1
    best = partners[np.arange(n), scores.argmax(axis=1)]
    max_abs[cols] = np.abs(_dot_rows(rows_of, np.arange(n), best))

    # candidates by float32 score (with a margin), then the exact ρ decides the threshold
    source = np.repeat(np.arange(n), k)
    target = partners.ravel()
    near = scores.ravel() >= threshold - _SCORE_TOLERANCE
    a, b = source[near], target[near]
    # distinct undirected pairs, sorted (a sort and a neighbour compare: ~10x np.unique here)
    pairs = np.sort(np.minimum(a, b) * n + np.maximum(a, b))
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if pairs.size else pairs
    lo, hi = pairs // n, pairs % n
    weight = _dot_rows(rows_of, lo, hi)  # one value per undirected pair: exactly symmetric
    keep = np.abs(weight) >= threshold
    lo, hi, weight = lo[keep], hi[keep], np.clip(weight[keep], -1.0, 1.0)
    src = np.concatenate([lo, hi])
    dst = np.concatenate([hi, lo])
    order = np.argsort(src * n + dst)  # by (source, target)
    edge_index = np.stack([cols[src[order]], cols[dst[order]]]).astype(np.int64)
    return CorrelationGraph(
        edge_index, np.concatenate([weight, weight])[order], eligible, max_abs, mean_corr
    )


def standardized_returns(window: np.ndarray, min_obs: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm, mean-centred columns (missing values at the column mean, i.e. 0), so
    ``z[:, i] @ z[:, j]`` is ρ(i, j); and the eligible mask (≥ ``min_obs`` observations and
    non-zero variance). Ineligible columns are all zero."""
    observed = np.isfinite(window)
    nobs = observed.sum(axis=0)
    filled = np.where(observed, window, 0.0)
    mean = filled.sum(axis=0) / np.maximum(nobs, 1)
    centred = np.where(observed, filled - mean, 0.0)
    norm = np.sqrt((centred * centred).sum(axis=0))
    eligible = (nobs >= min_obs) & (norm > _MIN_NORM)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(eligible, centred / norm, 0.0)
    return z, eligible


def _dot_rows(rows_of: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 ρ of the pairs (a[e], b[e])."""
    return np.einsum("et,et->e", rows_of[a], rows_of[b])


def _top_partners(rows_of: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, k] partner indices of largest |ρ| per stock (itself excluded) and their float32
    |ρ| scores, computed one block of rows at a time.

    Exact top-k in two cheap stages instead of a full top-k over every score: the columns are
    split into groups (group q = columns q, q + G, q + 2G, ... for G groups, so a group
    maximum is an elementwise max of contiguous slices); a group holding one of a row's k
    best scores has a maximum at least as large as the k-th best, and at most k groups can,
    so the k groups with the largest maxima hold the k best scores. Padding columns score 0
    and are never preferred to a real partner (ρ = 0 exactly aside).
    """
    import torch  # lazily: the code location imports this module and must stay torch-free

    n, t = rows_of.shape
    groups = -(-n // _GROUP_SIZE)
    z_rows = torch.from_numpy(rows_of.astype(np.float32))
    z_cols = torch.zeros((t, groups * _GROUP_SIZE), dtype=torch.float32)
    z_cols[:, :n] = z_rows.T
    members = torch.arange(_GROUP_SIZE) * groups  # column offsets within a group
    n_best_groups = min(k, groups)
    partners = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    # One score buffer for every block: a fresh 4 MB tensor per block is page-faulted and
    # zero-filled by the kernel each time (a quarter of the date's time at 4,000 stocks).
    buffer = torch.empty((min(_BLOCK_ROWS, n), z_cols.shape[1]), dtype=torch.float32)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        rows = torch.arange(stop - start)
        block = torch.matmul(z_rows[start:stop], z_cols, out=buffer[: stop - start]).abs_()
        block[rows, rows + start] = 0.0  # not its own partner
        group_max = block.view(stop - start, _GROUP_SIZE, groups).amax(dim=1)
        best_groups = group_max.topk(n_best_groups, dim=1, sorted=False).indices
        columns = (best_groups[:, :, None] + members).reshape(stop - start, -1)
        top = block.gather(1, columns).topk(k, dim=1, sorted=False)
        partners[start:stop] = columns.gather(1, top.indices).numpy()
        scores[start:stop] = top.values.numpy()
    return partners, scores
