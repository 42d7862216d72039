"""``equities/bars/daily`` (with the Premium morning/afternoon fields) and the TOPIX index.

Closes come from the simulation; the open is a gap of part of the day's move from the base
price, highs and lows extend beyond open/close by a vol-scaled half-normal amount, and the
morning close / afternoon open sit between. Everything is on the tick grid and inside the
day's limit band; ``UL``/``LL`` (and ``MUL``/``AUL``...) flag a session that touched the limit.
Volume scales with typical turnover, the vol regime and the size of the move, in 100-share
lots; turnover values are volume x a session VWAP, and morning + afternoon add up exactly.

Adjusted fields follow J-Quants: ``AdjFactor`` sits on the ex-date row and every earlier row
is multiplied by the product of all later factors (prices) or divided by it (volumes), i.e.
adjusted as of the end of the data. Halted sessions have a row with null prices and volumes.

TOPIX is the market-cap-weighted (previous close x shares) return of the 1st Section / Prime
issues, from 1800.00 on the day before the first session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from atft_pipeline.sandbox.market.actions import CorporateActions
from atft_pipeline.sandbox.market.arrays import forward_fill, later_product
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.prices import PricePaths
from atft_pipeline.sandbox.market.rng import stream
from atft_pipeline.sandbox.market.ticks import ceil_to_tick, floor_to_tick, round_to_tick
from atft_pipeline.sandbox.market.timeline import Timeline
from atft_pipeline.sandbox.market.universe import TOPIX_SEGMENTS, Universe

TOPIX_START = 1800.0
LOT = 100  # shares per trading unit


@dataclass(frozen=True)
class Bars:
    table: pl.DataFrame  # equities/bars/daily
    turnover: np.ndarray  # [T, N] Va in yen (NaN: no trade)
    open: np.ndarray  # [T, N] raw O/H/L (NaN: no trade), for the index
    high: np.ndarray
    low: np.ndarray


def _lots(x: np.ndarray) -> np.ndarray:
    return np.round(x / LOT) * LOT


def build_bars(
    config: MarketConfig,
    universe: Universe,
    timeline: Timeline,
    actions: CorporateActions,
    paths: PricePaths,
) -> Bars:
    rng = stream(config.seed, "bars")
    t, n = len(timeline), universe.n
    flat = np.flatnonzero(universe.listed_matrix(t))
    day_idx, stock_idx = np.divmod(flat, n)
    m = len(flat)

    def cells(matrix: np.ndarray) -> np.ndarray:
        return matrix.ravel()[flat].astype(np.float64)

    close, base = cells(paths.close), cells(paths.base)
    upper, lower = cells(paths.upper), cells(paths.lower)
    sigma, ret = cells(paths.sigma), cells(paths.ret)

    traded = np.isfinite(close)
    gap = ret * rng.uniform(0.2, 0.7, m) + 0.3 * sigma * rng.standard_normal(m)
    open_ = np.where(traded, np.clip(round_to_tick(base * (1 + gap)), lower, upper), np.nan)
    top, bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = np.minimum(ceil_to_tick(top * (1 + np.abs(0.5 * sigma * rng.standard_normal(m)))), upper)
    low = np.maximum(
        floor_to_tick(bottom * (1 - np.abs(0.5 * sigma * rng.standard_normal(m)))), lower
    )

    # Morning close / afternoon open between the day's open and close.
    mid = (
        open_
        + (close - open_) * rng.uniform(0.2, 0.8, m)
        + 0.3 * sigma * base * rng.standard_normal(m)
    )
    m_close = np.clip(round_to_tick(mid), low, high)
    a_open = np.clip(round_to_tick(m_close * (1 + 0.1 * sigma * rng.standard_normal(m))), low, high)
    m_high, a_high = _split_extreme(
        rng, high, np.maximum(open_, m_close), np.maximum(a_open, close), sigma, up=True
    )
    m_low, a_low = _split_extreme(
        rng, low, np.minimum(open_, m_close), np.minimum(a_open, close), sigma, up=False
    )

    regime = np.sqrt(paths.market_var[day_idx] / np.median(paths.market_var))
    shares = actions.shares_on(universe, stock_idx, day_idx)
    activity = (
        np.exp(0.4 * rng.standard_normal(m) - 0.08) * (1 + 20 * np.abs(ret)) * np.sqrt(regime)
    )
    volume = np.where(
        traded, np.maximum(_lots(shares * universe.turnover[stock_idx] * activity), 2 * LOT), np.nan
    )
    m_volume = np.clip(_lots(volume * rng.uniform(0.35, 0.65, m)), LOT, volume - LOT)
    a_volume = volume - m_volume
    m_value = np.round(m_volume * np.clip((open_ + m_high + m_low + m_close) / 4, m_low, m_high))
    a_value = np.round(a_volume * np.clip((a_open + a_high + a_low + close) / 4, a_low, a_high))
    value = m_value + a_value

    factor = cells(actions.adj_factor)
    multiplier = later_product(actions.adj_factor).ravel()[flat]
    columns: dict[str, pl.Series] = {
        "Date": pl.Series(timeline.days, dtype=pl.Date).gather(day_idx),
        "Code": pl.Series(universe.codes.tolist(), dtype=pl.String).gather(stock_idx),
    }
    sessions = {
        "": (open_, high, low, close, volume, value, upper, lower),
        "M": (open_, m_high, m_low, m_close, m_volume, m_value, upper, lower),
        "A": (a_open, a_high, a_low, close, a_volume, a_value, upper, lower),
    }
    for prefix, (o, h, lo, c, vo, va, up, dn) in sessions.items():
        block = {"O": o, "H": h, "L": lo, "C": c, "UL": h >= up, "LL": lo <= dn, "Vo": vo, "Va": va}
        if prefix == "":
            block["AdjFactor"] = factor
        block |= {
            "AdjO": o * multiplier,
            "AdjH": h * multiplier,
            "AdjL": lo * multiplier,
            "AdjC": c * multiplier,
            "AdjVo": vo / multiplier,
        }
        for name, values in block.items():
            series = (
                pl.Series(prefix + name, values)
                if values.dtype == bool
                else pl.Series(prefix + name, values, nan_to_null=True)
            )
            columns[prefix + name] = series
    table = pl.DataFrame(columns)

    def dense(values: np.ndarray) -> np.ndarray:
        out = np.full((t, n), np.nan)
        out.ravel()[flat] = values
        return out

    return Bars(table, dense(value), dense(open_), dense(high), dense(low))


def _split_extreme(
    rng: np.random.Generator,
    extreme: np.ndarray,
    morning_edge: np.ndarray,
    afternoon_edge: np.ndarray,
    sigma: np.ndarray,
    *,
    up: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Give the day's high (low) to one session; the other stops short of it."""
    m = len(extreme)
    in_morning = rng.random(m) < 0.5
    stretch = np.abs(0.25 * sigma * rng.standard_normal(m))
    if up:
        m_other = np.clip(ceil_to_tick(morning_edge * (1 + stretch)), morning_edge, extreme)
        a_other = np.clip(ceil_to_tick(afternoon_edge * (1 + stretch)), afternoon_edge, extreme)
    else:
        m_other = np.clip(floor_to_tick(morning_edge * (1 - stretch)), extreme, morning_edge)
        a_other = np.clip(floor_to_tick(afternoon_edge * (1 - stretch)), extreme, afternoon_edge)
    return np.where(in_morning, extreme, m_other), np.where(in_morning, a_other, extreme)


