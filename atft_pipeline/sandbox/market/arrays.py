"""Small array helpers shared by the table builders ([time, stock] matrices)."""

from __future__ import annotations

import numpy as np


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs along axis 0 (time); leading NaNs stay NaN."""
    idx = np.where(np.isfinite(x), np.arange(x.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return x[idx, np.arange(x.shape[1])[None, :]]


def later_product(factors: np.ndarray) -> np.ndarray:
    """Product of ``factors`` over all *later* rows, per column (1 on the last row).

    With J-Quants ``AdjFactor`` on the ex-date row, this is the multiplier that turns a raw
    price into the adjusted price as of the end of the data.
    """
    out = np.ones_like(factors)
    if len(factors) > 1:
        out[:-1] = np.cumprod(factors[::-1], axis=0)[::-1][1:]
    return out
