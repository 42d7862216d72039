"""Named, independent random streams derived from the market seed.

Each part of the market draws from its own ``numpy.random.Generator(PCG64)`` keyed by
(seed, stream name), so adding draws to one table never shifts the numbers of another and the
same seed always reproduces every table bit for bit.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator for stream ``name`` of market ``seed`` (stable across platforms)."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))
    )


def student_t(rng: np.random.Generator, df: float, size: int | tuple[int, ...]) -> np.ndarray:
    """Student-t draws rescaled to unit variance (fat tails without changing the vol level)."""
    return rng.standard_t(df, size) * np.sqrt((df - 2.0) / df)
