"""TSE tick sizes and daily price limits (cash equities, standard tick table).

Raw prices always sit on the tick grid of their level. The daily limit (制限値幅) is a yen width
that depends on the base price (the previous close, adjusted on a split ex-date); the limit
prices are the grid points just inside ``base +/- width``.
"""

from __future__ import annotations

import numpy as np

# tick = _TICKS[i] for prices in (_TICK_BOUNDS[i-1], _TICK_BOUNDS[i]]
_TICK_BOUNDS = np.array([3e3, 5e3, 3e4, 5e4, 3e5, 5e5, 3e6, 5e6, 3e7, 5e7])
_TICKS = np.array([1, 5, 10, 50, 100, 500, 1e3, 5e3, 1e4, 5e4, 1e5])
# width = _LIMITS[i] for base prices in [_LIMIT_BOUNDS[i-1], _LIMIT_BOUNDS[i])
_LIMIT_BOUNDS = np.array(
    [
        100,
        200,
        500,
        700,
        1e3,
        1.5e3,
        2e3,
        3e3,
        5e3,
        7e3,
        1e4,
        1.5e4,
        2e4,
        3e4,
        5e4,
        7e4,
        1e5,
        1.5e5,
        2e5,
        3e5,
        5e5,
        7e5,
        1e6,
        1.5e6,
        2e6,
        3e6,
        5e6,
    ]
)
_LIMITS = np.array(
    [
        30,
        50,
        80,
        100,
        150,
        300,
        400,
        500,
        700,
        1e3,
        1.5e3,
        3e3,
        4e3,
        5e3,
        7e3,
        1e4,
        1.5e4,
        3e4,
        4e4,
        5e4,
        7e4,
        1e5,
        1.5e5,
        3e5,
        4e5,
        5e5,
        7e5,
        1e6,
    ]
)


def tick_size(price: np.ndarray) -> np.ndarray:
    return _TICKS[np.searchsorted(_TICK_BOUNDS, price, side="left")]


def floor_to_tick(price: np.ndarray) -> np.ndarray:
    tick = tick_size(price)
    return np.floor(price / tick + 1e-9) * tick


def ceil_to_tick(price: np.ndarray) -> np.ndarray:
    tick = tick_size(price)
    return np.ceil(price / tick - 1e-9) * tick


def round_to_tick(price: np.ndarray) -> np.ndarray:
    tick = tick_size(price)
    return np.round(price / tick) * tick


def stochastic_round(price: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Round to the grid point below or above with probabilities that keep the mean exact.

    ``E[stochastic_round(x)] = x``: rounding adds noise but no drift, so expected returns of
    the tick-rounded prices equal the planted ones.
    """
    tick = tick_size(price)
    low = np.floor(price / tick) * tick
    return low + tick * (uniform < (price - low) / tick)


def limit_prices(base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) limit prices on the tick grid for each base price."""
    width = _LIMITS[np.searchsorted(_LIMIT_BOUNDS, base, side="right")]
    upper = floor_to_tick(base + width)
    lower = np.maximum(ceil_to_tick(np.maximum(base - width, 1.0)), 1.0)
    return upper, lower
