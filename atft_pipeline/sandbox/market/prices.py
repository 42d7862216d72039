"""The daily price process, the planted drift and the weekly margin balances it drives.

Simple return of stock i on session s::

    r = mu + clip(beta * m + loading * f_sector + sigma * e + jump, -c, c)

- ``m``: market factor, GARCH(1,1) with unit-variance Student-t shocks (fat tails, vol
  clustering); ``f_sector``: one factor per 33-sector, t shocks scaled with the market regime;
  ``sigma * e``: idiosyncratic noise with a per-stock level and a log-AR(1) stochastic vol.
- ``jump``: the announcement-day move, ``earnings_reaction * sigma * news`` with the
  document's latent standardized news (symmetric, independent of everything earlier), on the
  disclosure day or the next session when disclosed at/after the close.
- ``mu = vol_scale * sum_k G_k(s-2)``: the planted drift (``signals``), known two sessions ahead.
- ``c``: the symmetric part of the daily price-limit band left after the drift. Clipping a
  symmetric shock symmetrically keeps its mean at zero, and prices are rounded to the tick grid
  with unbiased stochastic rounding, so ``E[P_s | past] = base * (1 + mu)`` holds exactly
  (except for issues trading at 1 yen, which cannot fall further).

Prices keep evolving through halts (the bar is null, the next close carries the move). The
signal engine is stepped every session with exactly the values the tables will publish, and
the oracle is recorded from its state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from atft_pipeline.jquants.sources import WEEKLY_MARGIN_PUBLICATION_LAG
from atft_pipeline.sandbox.market.actions import CorporateActions
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.oracle import HORIZONS, expected_returns
from atft_pipeline.sandbox.market.rng import stream, student_t
from atft_pipeline.sandbox.market.signals import SignalEngine, SignalParams, earnings_events
from atft_pipeline.sandbox.market.ticks import limit_prices, stochastic_round
from atft_pipeline.sandbox.market.timeline import Timeline, close_time
from atft_pipeline.sandbox.market.universe import SECTOR_CODES, Universe

TRADING_DAYS_PER_YEAR = 245
_SV_PERSISTENCE = 0.97  # daily AR(1) coefficient of each stock's log-vol
# Margin balances: retail buys dips (longs rise after falls), shorts sell rallies.
_MARGIN_REVERSION = (0.02, 0.03)  # daily pull of log long / log short to their levels
_MARGIN_RETURN_RESPONSE = (-2.0, 1.5)
_MARGIN_NOISE = (0.025, 0.04)
MARGIN_ISSUES = ("1", "2")  # margin (信用) and loan-margin (貸借) issues have margin data


@dataclass(frozen=True)
class PricePaths:
    """[T, N] results of the simulation (NaN where there is no bar / no trade)."""

    close: np.ndarray  # raw close on the tick grid; NaN when halted or not listed
    base: np.ndarray  # previous close x today's AdjFactor (the limit / open reference)
    upper: np.ndarray  # limit-up price
    lower: np.ndarray  # limit-down price
    ret: np.ndarray  # the session's return (also on halted days)
    sigma: np.ndarray  # the session's idiosyncratic vol (intraday ranges, volumes)
    market_var: np.ndarray  # [T + 1] conditional variance of the market factor
    margin_long: np.ndarray  # latent margin balances (shares), every session
    margin_short: np.ndarray
    weekly_long: np.ndarray  # [weeks, N] published weekly LongVol (NaN: no row)
    weekly_short: np.ndarray
    oracle: np.ndarray  # [T, N, len(HORIZONS)]


@dataclass(frozen=True)
class EarningsInputs:
    """Statement information by session: the public signal and the price reaction.

    ``public``: the ``earnings`` signal z of each (DiscDate, Code), computed from the published
    rows (``signals.earnings_events``) and used in the alpha on the DiscDate (the document is
    public that evening). ``reaction``: the documents' latent news, moving the price on the
    DiscDate if disclosed before the close, else on the next session.
    """

    public: dict[int, tuple[np.ndarray, np.ndarray]]  # session -> (stocks, z)
    reaction: dict[int, tuple[np.ndarray, np.ndarray]]  # session -> (stocks, news)

    @classmethod
    def from_statements(
        cls, fins: pl.DataFrame, news: pl.DataFrame, codes: np.ndarray, timeline: Timeline
    ) -> EarningsInputs:
        index = pl.DataFrame({"Code": codes.tolist(), "_stock": np.arange(len(codes))})
        events = earnings_events(fins).join(index, on="Code")
        public = _by_session(timeline, events["DiscDate"], events["_stock"], events["z"], 0)
        moved = (
            fins.select("DiscNo", "DiscDate", "DiscTime", "Code")
            .join(news.filter(pl.col("news") != 0), on="DiscNo")
            .join(index, on="Code")
        )
        after_close = np.array(
            [
                time is None or time >= close_time(day)  # no time given: after the close
                for day, time in moved.select("DiscDate", "DiscTime").iter_rows()
            ],
            dtype=np.int64,
        )
        reaction = _by_session(
            timeline, moved["DiscDate"], moved["_stock"], moved["news"], after_close
        )
        return cls(public, reaction)


def _by_session(
    timeline: Timeline,
    dates: pl.Series,
    stocks: pl.Series,
    values: pl.Series,
    delay: np.ndarray | int,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Group (stock, value) pairs by session index (date's session + delay), summing repeats."""
    day = np.array([timeline.index_on_or_after(d) for d in dates.to_list()], dtype=np.int64) + delay
    frame = pl.DataFrame({"day": day, "stock": stocks.to_numpy(), "value": values.to_numpy()})
    grouped = (
        frame.filter(pl.col("day") < len(timeline))
        .group_by("day", "stock")
        .agg(pl.col("value").sum())
        .sort("day", "stock")
    )
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for (d,), part in grouped.group_by("day", maintain_order=True):
        out[int(d)] = (part["stock"].to_numpy(), part["value"].to_numpy())
    return out


