"""The feature catalog: every dataset column declared exactly once.

A family module declares its columns with ``FeatureSpec`` and registers a ``FeatureFamily``
(name, raw sources, lookback, compute function). The expected column set of ``ml_dataset``
is a pure function of the enabled families; the model's input size comes from it, and
``docs/features.md`` is generated from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl

META_COLUMNS: tuple[str, ...] = ("date", "code", "sector33", "market_segment", "universe")
HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
TARGET_COLUMNS: tuple[str, ...] = tuple(f"target_{h}d" for h in HORIZONS)
# A recursive family's window starts on the first session of the year that holds the session
# ``lookback`` before the date (``stages.windows.seed_anchor``), so it reaches back at most a
# year of sessions further than its lookback; JPX years have fewer than 250 sessions.
SEED_ANCHOR_REACH = 250


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    description: str
    lookback: int = 0  # trading days of history the value needs (0: same day only)
    dtype: pl.DataType = field(default_factory=pl.Float32)


@dataclass(frozen=True)
class FeatureInputs:
    """What a family computes from.

    ``raw`` maps raw asset names (``raw_daily_quotes``, ...) to lazy frames holding every row
    of that source dated (by its partition date) in ``[history_start, end]``; ``dates`` are the
    trading days to emit rows for (the tail of that window). A family must emit one row per
    (date, code) of the universe on ``dates`` — the universe is the set of codes with a bar
    row in ``raw_daily_quotes`` that day — and may use, for a row dated t, only information
    published on or before t (DESIGN §6).
    """

    raw: Mapping[str, pl.LazyFrame]
    dates: tuple[dt.date, ...]
    calendar: tuple[dt.date, ...]  # every trading day of the window, ascending


@dataclass(frozen=True)
class FeatureFamily:
    name: str  # "price"
    sources: tuple[str, ...]  # raw asset names it reads
    lookback: int  # trading days of history it needs before the first emitted date
    features: tuple[FeatureSpec, ...]
    compute: Callable[[FeatureInputs], pl.LazyFrame]  # -> date, code, *feature columns
    description: str = ""
    # True when a value depends on where the loaded window starts, not only on its lookback:
    # exponential averages seeded at a series' first bar, running sums. Such a family computes
    # each date from a window starting on a fixed anchor, the same in a nightly run and in a
    # backfill (a window starting ``lookback`` sessions back would seed differently every day).
    recursive: bool = False

    @property
    def asset(self) -> str:
        return f"features_{self.name}"

    @property
    def history(self) -> int:
        """Sessions of raw partitions a date may read: its lookback, plus the anchor's reach
        for a recursive family."""
        return self.lookback + (SEED_ANCHOR_REACH if self.recursive else 0)

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.features]


class CatalogError(ValueError):
    pass


class FeatureCatalog:
    def __init__(self, families: Iterable[FeatureFamily]) -> None:
        self.families: dict[str, FeatureFamily] = {}
        seen: dict[str, str] = {}
        for family in families:
            if family.name in self.families:
                raise CatalogError(f"family {family.name!r} registered twice")
            for spec in family.features:
                if spec.name in seen:
                    raise CatalogError(
                        f"column {spec.name!r} declared by {seen[spec.name]!r} and {family.name!r}"
                    )
                if spec.name in META_COLUMNS or spec.name in TARGET_COLUMNS:
                    raise CatalogError(f"column {spec.name!r} of {family.name!r} is reserved")
                seen[spec.name] = family.name
            self.families[family.name] = family

    def family(self, name: str) -> FeatureFamily:
        try:
            return self.families[name]
        except KeyError:
            raise CatalogError(f"unknown feature family {name!r}; known: {sorted(self.families)}") from None

    def enabled(self, names: Iterable[str] | None = None) -> list[FeatureFamily]:
        if names is None:
            return list(self.families.values())
        wanted = set(names)
        for name in wanted:
            self.family(name)
        return [f for f in self.families.values() if f.name in wanted]

    def feature_columns(self, names: Iterable[str] | None = None) -> list[str]:
        return [c for fam in self.enabled(names) for c in fam.columns]

    def expected_columns(self, names: Iterable[str] | None = None) -> list[str]:
        """``ml_dataset``'s exact column list for the enabled families."""
        return [*META_COLUMNS, *self.feature_columns(names), *TARGET_COLUMNS]

    def specs(self, names: Iterable[str] | None = None) -> list[tuple[FeatureFamily, FeatureSpec]]:
        return [(fam, spec) for fam in self.enabled(names) for spec in fam.features]

    def hash(self, names: Iterable[str] | None = None) -> str:
        """Stable hash of the enabled column set (names, dtypes, lookbacks), for checkpoints."""
        h = hashlib.sha256()
        for fam, spec in self.specs(names):
            h.update(f"{fam.name}:{spec.name}:{spec.dtype}:{spec.lookback}\n".encode())
        return h.hexdigest()[:16]