def topix_table(
    universe: Universe, timeline: Timeline, actions: CorporateActions, paths: PricePaths, bars: Bars
) -> pl.DataFrame:
    t = len(timeline)
    last_close = forward_fill(np.vstack([universe.price[None, :], paths.close]))
    prev, now = last_close[:-1], last_close[1:]
    reference = prev * actions.adj_factor  # previous close in today's share units
    days = np.arange(t)[:, None]
    # Issues listed before the first session count from day 0 (their reference price is the
    # close before the period); new listings join the index the session after listing.
    joined = (days > universe.listing_day[None, :]) | (universe.listing_day[None, :] == 0)
    member = joined & (days <= universe.delisting_day[None, :]) & np.isfinite(prev)
    before = days < universe.migration_day
    segment = np.where(before, universe.segment_before[None, :], universe.segment_after[None, :])
    member &= np.isin(segment, list(TOPIX_SEGMENTS))
    shares_prev = universe.shares[None, :] / np.vstack(
        [np.ones((1, universe.n)), actions.cumulative_factor[:-1]]
    )
    weight = np.where(member, shares_prev * prev, 0.0)
    total = weight.sum(axis=1)

    def index_ratio(price: np.ndarray) -> np.ndarray:
        ratio = np.where(member & np.isfinite(price), price / reference, 1.0)
        return np.where(
            total > 0, (weight * ratio).sum(axis=1) / np.where(total > 0, total, 1), 1.0
        )

    close_ratio = index_ratio(now)
    level = TOPIX_START * np.cumprod(close_ratio)
    previous_level = np.r_[TOPIX_START, level[:-1]]
    open_level = previous_level * index_ratio(bars.open)
    # Constituents do not all peak together: the index range is a fraction of the average one.
    top = np.maximum(open_level, level)
    bottom = np.minimum(open_level, level)
    high_level = top + 0.4 * np.maximum(previous_level * index_ratio(bars.high) - top, 0.0)
    low_level = bottom - 0.4 * np.maximum(bottom - previous_level * index_ratio(bars.low), 0.0)
    return pl.DataFrame(
        {
            "Date": pl.Series(timeline.days, dtype=pl.Date),
            "O": np.round(open_level, 2),
            "H": np.round(high_level, 2),
            "L": np.round(low_level, 2),
            "C": np.round(level, 2),
        }
    )
