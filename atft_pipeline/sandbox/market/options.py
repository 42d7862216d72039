"""``derivatives/bars/daily/options/225``: a daily Nikkei 225 option chain.

The Nikkei 225 follows TOPIX (beta 1.05 plus tracking noise) from 27,500. Every session lists
the three nearest contract months still trading (SQ day = the month's second Friday, or the
session before it if closed; last trading day = the session before SQ), puts (PCDiv "1") and
calls ("2") at 125-yen strikes around the money for the front month and 250-yen strikes for
the others. Implied vols have a term structure from the market factor's GARCH variance
(short-dated vol = 1.1 x the conditional vol, reverting to 1.1 x the long-run vol) and a
put skew / smile; prices are Black-76 on the forward. Settle is the theoretical price on the
option tick grid (>= 1 yen). Untraded series show 0 for their prices, as the API does.
Codes are synthetic 9-digit strings: "1", put 3 / call 4, year digit, month, strike / 125.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
from scipy.special import ndtr

from atft_pipeline import calendar
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.prices import TRADING_DAYS_PER_YEAR
from atft_pipeline.sandbox.market.rng import stream
from atft_pipeline.sandbox.market.timeline import Timeline

NIKKEI_START = 27500.0
NIKKEI_BETA = 1.05
CONTRACT_MONTHS = 3
STRIKES = ((125.0, 16), (250.0, 10), (250.0, 10))  # (spacing, strikes each side) per month
VOL_PREMIUM = 1.1  # implied over realized vol
INTEREST_RATE = 0.0023  # IR (annual), reported in percent
MULTIPLIER = 1000  # yen per index point
EMERGENCY_MARGIN_NORMAL = "002"  # settlement-price calculation (no emergency margin)


def special_quotation_day(year: int, month: int) -> dt.date:
    """Second Friday of the month, or the last session before it when it is a holiday."""
    first = dt.date(year, month, 1)
    friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 7)
    return friday if calendar.is_trading_day(friday) else calendar.shift_trading_days(friday, -1)


def _option_tick(price: np.ndarray) -> np.ndarray:
    return np.where(price <= 100, 1.0, np.where(price <= 1000, 5.0, 10.0))


def _to_tick(price: np.ndarray, up: bool | None = None) -> np.ndarray:
    tick = _option_tick(price)
    rounded = (
        np.ceil(price / tick)
        if up
        else (np.floor(price / tick) if up is False else np.round(price / tick))
    )
    return np.maximum(rounded * tick, 1.0)


def _contracts(day: dt.date) -> list[tuple[int, int, dt.date, dt.date]]:
    """(year, month, last trading day, SQ day) of the nearest months still trading."""
    out = []
    year, month = day.year, day.month
    while len(out) < CONTRACT_MONTHS:
        sq = special_quotation_day(year, month)
        last = calendar.shift_trading_days(sq, -1)
        if last >= day:
            out.append((year, month, last, sq))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def nikkei_closes(config: MarketConfig, topix_close: np.ndarray) -> np.ndarray:
    rng = stream(config.seed, "nikkei")
    log_ret = np.diff(np.log(np.r_[1800.0, topix_close]))
    return NIKKEI_START * np.exp(
        np.cumsum(NIKKEI_BETA * log_ret + 0.003 * rng.standard_normal(len(log_ret)))
    )


def index_options_table(
    config: MarketConfig, timeline: Timeline, topix_close: np.ndarray, market_var: np.ndarray
) -> pl.DataFrame:
    rng = stream(config.seed, "options")
    underlying = nikkei_closes(config, topix_close)
    long_vol = VOL_PREMIUM * config.market_vol

    # One entry per (session, contract month), then one row per strike and put/call.
    chains = []
    for day_index, day in enumerate(timeline.days):
        for rank, (year, month, last, sq) in enumerate(_contracts(day)):
            chains.append((day_index, rank, year, month, last, sq))
    day_index = np.array([c[0] for c in chains])
    rank = np.array([c[1] for c in chains])
    tenor = np.array([max((c[5] - timeline.days[c[0]]).days, 1) / 365.0 for c in chains])
    spacing = np.array([STRIKES[r][0] for r in rank])
    side = np.array([STRIKES[r][1] for r in rank])
    spot = underlying[day_index]
    now_vol = VOL_PREMIUM * np.sqrt(market_var[day_index + 1] * TRADING_DAYS_PER_YEAR)
    atm = long_vol + (now_vol - long_vol) * np.exp(-tenor / 0.25)
    forward = spot * np.exp(INTEREST_RATE * tenor)

    width = 2 * side + 1
    chain = np.repeat(np.arange(len(chains)), 2 * width)
    offset = np.concatenate([np.r_[np.arange(-s, s + 1), np.arange(-s, s + 1)] for s in side])
    put = np.concatenate([np.r_[np.ones(w, dtype=bool), np.zeros(w, dtype=bool)] for w in width])
    strike = np.round(spot[chain] / spacing[chain]) * spacing[chain] + spacing[chain] * offset
    m = len(chain)

    t_years, f, vol = tenor[chain], forward[chain], atm[chain]
    x = np.clip(np.log(strike / f) / (vol * np.sqrt(t_years)), -4, 4)
    iv = vol * np.maximum(1 - 0.1 * x + 0.04 * x**2, 0.3)
    sd = iv * np.sqrt(t_years)
    d1 = (np.log(f / strike) + 0.5 * sd**2) / sd
    d2 = d1 - sd
    discount = np.exp(-INTEREST_RATE * t_years)
    theo = np.where(
        put,
        discount * (strike * ndtr(-d2) - f * ndtr(-d1)),
        discount * (f * ndtr(d1) - strike * ndtr(d2)),
    )
    settle = _to_tick(theo)

    front = rank[chain] == 0
    activity = np.where(front, 2000.0, 400.0) * np.exp(-0.5 * x**2 + 0.5 * rng.standard_normal(m))
    volume = rng.poisson(activity).astype(float)
    traded = volume > 0
    night = traded & (rng.random(m) < 0.6)
    close = _to_tick(settle * (1 + 0.03 * rng.standard_normal(m)))
    open_ = _to_tick(settle * (1 + 0.06 * rng.standard_normal(m)))
    high = _to_tick(np.maximum(open_, close) * (1 + np.abs(0.05 * rng.standard_normal(m))), up=True)
    low = _to_tick(np.minimum(open_, close) * (1 - np.abs(0.05 * rng.standard_normal(m))), up=False)
    night_close = np.clip(_to_tick(open_ * (1 + 0.02 * rng.standard_normal(m))), low, high)
    day_open = np.clip(_to_tick(night_close * (1 + 0.01 * rng.standard_normal(m))), low, high)
    night_high = np.minimum(_to_tick(np.maximum(open_, night_close) * 1.01, up=True), high)
    night_low = np.maximum(_to_tick(np.minimum(open_, night_close) * 0.99, up=False), low)
    open_interest = np.round(
        np.where(front, 20000.0, 8000.0) * np.exp(-0.25 * x**2 + 0.3 * rng.standard_normal(m))
    )

    def shown(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.where(mask, values, 0.0)  # the API reports 0 for sessions without trades

    days = pl.Series(timeline.days, dtype=pl.Date)
    year = np.array([c[2] for c in chains])[chain]
    month = np.array([c[3] for c in chains])[chain]
    frame = pl.DataFrame(
        {
            "Date": days.gather(day_index[chain]),
            "_put": put,
            "_year": year % 10,
            "_month": month,
            "_year_full": year,
            "_strike_code": (strike // 125).astype(np.int64) % 10000,
            "O": shown(open_, traded),
            "H": shown(high, traded),
            "L": shown(low, traded),
            "C": shown(close, traded),
            "EO": shown(open_, night),
            "EH": shown(night_high, night),
            "EL": shown(night_low, night),
            "EC": shown(night_close, night),
            "AO": shown(np.where(night, day_open, open_), traded),
            "AH": shown(high, traded),
            "AL": shown(low, traded),
            "AC": shown(close, traded),
            "Vo": volume,
            "OI": open_interest,
            "Va": shown(np.round(volume * (open_ + high + low + close) / 4 * MULTIPLIER), traded),
            "Strike": strike,
            "VoOA": np.floor(volume * 0.02),
            "LTD": pl.Series([c[4] for c in chains], dtype=pl.Date).gather(chain),
            "SQD": pl.Series([c[5] for c in chains], dtype=pl.Date).gather(chain),
            "Settle": settle,
            "Theo": np.round(theo, 4),
            "BaseVol": np.round(100 * vol, 4),
            "UnderPx": np.round(spot[chain], 2),
            "IV": np.round(100 * iv, 4),
            "IR": np.full(m, 100 * INTEREST_RATE),
        }
    )
    two = pl.col("_month").cast(pl.String).str.zfill(2)
    return frame.with_columns(
        pl.concat_str(
            pl.lit("1"),
            pl.when(pl.col("_put")).then(pl.lit("3")).otherwise(pl.lit("4")),
            pl.col("_year").cast(pl.String),
            two,
            pl.col("_strike_code").cast(pl.String).str.zfill(4),
        ).alias("Code"),
        pl.concat_str(pl.col("_year_full").cast(pl.String), pl.lit("-"), two).alias("CM"),
        pl.lit(EMERGENCY_MARGIN_NORMAL).alias("EmMrgnTrgDiv"),
        pl.when(pl.col("_put")).then(pl.lit("1")).otherwise(pl.lit("2")).alias("PCDiv"),
    ).drop("_put", "_year", "_month", "_year_full", "_strike_code")
