"""Configuration of the synthetic market: size, dates, noise levels and planted-signal strengths.

Every number that shapes the market is a validated field here (documented defaults). Signal
strengths are daily returns: ``<signal>_strength`` is the drift a *persistent* one-sigma signal
adds to each future day, which is the same as the total return an isolated one-sigma impulse
adds over its whole decay (impulse drift ``strength * (1 - rho)`` with ``rho = 0.5 **
(1 / half_life)``). ``docs/sandbox.md`` explains every field and the measured oracle RankIC.
"""

from __future__ import annotations

import datetime as dt
import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

# markets/calendar extends to the end of the year after ``end``; the XTKS calendar used by
# atft_pipeline.calendar covers 2000-01-04 .. 2030-12-30.
EARLIEST_START = dt.date(2000, 1, 4)
LATEST_END = dt.date(2028, 12, 31)
MIN_TRADING_SPAN_DAYS = 90  # calendar days: enough for momentum and a few quarterly reports
# J-Quants delivers margin interest daily for applications from this date (2026-09 spec).
DAILY_MARGIN_INTEREST_FROM = dt.date(2026, 9, 25)


class MarketConfig(BaseModel):
    """Everything that determines a synthetic market; the same config gives the same tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(7, description="Seed of every random stream (numpy PCG64).")
    n_stocks: int = Field(300, ge=10, le=8000, description="Number of issues over the period.")
    start: dt.date = Field(dt.date(2021, 1, 4), description="First trading day (inclusive).")
    end: dt.date = Field(dt.date(2023, 12, 29), description="Last trading day (inclusive).")

    margin_interest_daily_from: dt.date = Field(
        DAILY_MARGIN_INTEREST_FROM,
        description=(
            "First application date of daily margin interest (rows every session, published "
            "the next session with PubDate and *Val amounts); weekly rows before it. The API "
            "switched on 2026-09-25; a short market may move it inside its period."
        ),
    )

    # --- events a nightly simulation must cross -----------------------------------------
    event_window_start: dt.date | None = Field(
        None,
        description=(
            "From this date to the end, plant the events a nightly run must handle: "
            "event_splits splits and reverse splits, late filings and restatements. None: "
            "only the events drawn at their usual rates."
        ),
    )
    event_splits: int = Field(
        4, ge=0, le=50, description="Splits (even) and reverse splits (odd) in the window."
    )
    event_late_filing_share: float = Field(
        0.3,
        ge=0,
        le=1,
        description=(
            "Share of after-close disclosures in the window moved after 18:00 or to no time "
            "(published at the 24:30 update)."
        ),
    )
    event_restatements: int = Field(
        3, ge=0, le=50, description="Restatements of earlier reports disclosed in the window."
    )

    # --- noise -------------------------------------------------------------------------
    market_vol: float = Field(
        0.18, gt=0, lt=1.5, description="Long-run annualized volatility of the market factor."
    )
    market_vol_reaction: float = Field(
        0.08, gt=0, lt=0.5, description="GARCH(1,1) alpha of the market factor."
    )
    market_vol_persistence: float = Field(
        0.98, gt=0, lt=1, description="GARCH(1,1) alpha + beta of the market factor."
    )
    tail_df: float = Field(
        4.5, gt=2.05, le=100, description="Student-t degrees of freedom of every shock."
    )
    sector_vol: float = Field(0.006, ge=0, lt=0.1, description="Daily vol of each sector factor.")
    idio_vol: float = Field(
        0.016, gt=0, lt=0.2, description="Median daily idiosyncratic vol across stocks."
    )
    idio_vol_dispersion: float = Field(
        0.35, ge=0, lt=2, description="Cross-sectional log-sd of the idiosyncratic vol levels."
    )
    idio_sv_vol: float = Field(
        0.05, ge=0, lt=1, description="Daily innovation sd of each stock's log-volatility AR(1)."
    )

    # --- planted signals ----------------------------------------------------------------
    reversal_strength: float = Field(
        0.0015, ge=0, lt=0.05, description="Short-term reversal of the last 5 days' return."
    )
    reversal_half_life: float = Field(1.5, gt=0, le=250)
    momentum_strength: float = Field(
        0.0006, ge=0, lt=0.05, description="Momentum of the return from t-64 to t-5."
    )
    momentum_half_life: float = Field(20.0, gt=0, le=250)
    margin_strength: float = Field(
        0.0030, ge=0, lt=0.05, description="Weekly margin long/short ratio change (negative)."
    )
    margin_half_life: float = Field(4.0, gt=0, le=250)
    earnings_strength: float = Field(
        0.025, ge=0, lt=0.2, description="Post-earnings drift of the profit surprise."
    )
    earnings_half_life: float = Field(15.0, gt=0, le=250)
    peer_strength: float = Field(
        0.0012, ge=0, lt=0.05, description="Lead-lag from hidden peers' last 3 days' return."
    )
    peer_half_life: float = Field(1.5, gt=0, le=250)
    n_peers: int = Field(3, ge=1, le=10, description="Hidden peers per stock.")
    earnings_reaction: float = Field(
        1.5,
        ge=0,
        lt=10,
        description="Announcement-day move per unit surprise, in units of the stock's daily vol.",
    )

    @model_validator(mode="after")
    def _check_dates(self) -> MarketConfig:
        if self.start < EARLIEST_START or self.end > LATEST_END:
            raise ValueError(
                f"sandbox market dates must lie in {EARLIEST_START}..{LATEST_END} "
                f"(markets/calendar runs to the end of the following year); got "
                f"{self.start}..{self.end}"
            )
        if (self.end - self.start).days < MIN_TRADING_SPAN_DAYS:
            raise ValueError(
                f"sandbox market needs at least {MIN_TRADING_SPAN_DAYS} calendar days; got "
                f"{self.start}..{self.end}"
            )
        if self.event_window_start is not None and not (
            self.start < self.event_window_start < self.end
        ):
            raise ValueError(
                f"event_window_start {self.event_window_start} must lie inside "
                f"{self.start}..{self.end}"
            )
        if self.market_vol_reaction >= self.market_vol_persistence:
            raise ValueError("market_vol_reaction must be below market_vol_persistence")
        return self

    @property
    def years(self) -> float:
        return (self.end - self.start).days / 365.25


def decay(half_life: float) -> float:
    """Daily decay factor of a kernel with the given half-life in trading days."""
    return math.pow(0.5, 1.0 / half_life)