def simulate_prices(
    config: MarketConfig,
    universe: Universe,
    timeline: Timeline,
    actions: CorporateActions,
    earnings: EarningsInputs,
    params: SignalParams,
) -> PricePaths:
    rng = stream(config.seed, "prices")
    t, n, k = len(timeline), universe.n, len(params.decay)
    shape = (t, n)
    close = np.full(shape, np.nan)
    base_out, upper_out, lower_out = (
        np.full(shape, np.nan),
        np.full(shape, np.nan),
        np.full(shape, np.nan),
    )
    ret_out = np.zeros(shape, dtype=np.float32)
    sigma_out = np.zeros(shape, dtype=np.float32)
    long_out = np.zeros(shape, dtype=np.float32)
    short_out = np.zeros(shape, dtype=np.float32)
    oracle = np.zeros((t, n, len(HORIZONS)))
    market_var = np.zeros(t + 1)

    # Market factor GARCH(1,1) around the configured long-run variance.
    long_run = config.market_vol**2 / TRADING_DAYS_PER_YEAR
    alpha = config.market_vol_reaction
    beta_g = config.market_vol_persistence - alpha
    omega = long_run * (1.0 - config.market_vol_persistence)
    h, shock = long_run, 0.0
    sv_sd = config.idio_sv_vol / np.sqrt(1 - _SV_PERSISTENCE**2)
    log_vol = rng.normal(0.0, sv_sd, n)

    margin_ok = np.isin(universe.margin_code, MARGIN_ISSUES)
    long_level = np.log(universe.shares * universe.turnover * rng.uniform(2, 8, n))
    short_level = long_level + np.log(
        np.where(universe.margin_code == "2", rng.uniform(0.15, 0.6, n), rng.uniform(0.02, 0.1, n))
    )
    log_long = long_level + rng.normal(0, 0.2, n)
    log_short = short_level + rng.normal(0, 0.3, n)
    week_end = {int(d): w for w, d in enumerate(timeline.week_ends)}
    weekly_long = np.full((len(timeline.week_ends), n), np.nan)
    weekly_short = np.full((len(timeline.week_ends), n), np.nan)
    no_margin = np.full(n, np.nan)

    engine = SignalEngine(params)
    drift_state = [np.zeros((k, n)), np.zeros((k, n))]  # G(s-2), G(s-1)
    price = universe.price.astype(float).copy()
    for day in range(t):
        listed = (universe.listing_day <= day) & (day <= universe.delisting_day)
        factor = actions.adj_factor[day]
        base = price * factor
        upper, lower = limit_prices(base)
        mu = params.vol_scale * drift_state[0].sum(axis=0)

        h = omega + alpha * shock**2 + beta_g * h
        shock = np.sqrt(h) * student_t(rng, config.tail_df, 1)[0]
        regime = np.sqrt(h / long_run)
        sector_shock = (
            config.sector_vol * np.sqrt(regime) * student_t(rng, config.tail_df, len(SECTOR_CODES))
        )
        log_vol = _SV_PERSISTENCE * log_vol + config.idio_sv_vol * rng.standard_normal(n)
        sigma = universe.idio_vol * np.exp(log_vol - 0.5 * sv_sd**2) * np.sqrt(regime)
        noise = (
            universe.beta * shock
            + universe.sector_loading * sector_shock[universe.sectors_at(day)]
            + sigma * student_t(rng, config.tail_df, n)
        )
        if day in earnings.reaction:
            stocks, z = earnings.reaction[day]
            noise[stocks] += config.earnings_reaction * sigma[stocks] * z
        room = np.maximum(np.minimum(upper / base - 1.0, 1.0 - lower / base) - np.abs(mu), 0.0)
        ret = mu + np.clip(noise, -room, room)
        # A price never falls below 1 yen (the only place the rounding is not mean-preserving;
        # it binds only for issues already trading at a few yen).
        price = np.where(
            listed, np.maximum(stochastic_round(base * (1.0 + ret), rng.random(n)), 1.0), price
        )

        observed = listed & ~actions.halted[day]
        close[day] = np.where(observed, price, np.nan)
        base_out[day], upper_out[day], lower_out[day] = base, upper, lower
        ret_out[day], sigma_out[day] = ret, sigma
        market_var[day] = h

        demeaned = ret - ret[listed].mean() if listed.any() else ret
        log_long += (
            _MARGIN_REVERSION[0] * (long_level - log_long)
            + _MARGIN_RETURN_RESPONSE[0] * demeaned
            + _MARGIN_NOISE[0] * rng.standard_normal(n)
        )
        log_short += (
            _MARGIN_REVERSION[1] * (short_level - log_short)
            + _MARGIN_RETURN_RESPONSE[1] * demeaned
            + _MARGIN_NOISE[1] * rng.standard_normal(n)
        )
        long_out[day], short_out[day] = np.exp(log_long), np.exp(log_short)
        if day in week_end:  # application date: balances as of this close, in 100-share lots
            rows = listed & margin_ok
            w = week_end[day]
            weekly_long[w, rows] = np.maximum(np.round(np.exp(log_long[rows]), -2), 100.0)
            weekly_short[w, rows] = np.maximum(np.round(np.exp(log_short[rows]), -2), 100.0)

        application = day - WEEKLY_MARGIN_PUBLICATION_LAG
        w = week_end.get(application)
        earnings_z = np.zeros(n)
        if day in earnings.public:
            stocks, z = earnings.public[day]
            earnings_z[stocks] = z
        engine.step(
            close[day],
            np.where(listed, factor, 1.0),
            listed,
            weekly_long[w] if w is not None else no_margin,
            weekly_short[w] if w is not None else no_margin,
            earnings_z,
        )
        oracle[day] = expected_returns(engine.state, params).T
        drift_state = [drift_state[1], engine.state]
    market_var[t] = omega + alpha * shock**2 + beta_g * h
    return PricePaths(
        close,
        base_out,
        upper_out,
        lower_out,
        ret_out,
        sigma_out,
        market_var,
        long_out,
        short_out,
        weekly_long,
        weekly_short,
        oracle,
    )
