"""The oracle: the expected target return given everything public at the close of t.

With targets ``target_h(t) = AdjC(t+1+h) / AdjC(t+1) - 1`` (DESIGN section 6) and the planted
drift of session s equal to ``vol_scale * sum_k G_k(s-2)``, the drift that the information at t
fixes for session t+1+j (j >= 1) is ``vol_scale * sum_k rho_k**(j-1) * G_k(t)``. Every other
part of a session's return (market, sector and idiosyncratic shocks, announcement jumps of
not-yet-published statements, the symmetric price-limit clip, unbiased tick rounding) has
conditional mean zero, so

    oracle_h(t) = prod_{j=1..h} (1 + vol_scale * sum_k rho_k**(j-1) * G_k(t)) - 1.

This is exact for h = 1. For h > 1 it leaves out drift that alphas formed after t will add
inside the window (their expectation is not available in closed form); that part is not
determined by information at t.

``replay_oracle`` recomputes the oracle from the published tables alone, optionally only from
rows public on or before a date: the leakage check of the sandbox.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from atft_pipeline.jquants.sources import WEEKLY_MARGIN_PUBLICATION_LAG
from atft_pipeline.sandbox.market.signals import SIGNALS, SignalEngine, SignalParams, earnings_events
from atft_pipeline.sandbox.market.timeline import Timeline

HORIZONS = (1, 5, 10, 20)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
MIN_STOCKS_PER_DATE = 5


def expected_returns(state: np.ndarray, params: SignalParams) -> np.ndarray:
    """[len(HORIZONS), N] oracle returns from the signal state G(t) [K, N]."""
    steps = np.arange(max(HORIZONS))
    weights = params.decay[None, :] ** steps[:, None]  # [H, K]
    drift = (weights @ state) * params.vol_scale[None, :]
    gross = np.cumprod(1.0 + drift, axis=0)
    return gross[[h - 1 for h in HORIZONS]] - 1.0


def oracle_frame(
    oracle: np.ndarray, listed: np.ndarray, timeline: Timeline, codes: np.ndarray
) -> pl.DataFrame:
    """Long frame (date, code, oracle_1d, ...) over listed (date, code) pairs, sorted."""
    day_idx, stock_idx = np.nonzero(listed)
    columns = {
        "date": pl.Series(timeline.days, dtype=pl.Date).gather(day_idx),
        "code": pl.Series(codes.tolist(), dtype=pl.String).gather(stock_idx),
    }
    for k, h in enumerate(HORIZONS):
        columns[f"oracle_{h}d"] = pl.Series(oracle[day_idx, stock_idx, k])
    return pl.DataFrame(columns)


def realized_targets(bars: pl.DataFrame) -> pl.DataFrame:
    """(date, code, target_1d, ...) from ``equities/bars/daily`` (DESIGN section 6).

    Entry at the close of the next session: ``AdjC(t+1+h) / AdjC(t+1) - 1`` on the issue's
    own consecutive rows (a listed issue has a row every session); null when unknown.
    """
    frame = bars.select(pl.col("Date").alias("date"), pl.col("Code").alias("code"), "AdjC").sort(
        "code", "date"
    )
    entry = pl.col("AdjC").shift(-1).over("code")
    return (
        frame.with_columns(
            (pl.col("AdjC").shift(-(1 + h)).over("code") / entry - 1.0).alias(f"target_{h}d")
            for h in HORIZONS
        )
        .drop("AdjC")
        .sort("date", "code")
    )


def daily_rank_ic(
    frame: pl.DataFrame, prediction: str, target: str, date: str = "date"
) -> pl.DataFrame:
    """Per-date Spearman correlation (Pearson of average ranks) between two columns.

    Rows where either value is null or NaN are dropped; dates with fewer than
    ``MIN_STOCKS_PER_DATE`` pairs or a constant column are left out.
    """
    valid = frame.filter(
        pl.col(prediction).is_not_null()
        & pl.col(target).is_not_null()
        & pl.col(prediction).is_not_nan()
        & pl.col(target).is_not_nan()
    )
    ranked = valid.with_columns(
        pl.col(prediction).rank("average").over(date).alias("_rank_prediction"),
        pl.col(target).rank("average").over(date).alias("_rank_target"),
    )
    return (
        ranked.group_by(date)
        .agg(pl.corr("_rank_prediction", "_rank_target").alias("rank_ic"), pl.len().alias("n"))
        .filter(
            (pl.col("n") >= MIN_STOCKS_PER_DATE)
            & pl.col("rank_ic").is_not_nan()
            & pl.col("rank_ic").is_not_null()
        )
        .sort(date)
    )


def mean_rank_ic(frame: pl.DataFrame, prediction: str, target: str, date: str = "date") -> float:
    """Mean over dates of the per-date RankIC (NaN when no date qualifies)."""
    daily = daily_rank_ic(frame, prediction, target, date)
    return float(daily["rank_ic"].mean()) if daily.height else float("nan")


def _dense(
    frame: pl.DataFrame,
    date_col: str,
    value_cols: list[str],
    timeline: Timeline,
    codes: np.ndarray,
    fill: float,
    day_shift: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Pivot rows to [T, N] matrices (rows outside the timeline or universe are dropped)."""
    t, n = len(timeline), len(codes)
    index = pl.DataFrame({"Code": codes.tolist(), "_stock": np.arange(n)})
    rows = frame.join(index, on="Code", how="inner")
    ordinals = rows[date_col].cast(pl.Int32).to_numpy().astype(np.int64) + _EPOCH_ORDINAL
    pos = np.searchsorted(timeline.ordinals, ordinals)
    on_session = (pos < t) & (timeline.ordinals[np.minimum(pos, t - 1)] == ordinals)
    day = pos + day_shift
    keep = on_session & (day < t)
    stock = rows["_stock"].to_numpy()[keep]
    day = day[keep]
    mask = np.zeros((t, n), dtype=bool)
    mask[day, stock] = True
    out = []
    for col in value_cols:
        dense = np.full((t, n), fill)
        dense[day, stock] = rows[col].to_numpy()[keep]
        out.append(dense)
    return out, mask


