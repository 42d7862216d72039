"""Positioning tables: weekly margin balances, daily margin alerts, short selling.

- ``markets/margin-interest``: balances of margin / loan-margin issues on each weekly
  application date (the last session of a week with >= 3 sessions), split into negotiable
  and standardized margin (``Neg + Std = total``; non-loan issues have no standardized
  shorts). A week is published 2 sessions after its application date; weeks not yet
  published at the end of the data are absent. From ``margin_interest_daily_from`` on (the
  API's 2026-09 daily regime) every session is an application date, published the next
  session with ``PubDate`` and the balances' yen amounts (``*Val``). The balances react to
  returns (longs rise after falls, shorts after rises) plus their own noise; their weekly
  change of log(long / short) is the planted ``margin`` signal.
- ``markets/margin-alert``: issues under daily publication (an extreme 5-session move or a
  margin-buying surge), published the next session (``AppDate`` = previous session), with
  TSE / JSF reasons, regulation class and rare corrections (same ``AppDate``, later
  ``PubDate``).
- ``markets/short-ratio``: per 33-sector and session, selling turnover split into long sales,
  short sales with and without price restriction (short share ~40 %).
- ``markets/short-sale-report``: positions of >= 0.5 % of shares outstanding held by funds,
  reported when first reaching 0.5 %, on changes of >= 0.1 point and when falling below 0.5 %;
  disclosed 1-2 sessions after the calculation date.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from atft_pipeline import calendar
from atft_pipeline.jquants.endpoints import ENDPOINTS
from atft_pipeline.jquants.sources import WEEKLY_MARGIN_PUBLICATION_LAG
from atft_pipeline.sandbox.market.actions import CorporateActions
from atft_pipeline.sandbox.market.bars import LOT
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.prices import MARGIN_ISSUES, PricePaths
from atft_pipeline.sandbox.market.rng import stream
from atft_pipeline.sandbox.market.timeline import Timeline
from atft_pipeline.sandbox.market.universe import SECTOR_CODES, Universe

ALERT_MOVE_SIGMAS = 5.0  # |5-session move| beyond this many 5-session sigmas starts an alert
ALERT_MARGIN_SURGE = 1.5  # long balance vs its 60-session mean that starts an alert
ALERT_MIN_SESSIONS = 10
ALERT_RESTRICT_SESSIONS = 20  # alerts lasting longer become margin regulations
ALERT_CORRECTION_RATE = 0.003
SHORT_REPORT_THRESHOLD = 0.5  # percent of shares outstanding
SHORT_REPORT_STEP = 0.1
_SHORT_CAP_PERCENT = 15.0  # the largest single position, percent of shares outstanding
_LOG_SHORT_CAP = float(np.log(_SHORT_CAP_PERCENT))

# Fictional short sellers: (name, address, discretionary manager, its address, fund name).
_SHORT_SELLERS = (
    ("Aokawa Harbor Capital LP", "1 Quay Street, George Town, Grand Cayman", None, None, None),
    (
        "Kestrel Ridge Master Fund Ltd",
        "PO Box 309, Ugland House, Grand Cayman",
        "Kestrel Ridge Partners LLP",
        "20 Fenchurch Row, London",
        "Kestrel Ridge Master Fund",
    ),
    ("Northgate Quantitative Strategies", "500 Park Crescent, New York, NY", None, None, None),
    ("Silver Pine Securities plc", "14 Canal Wharf, London", None, None, None),
    (
        "Marlow Bay Opportunities Fund",
        "3 Harbour Road, Hamilton, Bermuda",
        "Marlow Bay Advisers Ltd",
        "8 Old Broad Lane, London",
        "Marlow Bay Opportunities Fund",
    ),
    ("Tessaly Global Markets AG", "Bahnhofgasse 12, Zurich", None, None, None),
    (
        "Blue Heron Absolute Return Fund",
        "2 Church Lane, Dublin 2",
        "Blue Heron Investment Management",
        "44 Tower View, Singapore",
        "Blue Heron Absolute Return",
    ),
    ("Crestline Arbitrage Ltd", "PO Box 11, Road Town, Tortola", None, None, None),
    (
        "Orchard Point Capital Management",
        "77 Bay Terrace, Hong Kong",
        "Orchard Point Capital Management",
        "77 Bay Terrace, Hong Kong",
        "Orchard Point Asia Fund",
    ),
    ("Vantage Cove Partners", "12 Market Place, Stamford, CT", None, None, None),
    (
        "Ironbridge Equity Long/Short Fund",
        "1 Royal Walk, St Helier, Jersey",
        "Ironbridge Asset Management LLP",
        "9 Mayfield Street, London",
        "Ironbridge Japan L/S",
    ),
    ("Seven Lakes Investments", "Marunouchi 2-7-3, Chiyoda-ku, Tokyo", None, None, None),
    ("Pelham Square Trading LLC", "101 Lake Avenue, Chicago, IL", None, None, None),
    (
        "Greyfriars Event Driven Fund",
        "6 Castle Hill, Luxembourg",
        "Greyfriars Capital SA",
        "6 Castle Hill, Luxembourg",
        "Greyfriars Event Driven",
    ),
    ("Halcyon Reef Asset Management", "18 Raffles Quay, Singapore", None, None, None),
    (
        "Westmere Global Macro Fund",
        "4 Harbour Drive, George Town, Grand Cayman",
        "Westmere Advisors LP",
        "350 Madison Row, New York, NY",
        "Westmere Global Macro",
    ),
)

_SHORT_WARMUP = 120  # sessions of position history simulated before the first session


def _session(timeline: Timeline, day: int) -> dt.date | None:
    """Session ``day`` of the timeline, counting back before its start; None for no report."""
    if day < -_SHORT_WARMUP:
        return None
    return timeline.days[day] if day >= 0 else calendar.shift_trading_days(timeline.days[0], day)


def _negotiable_shares(
    rng: np.random.Generator, universe: Universe
) -> tuple[np.ndarray, np.ndarray]:
    """Per-stock share of negotiable margin in long / short balances."""
    long_share = rng.uniform(0.05, 0.35, universe.n)
    # Non-loan (信用) issues cannot be sold short on standardized margin.
    short_share = np.where(universe.margin_code == "2", rng.uniform(0.05, 0.3, universe.n), 1.0)
    return long_share, short_share


def _split(total: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    negotiable = np.minimum(np.round(total * share / LOT) * LOT, total)
    return negotiable, total - negotiable


def margin_interest_table(
    config: MarketConfig, universe: Universe, timeline: Timeline, paths: PricePaths
) -> pl.DataFrame:
    """Weekly rows (no PubDate, no amounts) for application dates before
    ``config.margin_interest_daily_from``, daily rows (PubDate = next session, *Val in yen at
    the application day's close) from it on; only rows published inside the period."""
    rng = stream(config.seed, "margin")
    long_share, short_share = _negotiable_shares(rng, universe)
    days = pl.Series(timeline.days, dtype=pl.Date)
    daily_from = timeline.index_on_or_after(config.margin_interest_daily_from)
    published = (timeline.week_ends + WEEKLY_MARGIN_PUBLICATION_LAG < len(timeline)) & (
        timeline.week_ends < daily_from
    )
    week, stock = np.nonzero(np.isfinite(paths.weekly_long) & published[:, None])
    weekly = _margin_rows(
        days.gather(timeline.week_ends[week]),
        None,
        stock,
        paths.weekly_long[week, stock],
        paths.weekly_short[week, stock],
        None,
        universe,
        (long_share, short_share),
    )
    sessions = np.arange(daily_from, len(timeline) - 1)  # published the next session
    margin_ok = np.isin(universe.margin_code, MARGIN_ISSUES)
    listed = (universe.listing_day[None, :] <= sessions[:, None]) & (
        sessions[:, None] <= universe.delisting_day[None, :]
    )
    row, stock = np.nonzero(listed & margin_ok[None, :])
    day = sessions[row]
    lots = [
        np.maximum(np.round(latent[day, stock].astype(np.float64), -2), 100.0)
        for latent in (paths.margin_long, paths.margin_short)
    ]
    daily = _margin_rows(
        days.gather(day),
        days.gather(day + 1),
        stock,
        lots[0],
        lots[1],
        _last_close(paths.close)[day, stock],
        universe,
        (long_share, short_share),
    )
    return pl.concat([weekly, daily]).sort("Date", "Code")


def _last_close(close: np.ndarray) -> np.ndarray:
    """Each stock's latest close on or before each session (NaN before its first bar)."""
    rows = np.where(np.isfinite(close), np.arange(close.shape[0])[:, None], 0)
    np.maximum.accumulate(rows, axis=0, out=rows)
    return np.take_along_axis(close, rows, axis=0)


def _margin_rows(
    application: pl.Series,
    publication: pl.Series | None,
    stock: np.ndarray,
    long_: np.ndarray,
    short: np.ndarray,
    price: np.ndarray | None,
    universe: Universe,
    negotiable_shares: tuple[np.ndarray, np.ndarray],
) -> pl.DataFrame:
    """margin-interest rows; ``publication``/``price`` None: the weekly regime (both null)."""
    long_share, short_share = negotiable_shares
    long_neg, long_std = _split(long_, long_share[stock])
    short_neg, short_std = _split(short, short_share[stock])
    volumes = {
        "ShrtVol": short,
        "LongVol": long_,
        "ShrtNegVol": short_neg,
        "LongNegVol": long_neg,
        "ShrtStdVol": short_std,
        "LongStdVol": long_std,
    }
    amounts = {
        name.removesuffix("Vol") + "Val": (
            np.full(len(stock), np.nan) if price is None else np.round(values * price)
        )
        for name, values in volumes.items()
    }
    return pl.DataFrame(
        {
            "PubDate": publication if publication is not None else pl.Series(
                [None] * len(stock), dtype=pl.Date
            ),
            "Date": application,
            "Code": pl.Series(universe.codes.tolist(), dtype=pl.String).gather(stock),
            "IssType": pl.Series(universe.margin_code[stock].tolist(), dtype=pl.String),
            **volumes,
            **{k: pl.Series(k, v, nan_to_null=True) for k, v in amounts.items()},
        }
    )


def _rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(x, axis=0, dtype=np.float64)
    out = c.copy()
    out[window:] = c[window:] - c[:-window]
    return out


def margin_alert_table(
    config: MarketConfig,
    universe: Universe,
    timeline: Timeline,
    paths: PricePaths,
    actions: CorporateActions,
) -> pl.DataFrame:
    rng = stream(config.seed, "margin")  # same stream as the weekly table: same Neg/Std shares
    long_share, short_share = _negotiable_shares(rng, universe)
    rng = stream(config.seed, "margin-alert")
    t, n = len(timeline), universe.n
    eligible = universe.listed_matrix(t) & np.isin(universe.margin_code, MARGIN_ISSUES)[None, :]
    move = np.abs(_rolling_sum(paths.ret, 5)) / (paths.sigma * np.sqrt(5.0))
    surge = paths.margin_long / (
        _rolling_sum(paths.margin_long, 60) / np.minimum(np.arange(1, t + 1), 60)[:, None]
    )
    trigger = eligible & ((move > ALERT_MOVE_SIGMAS) | (surge > ALERT_MARGIN_SURGE))

    alert = np.zeros((t, n), dtype=bool)
    age = np.zeros((t, n), dtype=np.int64)
    last_trigger = np.full(n, -(10**6))
    started = np.full(n, -(10**6))
    for day in range(t):
        was_on = alert[day - 1] if day else np.zeros(n, dtype=bool)
        last_trigger = np.where(trigger[day], day, last_trigger)
        on = eligible[day] & (day - last_trigger < ALERT_MIN_SESSIONS)
        started = np.where(on & ~was_on, day, started)
        alert[day] = on
        age[day] = day - started

    lots_long = np.round(paths.margin_long / LOT) * LOT
    lots_short = np.round(paths.margin_short / LOT) * LOT
    pub, stock = np.nonzero(alert[2:])
    pub += 2  # AppDate = previous session, and its change needs the session before that
    app = pub - 1
    long_, short = lots_long[app, stock], lots_short[app, stock]
    long_prev, short_prev = lots_long[app - 1, stock], lots_short[app - 1, stock]
    long_neg, long_std = _split(long_, long_share[stock])
    short_neg, short_std = _split(short, short_share[stock])
    long_neg_p, long_std_p = _split(long_prev, long_share[stock])
    short_neg_p, short_std_p = _split(short_prev, short_share[stock])
    shares = actions.shares_on(universe, stock, app)
    restricted = (age[pub, stock] >= ALERT_RESTRICT_SESSIONS) | (
        move[app, stock] > 2 * ALERT_MOVE_SIGMAS
    )
    jsf = (universe.margin_code[stock] == "2") & (short > 0.8 * long_)
    ratio_hidden = rng.random(len(pub)) < 0.03  # the API sends "*" for some ratios

    frame = pl.DataFrame(
        {
            "PubDate": pl.Series(timeline.days, dtype=pl.Date).gather(pub),
            "Code": pl.Series(universe.codes.tolist(), dtype=pl.String).gather(stock),
            "AppDate": pl.Series(timeline.days, dtype=pl.Date).gather(app),
            "PubReason.Restricted": restricted,
            "PubReason.DailyPublication": np.ones(len(pub), dtype=bool),
            "PubReason.Monitoring": np.zeros(len(pub), dtype=bool),
            "PubReason.RestrictedByJSF": jsf & restricted,
            "PubReason.PrecautionByJSF": jsf,
            "PubReason.UnclearOrSecOnAlert": np.zeros(len(pub), dtype=bool),
            "ShrtOut": short,
            "ShrtOutChg": short - short_prev,
            "ShrtOutRatio": pl.Series(
                np.where(ratio_hidden, np.nan, np.round(100 * short / shares, 2)), nan_to_null=True
            ),
            "LongOut": long_,
            "LongOutChg": long_ - long_prev,
            "LongOutRatio": pl.Series(
                np.where(ratio_hidden, np.nan, np.round(100 * long_ / shares, 2)), nan_to_null=True
            ),
            "SLRatio": pl.Series(
                np.where(long_ > 0, np.round(100 * short / np.maximum(long_, 1), 2), np.nan),
                nan_to_null=True,
            ),
            "ShrtNegOut": short_neg,
            "ShrtNegOutChg": short_neg - short_neg_p,
            "ShrtStdOut": short_std,
            "ShrtStdOutChg": short_std - short_std_p,
            "LongNegOut": long_neg,
            "LongNegOutChg": long_neg - long_neg_p,
            "LongStdOut": long_std,
            "LongStdOutChg": long_std - long_std_p,
            # 003: TSE margin regulation, 001: JSF precaution/restriction, 002: daily publication.
            "TSEMrgnRegCls": pl.Series(
                np.select([restricted, jsf], ["003", "001"], "002").tolist(), dtype=pl.String
            ),
        }
    )
    # Corrections: the same AppDate republished the next session with revised balances.
    corrected = (rng.random(len(pub)) < ALERT_CORRECTION_RATE) & (pub + 1 < t)
    if corrected.any():
        fix = frame.filter(pl.Series(corrected)).with_columns(
            pl.Series(timeline.days, dtype=pl.Date).gather(pub[corrected] + 1).alias("PubDate"),
            *[
                (pl.col(c) + LOT).alias(c)
                for c in ("LongOut", "LongNegOut", "LongOutChg", "LongNegOutChg")
            ],
        )
        frame = pl.concat([frame, fix])
    return frame


def short_ratio_table(
    config: MarketConfig,
    universe: Universe,
    timeline: Timeline,
    paths: PricePaths,
    turnover: np.ndarray,
) -> pl.DataFrame:
    rng = stream(config.seed, "short-ratio")
    t, k = len(timeline), len(SECTOR_CODES)
    cell = (np.arange(t)[:, None] * k + universe.sector_matrix(t)).ravel()

    def per_sector(values: np.ndarray) -> np.ndarray:
        return np.bincount(cell, weights=values.ravel(), minlength=t * k).reshape(t, k)

    value = per_sector(np.nan_to_num(turnover))
    traded = per_sector(np.isfinite(turnover).astype(float))
    move = per_sector(paths.ret.astype(np.float64)) / np.maximum(
        per_sector(np.ones(turnover.shape)), 1
    )
    # Short sellers lean into rallies; the share mean-reverts to ~40 %.
    share = np.empty((t, k))
    level = np.full(k, 0.40)
    noise = rng.standard_normal((t, k))
    for day in range(t):
        level = np.clip(
            0.40 + 0.8 * (level - 0.40) + 0.015 * noise[day] + 1.5 * move[day], 0.2, 0.6
        )
        share[day] = level
    restricted = rng.uniform(0.82, 0.9, (t, k))
    day, sector = np.nonzero(traded > 0)
    v, s, r = value[day, sector], share[day, sector], restricted[day, sector]
    return pl.DataFrame(
        {
            "Date": pl.Series(timeline.days, dtype=pl.Date).gather(day),
            "S33": pl.Series(list(SECTOR_CODES), dtype=pl.String).gather(sector),
            "SellExShortVa": np.round(v * (1 - s), -2),
            "ShrtWithResVa": np.round(v * s * r, -2),
            "ShrtNoResVa": np.round(v * s * (1 - r), -2),
        }
    )


def short_sale_report_table(
    config: MarketConfig, universe: Universe, timeline: Timeline, actions: CorporateActions
) -> pl.DataFrame:
    rng = stream(config.seed, "short-sale-report")
    t, n = len(timeline), universe.n
    per_stock = rng.poisson(
        0.5 * (universe.size_rank + 0.5) * np.where(universe.margin_code == "2", 1.2, 0.6)
    )
    per_stock = np.minimum(per_stock, len(_SHORT_SELLERS))
    stock = np.repeat(np.arange(n), per_stock)
    seller = np.concatenate(
        [rng.choice(len(_SHORT_SELLERS), size=c, replace=False) for c in per_stock if c]
        or [np.zeros(0, dtype=np.int64)]
    )
    p = len(stock)
    start = rng.integers(-_SHORT_WARMUP, t, p)
    log_ratio = rng.normal(np.log(0.45), 0.3, p)
    trend = rng.normal(0.0, 0.004, p)
    last_reported = np.full(p, np.nan)
    last_day = np.full(p, -_SHORT_WARMUP - 1)
    records: list[tuple[np.ndarray, ...]] = []
    for day in range(-_SHORT_WARMUP, t):
        log_ratio += np.where(start <= day, trend + 0.03 * rng.standard_normal(p), 0.0)
        # Before the first session positions evolve and are reported, but not recorded.
        active = (
            (start <= day)
            & (universe.listing_day[stock] <= max(day, 0))
            & (day <= universe.delisting_day[stock])
        )
        # A position is a share of the shares outstanding: the walk reflects below the cap so
        # a drifting seller never reports more than _SHORT_CAP_PERCENT (the raw check on
        # ShrtPosToSO <= 1 holds on the sandbox as on real data).
        log_ratio = np.where(log_ratio > _LOG_SHORT_CAP, 2 * _LOG_SHORT_CAP - log_ratio, log_ratio)
        ratio = np.round(np.exp(log_ratio), 2)
        above = ratio >= SHORT_REPORT_THRESHOLD
        was_above = last_reported >= SHORT_REPORT_THRESHOLD
        report = active & (
            (above & ~was_above)
            | (above & (np.abs(ratio - last_reported) >= SHORT_REPORT_STEP - 1e-9))
            | (~above & was_above)
        )
        idx = np.flatnonzero(report)
        if len(idx) and day >= 0:
            records.append(
                (
                    np.full(len(idx), day),
                    idx,
                    ratio[idx],
                    last_day[idx].copy(),
                    last_reported[idx].copy(),
                )
            )
        last_reported[idx] = ratio[idx]
        last_day[idx] = day
        # Positions that fell far below the threshold are closed and restart later.
        closed = active & (ratio < 0.2)
        log_ratio[closed] = np.log(0.45)
        last_reported[closed] = np.nan
    if not records:
        return pl.DataFrame(schema=ENDPOINTS["markets/short-sale-report"].schema())
    calc, pair, ratio, prev_day, prev_ratio = (
        np.concatenate(parts) for parts in zip(*records, strict=True)
    )
    disc = calc + np.where(rng.random(len(calc)) < 0.7, 1, 2)
    keep = disc < t
    calc, pair, ratio, prev_day, prev_ratio, disc = (
        a[keep] for a in (calc, pair, ratio, prev_day, prev_ratio, disc)
    )
    st, who = stock[pair], seller[pair]
    shares = np.round(ratio / 100 * actions.shares_on(universe, st, calc))
    days = pl.Series(timeline.days, dtype=pl.Date)
    names = [_SHORT_SELLERS[w] for w in who]
    return pl.DataFrame(
        {
            "DiscDate": days.gather(disc),
            "CalcDate": days.gather(calc),
            "Code": pl.Series(universe.codes.tolist(), dtype=pl.String).gather(st),
            "SSName": [x[0] for x in names],
            "SSAddr": [x[1] for x in names],
            "DICName": pl.Series([x[2] for x in names], dtype=pl.String),
            "DICAddr": pl.Series([x[3] for x in names], dtype=pl.String),
            "FundName": pl.Series([x[4] for x in names], dtype=pl.String),
            "ShrtPosToSO": np.round(ratio / 100, 4),
            "ShrtPosShares": shares,
            "ShrtPosUnits": np.floor(shares / LOT),
            "PrevRptDate": pl.Series(
                [_session(timeline, d) for d in prev_day.tolist()], dtype=pl.Date
            ),
            "PrevRptRatio": pl.Series(np.round(prev_ratio / 100, 4), nan_to_null=True),
            "Notes": pl.Series([None] * len(calc), dtype=pl.String),
        }
    )
