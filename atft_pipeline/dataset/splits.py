"""Date splits for the whole market: train / val / test with an embargo gap, walk-forward folds.

A row dated t carries targets up to the close of t+1+20, so the last train row's targets must
end before the first validation day: the gap between consecutive windows is at least
``1 + max(HORIZONS)`` trading days (the configured ``gap`` may be larger, never smaller).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atft_pipeline import calendar
from atft_pipeline.features.catalog import HORIZONS

MIN_GAP = 1 + max(HORIZONS)


class DateWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateWindow:
        if self.end < self.start:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")
        return self

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end

    def days(self) -> list[dt.date]:
        return calendar.trading_days(self.start, self.end)


class SplitConfig(BaseModel):
    """Train / validation / test windows by date, for the whole market at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: DateWindow
    val: DateWindow
    test: DateWindow
    gap: int = Field(default=MIN_GAP, ge=MIN_GAP, description="trading days between windows")

    @model_validator(mode="after")
    def _embargo(self) -> SplitConfig:
        for (a_name, a), (b_name, b) in (
            (("train", self.train), ("val", self.val)),
            (("val", self.val), ("test", self.test)),
        ):
            between = len(calendar.trading_days(a.end, b.start)) - 2
            if between < self.gap:
                raise ValueError(
                    f"only {max(between, 0)} trading days between {a_name} (ends {a.end}) and "
                    f"{b_name} (starts {b.start}); need >= {self.gap} so {a_name} targets "
                    f"(up to t+{MIN_GAP}) never reach into {b_name}"
                )
        return self

    def split_expr(self, column: str = "date") -> pl.Expr:
        """"train" / "val" / "test" (null in the embargo gaps) for a date column."""
        col = pl.col(column)
        return (
            pl.when(col.is_between(self.train.start, self.train.end)).then(pl.lit("train"))
            .when(col.is_between(self.val.start, self.val.end)).then(pl.lit("val"))
            .when(col.is_between(self.test.start, self.test.end)).then(pl.lit("test"))
            .otherwise(None)
        )

    def split_of(self, day: dt.date) -> str | None:
        for name in ("train", "val", "test"):
            if getattr(self, name).contains(day):
                return name
        return None

    @classmethod
    def from_dates(
        cls, days: Sequence[dt.date], val_fraction: float = 0.15, test_fraction: float = 0.15,
        gap: int = MIN_GAP,
    ) -> SplitConfig:
        """Chronological split of ``days`` (ascending trading days) with ``gap`` embargoes."""
        n = len(days)
        return cls.from_counts(days, int(n * val_fraction), int(n * test_fraction), gap)

    @classmethod
    def from_counts(
        cls, days: Sequence[dt.date], n_val: int, n_test: int, gap: int = MIN_GAP
    ) -> SplitConfig:
        """The last ``n_test`` days test, ``n_val`` before them val, the rest train."""
        n = len(days)
        n_train = n - n_val - n_test - 2 * gap
        if min(n_train, n_val, n_test) < 1:
            raise ValueError(f"{n} trading days are too few for train/val/test with gap {gap}")
        val_start = n_train + gap
        test_start = val_start + n_val + gap
        return cls(
            train=DateWindow(start=days[0], end=days[n_train - 1]),
            val=DateWindow(start=days[val_start], end=days[val_start + n_val - 1]),
            test=DateWindow(start=days[test_start], end=days[-1]),
            gap=gap,
        )


def walk_forward(
    days: Sequence[dt.date], n_folds: int, train_days: int, val_days: int, test_days: int,
    gap: int = MIN_GAP,
) -> list[SplitConfig]:
    """Expanding-origin folds: each fold's windows slide forward by ``test_days``.

    The last fold's test window ends at the last day; folds never overlap their own embargo.
    """
    span = train_days + val_days + test_days + 2 * gap
    last_start = len(days) - span
    if n_folds < 1 or last_start < 0:
        raise ValueError(f"{len(days)} days cannot hold a fold of {span} days")
    folds = []
    for k in range(n_folds):
        offset = last_start - (n_folds - 1 - k) * test_days
        if offset < 0:
            raise ValueError(f"{n_folds} folds of step {test_days} do not fit in {len(days)} days")
        window = days[offset : offset + span]
        folds.append(SplitConfig.from_counts(window, val_days, test_days, gap))
    return folds
