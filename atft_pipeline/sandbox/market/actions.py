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


def _forward_factor(rng: np.random.Generator) -> float:
    factors = np.array([f for f, _ in _SPLIT_FACTORS])
    weights = np.array([w for _, w in _SPLIT_FACTORS])
    return float(rng.choice(factors, p=weights / weights.sum()))


def _reverse_factor(rng: np.random.Generator) -> float:
    return 10.0 if rng.random() < 0.7 else 5.0


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
    splits = []
    for stock in fwd.tolist():
        day = int(rng.integers(universe.listing_day[stock] + 10, universe.delisting_day[stock]))
        splits.append(Split(stock, day, _forward_factor(rng)))
    for stock in rev.tolist():
        day = int(rng.integers(universe.listing_day[stock] + 10, universe.delisting_day[stock]))
        splits.append(Split(stock, day, _reverse_factor(rng)))
    splits += _window_splits(config, universe, timeline, high, low, {s.stock for s in splits})
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


def _window_splits(
    config: MarketConfig,
    universe: Universe,
    timeline: Timeline,
    high: np.ndarray,
    low: np.ndarray,
    taken: set[int],
) -> list[Split]:
    """``config.event_splits`` more splits with ex-dates in the event window (its own random
    stream, so the rest of the market is unchanged): forward splits of high-priced and
    reverse splits of low-priced issues listed through the whole window."""
    if config.event_window_start is None or config.event_splits == 0:
        return []
    rng = stream(config.seed, "actions-events")
    t = len(timeline)
    first = timeline.index_on_or_after(config.event_window_start)
    through = (universe.listing_day + 10 <= first) & (universe.delisting_day >= t - 1)
    pools = [
        np.array([s for s in pool.tolist() if through[s] and s not in taken], dtype=np.int64)
        for pool in (high, low)
    ]
    n_fwd = (config.event_splits + 1) // 2
    fwd = rng.choice(pools[0], size=min(n_fwd, len(pools[0])), replace=False)
    rev_pool = np.setdiff1d(pools[1], fwd)
    rev = rng.choice(rev_pool, size=min(config.event_splits - n_fwd, len(rev_pool)), replace=False)
    sessions = np.arange(first, max(first + 1, t - 1))  # ex-dates before the last session
    n_events = len(fwd) + len(rev)
    days = np.sort(rng.choice(sessions, size=n_events, replace=n_events > len(sessions)))
    forward = [_forward_factor(rng) for _ in fwd]
    reverse = [_reverse_factor(rng) for _ in rev]
    # alternate forward and reverse splits through the window
    stocks = [s for pair in zip(fwd.tolist(), rev.tolist()) for s in pair]
    stocks += fwd.tolist()[len(rev):] + rev.tolist()[len(fwd):]
    by_stock = dict(zip(fwd.tolist() + rev.tolist(), forward + reverse, strict=True))
    return [Split(s, int(d), by_stock[s]) for s, d in zip(stocks, days.tolist(), strict=True)]
