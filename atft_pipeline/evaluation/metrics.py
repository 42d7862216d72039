"""Cross-sectional prediction metrics (DESIGN §8), one definition each.

Everything works on the long predictions contract (DESIGN §5): one row per
``date, code, horizon`` with ``prediction`` and ``target`` (+ ``model``, ``split``). A metric is
computed **within each date** over that date's stocks and then aggregated over dates — never
pooled across dates. Rows whose prediction or target is null are dropped before anything else
(a target is null until it is known); NaN/inf are contract violations and are refused by
``validate_predictions``.

The table functions (``daily_ic``, ``long_short_returns``, ``daily_jpx_spread``,
``decile_returns``) take ``by``: the key columns that identify one prediction series
(``model``, ``split``, ``horizon``), so a whole predictions frame is evaluated in one vectorized
pass. The scalar functions (``ic_summary``, ``jpx_competition_score``, ``hit_rate``,
``top_decile_precision``) take a single series. Every function refuses a frame that mixes
several values of a key it was not told to group by (that would pool models within a date).

Ranking ties (equal predictions on a date) are broken by ``code`` so portfolios are
deterministic. Values are reproducible up to the summation order of Polars' parallel
aggregations (differences of order 1e-15 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl

TRADING_DAYS_PER_YEAR = 252
SERIES_KEYS: tuple[str, ...] = ("model", "split", "horizon")
QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_COLUMNS: tuple[str, ...] = tuple(f"q{round(q * 100):02d}" for q in QUANTILE_LEVELS)
PREDICTION_COLUMNS: tuple[str, ...] = (
    "date", "code", "horizon", "prediction", *QUANTILE_COLUMNS, "target", "split", "model",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("date", "code", "horizon", "prediction", "target")
MIN_IC_STOCKS = 3  # a correlation over fewer stocks is noise, not a measurement
JPX_WEIGHT_TOP, JPX_WEIGHT_BOTTOM = 2.0, 1.0  # the competition's linspace(2, 1, size) weights
METRIC_COLUMNS: tuple[str, ...] = (
    "ic", "rank_ic", "icir", "rank_icir", "sharpe_gross", "sharpe_net", "jpx_score",
    "hit_rate", "top_decile_precision", "n_dates", "n_rows",
)

_RELATIVE_NOISE = 1e-12  # a std below this fraction of |mean| is floating-point noise
_EPS = 1e-9  # guards floor(n · q) against binary rounding (100 · 0.29 = 28.999999999999996)


# --------------------------------------------------------------------------- input checks


def validate_predictions(frame: pl.DataFrame) -> None:
    """Refuse frames that break the predictions contract, naming the column and model.

    Required columns must exist; ``prediction``, ``target`` and quantile columns must never be
    NaN/inf (null is the only "unknown"); the series keys present must have no nulls.
    """
    _require(frame, REQUIRED_COLUMNS)
    keys = [k for k in SERIES_KEYS if k in frame.columns]
    for key in ["date", "code", *keys]:
        if frame[key].null_count():
            raise ValueError(f"predictions column {key!r} has {frame[key].null_count()} null(s)")
    for column in ("prediction", *[q for q in QUANTILE_COLUMNS if q in frame.columns], "target"):
        bad = frame.filter(
            pl.col(column).is_not_null() & ~pl.col(column).cast(pl.Float64).is_finite()
        )
        if bad.height:
            where = (
                sorted(bad["model"].unique().to_list()) if "model" in bad.columns else "predictions"
            )
            raise ValueError(
                f"{bad.height} NaN/inf value(s) in column {column!r} of model(s) {where} "
                f"(first at date {bad['date'][0]}, code {bad['code'][0]})"
            )


def _require(frame: pl.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {missing}; have {frame.columns}")


def _single_series(frame: pl.DataFrame, by: Sequence[str] = ()) -> None:
    """A metric over a frame mixing models / splits / horizons that are not among its ``by``
    keys would pool them within a date: refuse."""
    for key in SERIES_KEYS:
        if key not in by and key in frame.columns and frame[key].n_unique() > 1:
            raise ValueError(
                f"predictions mix {frame[key].n_unique()} values of {key!r} "
                f"({sorted(frame[key].unique().drop_nulls().to_list())}); filter to one series or "
                f"use evaluate() / the by= argument of the table functions"
            )


def _valid(frame: pl.DataFrame, by: Sequence[str], extra: Sequence[str] = ()) -> pl.LazyFrame:
    """The rows that carry both a finite prediction and a known target, as Float64."""
    _require(frame, [*by, "date", "prediction", "target", *extra])
    _single_series(frame, by)
    return (
        frame.lazy()
        .select(
            *by,
            "date",
            *extra,
            pl.col("prediction").cast(pl.Float64),
            pl.col("target").cast(pl.Float64),
        )
        .filter(pl.col("prediction").is_finite() & pl.col("target").is_finite())
    )


def _over(expr: pl.Expr, by: Sequence[str]) -> pl.Expr:
    return expr.over(list(by)) if by else expr


def _aggregate(frame: pl.LazyFrame, by: Sequence[str], exprs: Sequence[pl.Expr]) -> pl.LazyFrame:
    """``group_by(by).agg(exprs)``, or one row over everything when there are no keys."""
    return frame.group_by(list(by)).agg(exprs) if by else frame.select(exprs)


def _ratio(col: str) -> pl.Expr:
    """mean / std (ddof=1) of a column; null when fewer than 2 values or no dispersion.

    "No dispersion" includes a std that is only rounding noise around identical values
    (e.g. daily ICs that are all −1 up to the last bit), which would give a ratio of ~1e16.
    """
    mean, std = pl.col(col).mean(), pl.col(col).std(ddof=1)
    return pl.when(std > _RELATIVE_NOISE * mean.abs()).then(mean / std)


# --------------------------------------------------------------------------- IC / RankIC


def daily_ic(
    frame: pl.DataFrame,
    method: Literal["pearson", "spearman"] = "pearson",
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """``by…, date, ic``: per date Pearson (IC) or Spearman (RankIC, average ranks for ties).

    Dates with fewer than 3 valid rows, or a constant prediction or target, have no defined
    correlation and are skipped (not scored 0).
    """
    return _daily_correlations(frame, by).select(
        *by, "date", pl.col("ic" if method == "pearson" else "rank_ic").alias("ic")
    ).collect()


def _daily_correlations(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    group = [*by, "date"]
    return (
        _valid(frame, by)
        .group_by(group)
        .agg(
            pl.len().alias("_n"),
            pl.col("prediction").n_unique().alias("_pred_values"),
            pl.col("target").n_unique().alias("_target_values"),
            pl.corr("prediction", "target", method="pearson").alias("ic"),
            pl.corr("prediction", "target", method="spearman").alias("rank_ic"),
        )
        .filter(
            (pl.col("_n") >= MIN_IC_STOCKS)
            & (pl.col("_pred_values") > 1)
            & (pl.col("_target_values") > 1)
        )
        .select(*group, "ic", "rank_ic")
        .sort(group)
    )


def _ic_stats(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    """``by…, ic, rank_ic, icir, rank_icir, n_dates`` (means over dates; IR = mean / std)."""
    return _aggregate(
        _daily_correlations(frame, by),
        by,
        [
            pl.col("ic").mean(),
            pl.col("rank_ic").mean(),
            _ratio("ic").alias("icir"),
            _ratio("rank_ic").alias("rank_icir"),
            pl.len().cast(pl.Int64).alias("n_dates"),
        ],
    )


def ic_summary(frame: pl.DataFrame) -> dict[str, float | int | None]:
    """``ic, rank_ic, icir, rank_icir, n_dates`` of one prediction series.

    IC / RankIC are means over dates of the daily correlations; ICIR = mean / std (ddof=1)
    over dates (not annualized). Undefined values (no dates, one date) are None.
    """
    return _ic_stats(frame, ()).collect().row(0, named=True)


# --------------------------------------------------------------------------- portfolios


def _ranked(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    """Valid rows with ``_pos`` (0 = lowest prediction of the date) and ``_n`` (stocks that date)."""
    group = [*by, "date"]
    return (
        _valid(frame, by, extra=("code",))
        .sort([*group, "prediction", "code"])
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int64).over(group).alias("_pos"),
            pl.len().cast(pl.Int64).over(group).alias("_n"),
        )
    )


def _leg_size(quantile: float) -> pl.Expr:
    """Names per leg: floor(n · quantile), at least 1."""
    if not 0 < quantile <= 0.5:
        raise ValueError(f"quantile must be in (0, 0.5], got {quantile}")
    return (pl.col("_n") * quantile + _EPS).floor().cast(pl.Int64).clip(lower_bound=1)


def long_short_returns(
    frame: pl.DataFrame,
    quantile: float = 0.1,
    by: Sequence[str] = (),
    lag: int | pl.Expr = 1,
) -> pl.DataFrame:
    """``by…, date, long, short, spread, turnover`` of the top-minus-bottom quantile book.

    Each date (with ≥ 2 valid stocks) the book is long the ``floor(n·quantile)`` (≥ 1) highest
    predictions and short as many of the lowest, equal weight, +1 / −1 gross per side.
    ``long`` / ``short`` are the mean targets of the two legs and ``spread = long − short``:
    the book's return over the target's horizon.

    ``turnover`` = Σ |w_t − w_prev| over names (the traded notional; a cost in bp per unit
    one-way trade multiplies it), against the book ``lag`` rebalance dates earlier; the first
    ``lag`` dates open from an empty book (turnover 2). For daily (h = 1) targets ``lag=1``.
    With an h-day target the dates' returns overlap: ``evaluate`` passes ``lag=horizon``,
    i.e. each date's book is one of h staggered tranches that replaces the tranche formed
    h dates earlier, and annualizes with 252/h periods — the h-day returns are reported as
    they are, never presented as daily ones. ``lag`` may be an expression over the key columns
    (``pl.col("horizon")``).
    """
    return _book(_ranked(frame, by), by, quantile, lag).collect()


def _book(ranked: pl.LazyFrame, by: Sequence[str], quantile: float, lag: int | pl.Expr) -> pl.LazyFrame:
    group = [*by, "date"]
    lag_expr = lag if isinstance(lag, pl.Expr) else pl.lit(lag)
    size = _leg_size(quantile)
    legs = (
        ranked
        .filter(pl.col("_n") >= 2)
        .with_columns(
            pl.when(pl.col("_pos") >= pl.col("_n") - size)
            .then(1.0 / size)
            .when(pl.col("_pos") < size)
            .then(-1.0 / size)
            .otherwise(0.0)
            .alias("_w")
        )
        .filter(pl.col("_w") != 0)
    )
    returns = legs.group_by(group).agg(
        pl.col("target").filter(pl.col("_w") > 0).mean().alias("long"),
        pl.col("target").filter(pl.col("_w") < 0).mean().alias("short"),
    )
    # Number the rebalance dates of each series so "the book lag dates earlier" is a join.
    dates = (
        legs.select(group)
        .unique()
        .with_columns(_over(pl.col("date").rank("dense"), by).cast(pl.Int64).alias("_i"))
    )
    previous = (
        legs.join(dates, on=group)
        .with_columns((pl.col("_i") + lag_expr).alias("_i"))
        .join(dates.rename({"date": "_date"}), on=[*by, "_i"])
        .select(*by, pl.col("_date").alias("date"), "code", pl.col("_w").alias("_w_prev"))
    )
    turnover = (
        legs.select(*group, "code", "_w")
        .join(previous, on=[*group, "code"], how="full", coalesce=True)
        .group_by(group)
        .agg(
            (pl.col("_w").fill_null(0.0) - pl.col("_w_prev").fill_null(0.0))
            .abs()
            .sum()
            .alias("turnover")
        )
    )
    return (
        returns.join(turnover, on=group, how="left")
        .select(*group, "long", "short", (pl.col("long") - pl.col("short")).alias("spread"), "turnover")
        .sort(group)
    )


def net_returns(spread: pl.Expr, turnover: pl.Expr, cost_bp: float) -> pl.Expr:
    """Spread net of costs: ``spread − cost_bp / 1e4 · turnover``."""
    if cost_bp < 0:
        raise ValueError(f"cost_bp must be >= 0, got {cost_bp}")
    return spread - cost_bp / 1e4 * turnover


def sharpe(returns: pl.Series | Sequence[float] | np.ndarray, periods: float = TRADING_DAYS_PER_YEAR) -> float | None:
    """mean / std (ddof=1) × √periods of a return series (nulls/NaN dropped).

    None when fewer than 2 returns or zero dispersion (the ratio is undefined).
    """
    values = pl.Series("r", np.asarray(returns, dtype=np.float64)).fill_nan(None).drop_nulls()
    ratio = pl.DataFrame({"r": values}).select(_ratio("r")).item()
    return None if ratio is None else ratio * math.sqrt(periods)


def _jpx_weight(index: pl.Expr, size: pl.Expr) -> pl.Expr:
    """np.linspace(2, 1, size)[index]; a one-name leg has the single weight 2."""
    step = (JPX_WEIGHT_BOTTOM - JPX_WEIGHT_TOP) / (size - 1)
    return pl.when(size > 1).then(JPX_WEIGHT_TOP + index * step).otherwise(JPX_WEIGHT_TOP)


def daily_jpx_spread(
    frame: pl.DataFrame, top: int = 200, bottom: int = 200, by: Sequence[str] = ()
) -> pl.DataFrame:
    """``by…, date, spread``: the JPX competition's daily weighted top-minus-bottom return.

    Per date, stocks are ranked by prediction; the top ``top`` get weights linspace(2, 1) from
    the best down, the bottom ``bottom`` likewise from the worst up, and
    spread = Σ w·r_top / Σ w − Σ w·r_bottom / Σ w. The competition's published
    ``calc_spread_return_sharpe`` divides by mean(w) instead of Σ w, i.e. multiplies both legs
    by the leg size: the same score whenever the size is constant (≥ 400 stocks every date),
    and a return in return units here. A date with fewer than ``top + bottom`` stocks uses
    ``n // 2`` per leg (the competition assumed ~2,000 stocks and would fail there).
    """
    return _jpx_spread(_ranked(frame, by), by, top, bottom).collect()


def _jpx_spread(ranked: pl.LazyFrame, by: Sequence[str], top: int, bottom: int) -> pl.LazyFrame:
    if top < 1 or bottom < 1:
        raise ValueError(f"top and bottom must be >= 1, got {top}, {bottom}")
    group = [*by, "date"]
    half = pl.col("_n") // 2
    top_size = pl.min_horizontal(pl.lit(top, dtype=pl.Int64), half)
    bottom_size = pl.min_horizontal(pl.lit(bottom, dtype=pl.Int64), half)
    from_best = pl.col("_n") - 1 - pl.col("_pos")
    from_worst = pl.col("_pos")
    w_top = pl.when(from_best < top_size).then(_jpx_weight(from_best, top_size))
    w_bottom = pl.when(from_worst < bottom_size).then(_jpx_weight(from_worst, bottom_size))
    return (
        ranked.filter(pl.col("_n") >= 2)
        .group_by(group)
        .agg(
            ((w_top * pl.col("target")).sum() / w_top.sum()
             - (w_bottom * pl.col("target")).sum() / w_bottom.sum()).alias("spread")
        )
        .sort(group)
    )


def jpx_competition_score(frame: pl.DataFrame, top: int = 200, bottom: int = 200) -> float | None:
    """mean / std (ddof=1) of ``daily_jpx_spread`` — not annualized (the competition's score)."""
    daily = daily_jpx_spread(frame, top, bottom)
    return daily.select(_ratio("spread")).item()


# --------------------------------------------------------------------------- hit rates


def _hit_rate_stats(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    nonzero = _valid(frame, by).filter((pl.col("prediction") != 0) & (pl.col("target") != 0))
    same_sign = pl.col("prediction").sign() == pl.col("target").sign()
    return _aggregate(nonzero, by, [same_sign.mean().alias("hit_rate")])


def hit_rate(frame: pl.DataFrame) -> float | None:
    """Share of (date, stock) rows with sign(prediction) = sign(target); zeros excluded."""
    return _hit_rate_stats(frame, ()).collect().item()


def _top_decile_stats(ranked: pl.LazyFrame, by: Sequence[str], quantile: float) -> pl.LazyFrame:
    size = _leg_size(quantile)
    above_median = pl.col("target") > pl.col("target").median().over([*by, "date"])
    top = (
        ranked.filter(pl.col("_n") >= 2)
        .with_columns(above_median.alias("_above"))
        .filter(pl.col("_pos") >= pl.col("_n") - size)
    )
    return _aggregate(top, by, [pl.col("_above").mean().alias("top_decile_precision")])


def top_decile_precision(frame: pl.DataFrame, quantile: float = 0.1) -> float | None:
    """Share of the long leg's (date, stock) rows whose target beats that date's median target.

    The long leg is the same top ``floor(n·quantile)`` (≥ 1) names as ``long_short_returns``.
    """
    return _top_decile_stats(_ranked(frame, ()), (), quantile).collect().item()


def decile_returns(frame: pl.DataFrame, n_bins: int = 10, by: Sequence[str] = ()) -> pl.DataFrame:
    """``by…, decile, mean_return, n_dates``: per date equal-count prediction bins
    (1 = lowest prediction), the bin's mean target, averaged over dates.

    Dates with fewer stocks than bins are skipped, so every bin has a member every date.
    """
    group = [*by, "date"]
    bins = (
        _ranked(frame, by)
        .filter(pl.col("_n") >= n_bins)
        .with_columns(((pl.col("_pos") * n_bins) // pl.col("_n") + 1).alias("decile"))
        .group_by([*group, "decile"])
        .agg(pl.col("target").mean())
    )
    return (
        bins.group_by([*by, "decile"])
        .agg(pl.col("target").mean().alias("mean_return"), pl.len().cast(pl.Int64).alias("n_dates"))
        .sort([*by, "decile"])
        .collect()
    )


# --------------------------------------------------------------------------- all at once


def evaluate(
    frame: pl.DataFrame,
    cost_bp: float = 10.0,
    quantile: float = 0.1,
    jpx_top: int = 200,
    jpx_bottom: int = 200,
) -> pl.DataFrame:
    """One row per (model, split, horizon) — whichever of those keys the frame has — with
    ``ic, rank_ic, icir, rank_icir, sharpe_gross, sharpe_net, jpx_score, hit_rate,
    top_decile_precision, n_dates, n_rows``.

    Sharpe is that of ``long_short_returns`` with ``lag=horizon`` annualized by √(252/h):
    h-day returns are h-day holding-period returns, so a year holds 252/h of them (at h = 1
    this is the daily Sharpe × √252). Net = spread − cost_bp/1e4 · turnover. ``n_dates`` counts
    the dates with a defined IC, ``n_rows`` the rows with both prediction and target; a series
    without any (e.g. ``live``) keeps its row with nulls and zero counts.
    """
    validate_predictions(frame)
    keys = [k for k in SERIES_KEYS if k in frame.columns]
    series = frame.lazy().group_by(keys).agg(
        (pl.col("prediction").is_not_null() & pl.col("target").is_not_null())
        .sum()
        .cast(pl.Int64)
        .alias("n_rows")
    )
    ranked = _ranked(frame, keys).collect().lazy()  # sorted once, shared by every portfolio metric
    book = _book(ranked, keys, quantile, lag=pl.col("horizon"))
    periods = pl.lit(TRADING_DAYS_PER_YEAR, dtype=pl.Float64) / pl.col("horizon")
    sharpes = (
        book.with_columns(net_returns(pl.col("spread"), pl.col("turnover"), cost_bp).alias("net"))
        .group_by(keys)
        .agg(_ratio("spread").alias("sharpe_gross"), _ratio("net").alias("sharpe_net"))
        .with_columns(
            (pl.col("sharpe_gross") * periods.sqrt()),
            (pl.col("sharpe_net") * periods.sqrt()),
        )
    )
    jpx = _jpx_spread(ranked, keys, jpx_top, jpx_bottom).group_by(keys).agg(
        _ratio("spread").alias("jpx_score")
    )
    table = series
    for part in (
        _ic_stats(frame, keys),
        sharpes,
        jpx,
        _hit_rate_stats(frame, keys),
        _top_decile_stats(ranked, keys, quantile),
    ):
        table = table.join(part, on=keys, how="left")
    return (
        table.with_columns(pl.col("n_dates").fill_null(0))
        .select(*keys, *METRIC_COLUMNS)
        .sort(keys)
        .collect()
    )
