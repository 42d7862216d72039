"""Per-date stock graphs from trailing return correlations (shared by the graph features and
the GATv2 model).

Given a window of daily returns ``[T, N]`` (NaN = not observed), each stock with at least
``min_obs`` observations is linked to its ``k`` partners of largest |ρ| whose |ρ| is at least
``threshold``; the graph is the union of those links in both directions (so it is symmetric
and a degree can exceed ``k``), with no self loops. ρ is the Pearson correlation over the
sessions both stocks were observed (pairwise-complete, as ``pandas.DataFrame.corr`` with
``min_periods=min_obs``); a pair with fewer common sessions has no ρ.

Cost: one [N × T] × [T × N] product per date, done in row blocks so memory stays at
``block × N`` scores. Candidate selection uses float32 scores (torch's matmul is ~3× numpy's
here); the weights of the chosen edges are then recomputed exactly in float64, so only a near
tie at the k-th place (|Δρ| ≲ 1e-6) can differ from an all-float64 selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# A column (or pair) whose centred sum of squares is below this has no usable variance
# (e.g. a stock whose price never moved in the window).
_MIN_SUM_SQUARES = 1e-18
_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class GraphConfig:
    """How a per-date correlation graph is built (the features and the model share it)."""

    window: int = 60  # trailing sessions of daily returns, ending at t
    k: int = 10  # neighbours kept per stock (before symmetrization)
    threshold: float = 0.3  # minimum |ρ| for an edge
    min_obs: int = 40  # observed sessions a stock (and a pair) needs in the window

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
    column's ρ to every other eligible column (NaN where it has none).
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
    observed = np.isfinite(window)
    nobs = observed.sum(axis=0)
    centred = np.where(observed, window - _column_means(window, observed, nobs), 0.0)
    sum_squares = (centred * centred).sum(axis=0)
    eligible = (nobs >= min_obs) & (sum_squares > _MIN_SUM_SQUARES)
    cols = np.flatnonzero(eligible)

    max_abs = np.full(n_total, np.nan)
    mean_corr = np.full(n_total, np.nan)
    empty = CorrelationGraph(
        np.zeros((2, 0), dtype=np.int64), np.zeros(0), eligible, max_abs, mean_corr
    )
    if cols.size < 2:
        return empty

    sub = _Standardized(centred[:, cols], observed[:, cols], sum_squares[cols], min_obs)
    rows, nbrs = sub.top_partners(min(k, cols.size - 1))
    rho = sub.exact(rows, nbrs)
    best = np.nan_to_num(np.abs(rho), nan=-1.0).max(axis=1)
    max_abs[cols] = np.where(best >= 0.0, best, np.nan)
    mean_corr[cols] = sub.mean_correlation()

    keep = np.abs(rho) >= threshold
    a, b, w = rows[keep], nbrs[keep], rho[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(lo * cols.size + hi)
    lo, hi = pairs // cols.size, pairs % cols.size
    w = sub.exact(lo, hi[:, None])[:, 0]  # one exact value per undirected pair
    src = np.concatenate([lo, hi])
    dst = np.concatenate([hi, lo])
    order = np.lexsort((dst, src))
    edge_index = np.stack([cols[src[order]], cols[dst[order]]]).astype(np.int64)
    return CorrelationGraph(edge_index, np.concatenate([w, w])[order], eligible, max_abs, mean_corr)


def _column_means(window: np.ndarray, observed: np.ndarray, nobs: np.ndarray) -> np.ndarray:
    sums = np.where(observed, window, 0.0).sum(axis=0)
    return sums / np.maximum(nobs, 1)


class _Standardized:
    """The eligible columns of one window, ready for correlation queries.

    Fully observed columns are z-scored (unit norm), so ρ of two of them is a dot product.
    Columns with gaps need pairwise-complete statistics; their ρ to every column is
    precomputed exactly in ``partial_rho`` ([n, n_partial]).
    """

    def __init__(
        self, centred: np.ndarray, observed: np.ndarray, sum_squares: np.ndarray, min_obs: int
    ) -> None:
        self.n = centred.shape[1]
        full = observed.all(axis=0)
        self.full = full
        self.z = np.where(full, centred / np.sqrt(sum_squares), 0.0)
        self.partial = np.flatnonzero(~full)
        self.partial_pos = np.full(self.n, -1)
        self.partial_pos[self.partial] = np.arange(self.partial.size)
        self.partial_rho = _pairwise_complete(centred, observed, self.partial, min_obs)

    def top_partners(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """For every column, the ``k`` partners of largest |ρ| (float32 scores); a partner
        without a valid ρ is only taken when nothing better is left and is then dropped by
        the caller's threshold (its exact ρ is NaN)."""
        z32 = torch.from_numpy(self.z.astype(np.float32))
        z32_t = z32.T.contiguous()
        partial = torch.from_numpy(self.partial)
        # |ρ| to the partial columns, with "no ρ" ranked below every real partner
        partial_abs = torch.from_numpy(
            np.nan_to_num(np.abs(self.partial_rho), nan=-1.0).astype(np.float32)
        )
        partners = np.empty((self.n, k), dtype=np.int64)
        for start in range(0, self.n, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, self.n)
            scores = (z32_t[start:stop] @ z32).abs_()
            if self.partial.size:
                scores[:, partial] = partial_abs[start:stop]
                in_block = torch.nonzero((partial >= start) & (partial < stop))[:, 0]
                scores[partial[in_block] - start] = partial_abs[:, in_block].T
            block_rows = torch.arange(start, stop)
            scores[block_rows - start, block_rows] = -1.0
            partners[start:stop] = scores.topk(k, dim=1, sorted=False).indices.numpy()
        rows = np.repeat(np.arange(self.n), k).reshape(self.n, k)
        return rows, partners

    def exact(self, rows: np.ndarray, partners: np.ndarray) -> np.ndarray:
        """float64 ρ for each (rows[i, j], partners[i, j]) (rows broadcast against partners)."""
        rows = np.broadcast_to(rows if rows.ndim == 2 else rows[:, None], partners.shape)
        rho = np.einsum("tij,tij->ij", self.z[:, rows], self.z[:, partners])
        p_col = self.partial_pos[partners]
        use = p_col >= 0
        rho[use] = self.partial_rho[rows[use], p_col[use]]
        p_row = self.partial_pos[rows]
        use = (p_row >= 0) & ~use
        rho[use] = self.partial_rho[partners[use], p_row[use]]
        rho[rows == partners] = np.nan
        return rho

    def mean_correlation(self) -> np.ndarray:
        """Each column's mean ρ to every other column with a valid ρ."""
        full_sum = self.z.sum(axis=1)
        sums = self.z.T @ full_sum - self.full.astype(np.float64)  # drop ρ(i, i) = 1
        counts = np.where(self.full, self.full.sum() - 1.0, 0.0)
        if self.partial.size:
            valid = np.isfinite(self.partial_rho)
            to_partial = np.where(valid, self.partial_rho, 0.0)
            sums = np.where(self.full, sums + to_partial.sum(axis=1), 0.0)
            counts = counts + np.where(self.full, valid.sum(axis=1), 0)
            # a partial column's row is its own column of partial_rho (ρ is symmetric)
            sums[self.partial] = to_partial.sum(axis=0)
            counts[self.partial] = valid.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)


def _pairwise_complete(
    centred: np.ndarray, observed: np.ndarray, partial: np.ndarray, min_obs: int
) -> np.ndarray:
    """Pearson ρ over common observations of every column with each ``partial`` column.

    Returns [n, len(partial)]; NaN where the pair shares fewer than ``min_obs`` sessions,
    either side has no variance over them, or the pair is a column with itself.
    """
    n = centred.shape[1]
    if partial.size == 0:
        return np.zeros((n, 0))
    mask = observed.astype(np.float64)
    xp, mp = centred[:, partial], mask[:, partial]
    count = mask.T @ mp
    sx = centred.T @ mp
    sy = mask.T @ xp
    sxx = (centred * centred).T @ mp
    syy = mask.T @ (xp * xp)
    sxy = centred.T @ xp
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / count
        vx = sxx - sx * sx / count
        vy = syy - sy * sy / count
        rho = cov / np.sqrt(vx * vy)
    bad = (count < min_obs) | ~(vx > _MIN_SUM_SQUARES) | ~(vy > _MIN_SUM_SQUARES)
    rho[bad] = np.nan
    rho[partial, np.arange(partial.size)] = np.nan
    return np.clip(rho, -1.0, 1.0)
