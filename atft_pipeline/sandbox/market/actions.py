"""Corporate actions and trading halts, scheduled before prices are simulated.

Splits (AdjFactor 0.5, 0.25, 0.2, 1/3, 0.1) go to high-priced issues and reverse splits
(AdjFactor 10 or 5) to low-priced ones; the factor sits on the ex-date row (J-Quants convention).
Halts are short spells (1-5 sessions) of null bars; they never fall on a listing day or an
ex-date, so a bar's AdjFactor is always observed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.rng import stream
from atft_pipeline.sandbox.market.timeline import Timeline
from atft_pipeline.sandbox.market.universe import Universe

SPLIT_RATE, REVERSE_SPLIT_RATE = 0.012, 0.002  # per stock-year (at least 2 and 1 happen)
HALT_RATE = 3e-4  # probability a listed stock starts a halt on a given session
_SPLIT_FACTORS = ((0.5, 0.5), (0.25, 0.1), (0.2, 0.15), (1 / 3, 0.15), (0.1, 0.1))
_HALT_LENGTHS = ((1, 0.7), (2, 0.2), (3, 0.05), (5, 0.05))


@dataclass(frozen=True)
class Split:
    stock: int
    day: int  # ex-date session index
    factor: float  # AdjFactor on the ex-date row


@dataclass(frozen=True)
class CorporateActions:
    splits: tuple[Split, ...]
    adj_factor: np.ndarray  # [T, N] AdjFactor of each potential bar (1 except on ex-dates)
    halted: np.ndarray  # [T, N] bool: listed but no trade
    cumulative_factor: np.ndarray  # [T, N] product of AdjFactor up to and including the day

    def shares_on(self, universe: Universe, stock: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Shares outstanding of ``stock`` on session ``day`` (a 1:2 split doubles them)."""
        return np.round(universe.shares[stock] / self.cumulative_factor[day, stock])


def schedule_actions(
    config: MarketConfig, universe: Universe, timeline: Timeline
) -> CorporateActions:
    rng = stream(config.seed, "actions")
    n, t = universe.n, len(timeline)
    n_fwd = max(2, round(SPLIT_RATE * n * config.years))
    n_rev = max(1, round(REVERSE_SPLIT_RATE * n * config.years))
    span = universe.delisting_day - universe.listing_day
    eligible = np.flatnonzero(span > 30)
    by_price = eligible[np.argsort(-universe.price[eligible], kind="stable")]
    high, low = (
        by_price[: max(n_fwd, len(by_price) // 2)],
        by_price[::-1][: max(n_rev, len(by_price) // 4)],
    )
    fwd = rng.choice(high, size=min(n_fwd, len(high)), replace=False)
    rev = rng.choice(
        np.setdiff1d(low, fwd), size=min(n_rev, len(np.setdiff1d(low, fwd))), replace=False
    )
    factors = np.array([f for f, _ in _SPLIT_FACTORS])
    weights = np.array([w for _, w in _SPLIT_FACTORS])
    splits = []
    for stock in fwd.tolist():
        day = int(rng.integers(universe.listing_day[stock] + 10, universe.delisting_day[stock]))
        splits.append(Split(stock, day, float(rng.choice(factors, p=weights / weights.sum()))))
    for stock in rev.tolist():
        day = int(rng.integers(universe.listing_day[stock] + 10, universe.delisting_day[stock]))
        splits.append(Split(stock, day, 10.0 if rng.random() < 0.7 else 5.0))
    splits.sort(key=lambda s: (s.day, s.stock))

    adj_factor = np.ones((t, n))
    for s in splits:
        adj_factor[s.day, s.stock] = s.factor

    listed = universe.listed_matrix(t)
    starts = np.argwhere((rng.random((t, n), dtype=np.float32) < HALT_RATE) & listed)
    lengths = np.array([k for k, _ in _HALT_LENGTHS])
    p_len = np.array([w for _, w in _HALT_LENGTHS])
    halted = np.zeros((t, n), dtype=bool)
    for (day, stock), length in zip(
        starts.tolist(), rng.choice(lengths, size=len(starts), p=p_len).tolist(), strict=True
    ):
        halted[day : day + length, stock] = True
    halted &= listed
    halted[universe.listing_day, np.arange(n)] = False
    halted[adj_factor != 1.0] = False
    return CorporateActions(tuple(splits), adj_factor, halted, np.cumprod(adj_factor, axis=0))