def _public_inputs(
    tables: dict[str, pl.DataFrame], codes: np.ndarray, timeline: Timeline, last: int
) -> tuple[np.ndarray, ...]:
    """Dense [T, N] engine inputs from rows public on or before session ``last``: close,
    AdjFactor, listed, published margin long / short, earnings surprises."""
    cutoff = timeline.days[last]
    bars = tables["equities/bars/daily"].filter(pl.col("Date") <= cutoff)
    fins = tables["fins/summary"].filter(pl.col("DiscDate") <= cutoff)
    # The margin signal reads week-end balances two sessions after their application date in
    # both regimes (in the daily one, the week-end row was public a session earlier).
    week_ends = pl.Series([timeline.days[d] for d in timeline.week_ends], dtype=pl.Date)
    margin = tables["markets/margin-interest"].filter(pl.col("Date").is_in(week_ends.implode()))

    (close, adj), listed = _dense(bars, "Date", ["C", "AdjFactor"], timeline, codes, np.nan)
    adj = np.where(listed, adj, 1.0)
    (long_, short), _ = _dense(
        margin,
        "Date",
        ["LongVol", "ShrtVol"],
        timeline,
        codes,
        np.nan,
        day_shift=WEEKLY_MARGIN_PUBLICATION_LAG,
    )
    (earn,), _ = _dense(earnings_events(fins), "DiscDate", ["z"], timeline, codes, 0.0)
    return close, adj, listed, long_, short, earn


def replay_oracle(
    tables: dict[str, pl.DataFrame],
    params: SignalParams,
    codes: np.ndarray,
    timeline: Timeline,
    through: dt.date | None = None,
) -> pl.DataFrame:
    """The oracle recomputed from published tables (bars, weekly margin, statements) alone.

    With ``through``, only rows public on or before that date are used (bars by Date,
    statements by DiscDate, week-end margin 2 sessions after its Date) and the
    oracle is returned for dates up to it.
    """
    last = len(timeline) - 1 if through is None else timeline.index_on_or_before(through)
    close, adj, listed, long_, short, earn = _public_inputs(tables, codes, timeline, last)
    engine = SignalEngine(params)
    oracle = np.zeros((len(timeline), len(codes), len(HORIZONS)))
    for day in range(last + 1):
        engine.step(close[day], adj[day], listed[day], long_[day], short[day], earn[day])
        oracle[day] = expected_returns(engine.state, params).T
    listed[last + 1 :] = False
    return oracle_frame(oracle, listed, timeline, codes)


def signal_components(
    tables: dict[str, pl.DataFrame],
    params: SignalParams,
    codes: np.ndarray,
    timeline: Timeline,
    horizons: tuple[int, ...] = (1, 5),
) -> pl.DataFrame:
    """Each planted signal's part of the oracle: ``date, code, <signal>_<h>d``.

    The drift signal k fixes for the h sessions of the target window is
    ``vol_scale * G_k(t) * sum_{j<h} rho_k**j`` — the oracle's first-order terms, whose sum
    over the signals is the oracle up to the compounding of the drifts (exact at h = 1 up to
    that product). A model that ranks stocks by one component captures that signal.
    """
    close, adj, listed, long_, short, earn = _public_inputs(tables, codes, timeline, len(timeline) - 1)
    engine = SignalEngine(params)
    steps = np.array(
        [[(params.decay[k] ** np.arange(h)).sum() for k in range(len(SIGNALS))] for h in horizons]
    )  # [H, K]
    parts = np.zeros((len(timeline), len(codes), len(horizons) * len(SIGNALS)))
    for day in range(len(timeline)):
        engine.step(close[day], adj[day], listed[day], long_[day], short[day], earn[day])
        drift = engine.state * params.vol_scale[None, :]  # [K, N]
        parts[day] = (steps[:, :, None] * drift[None]).reshape(-1, len(codes)).T
    day_idx, stock_idx = np.nonzero(listed)
    columns = {
        "date": pl.Series(timeline.days, dtype=pl.Date).gather(day_idx),
        "code": pl.Series(codes.tolist(), dtype=pl.String).gather(stock_idx),
    }
    for i, h in enumerate(horizons):
        for k, name in enumerate(SIGNALS):
            columns[f"{name}_{h}d"] = pl.Series(parts[day_idx, stock_idx, i * len(SIGNALS) + k])
    return pl.DataFrame(columns)
