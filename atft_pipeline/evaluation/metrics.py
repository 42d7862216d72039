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

**Nothing flatters a model.** A date on which a model's predictions are all equal carries no
ranking: its IC and RankIC are 0 and its books hold nothing (spread 0), and the date is counted
(``constant_dates``) — it is never dropped, so a collapsed model scores ≈ 0 rather than its
number on the few dates where it happened to vary. Each series reports its ``coverage``: the
dates it was scored on over the dates of its split and horizon with a measurable target (at
least ``MIN_IC_STOCKS`` known, not all equal, over every model's rows). Every mean over dates
comes with its standard error (``*_se``): Newey–West with Bartlett weights and h − 1 lags, since
the h-day targets of consecutive dates overlap by h − 1 days (at h = 1 this is the plain
std / √n with ddof 0).

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
JPX_HORIZON = 1  # the competition scored next-day (close-to-close) returns only
# The scaled JPX variant: each leg holds this share of the date's stocks (200 of the ~2,000 the
# competition ranked), capped at the competition's 200.
JPX_SCALED_LEG_SHARE = 0.1
COVERAGE_COLUMNS: tuple[str, ...] = ("n_dates", "n_split_dates", "coverage", "constant_dates")
METRIC_COLUMNS: tuple[str, ...] = (
    *COVERAGE_COLUMNS,
    "ic", "ic_se", "rank_ic", "rank_ic_se", "icir", "rank_icir",
    "long_short", "long_short_se", "sharpe_gross", "sharpe_net",
    "jpx_score", "jpx_scaled_score", "hit_rate", "top_decile_precision", "n_rows",
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


NW_LAG = "_nw_lag"  # per-row column holding the series' Newey–West lag (horizon − 1)


def _newey_west_se(col: str, max_lag: int) -> pl.Expr:
    """Standard error of the mean of ``col`` (rows in date order), Newey–West / Bartlett.

    var(mean) = (γ0 + 2 Σ_{l=1..L} (1 − l/(L+1)) γl) / n with γl = Σ_t d_t d_{t−l} / n,
    d = x − mean, and L the series' ``NW_LAG`` column (≤ ``max_lag``); null below 2 values.
    """
    x = pl.col(col)
    d = x - x.mean()
    n = x.count()
    lag = pl.col(NW_LAG).first()
    variance = (d * d).sum() / n
    for l in range(1, max_lag + 1):
        weight = pl.when(lag >= l).then(1.0 - l / (lag + 1)).otherwise(0.0)
        variance = variance + 2.0 * weight * (d * d.shift(l)).sum() / n
    return pl.when(n >= 2).then((variance.clip(lower_bound=0.0) / n).sqrt())


def _lag_expr(frame: pl.DataFrame, by: Sequence[str]) -> tuple[pl.Expr, int]:
    """The Newey–West lag of each series (horizon − 1) and the largest one in ``frame``."""
    if "horizon" not in frame.columns or frame.height == 0:
        return pl.lit(0, dtype=pl.Int64), 0
    max_lag = max(int(frame["horizon"].max()) - 1, 0)
    if "horizon" in by:
        return (pl.col("horizon").cast(pl.Int64) - 1).clip(lower_bound=0), max_lag
    return pl.lit(max_lag, dtype=pl.Int64), max_lag


# --------------------------------------------------------------------------- IC / RankIC


def daily_ic(
    frame: pl.DataFrame,
    method: Literal["pearson", "spearman"] = "pearson",
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """``by…, date, ic, constant_prediction``: per date Pearson (IC) or Spearman (RankIC,
    average ranks for ties).

    A date with at least 3 valid rows and a non-constant target is scored; if the model's
    predictions are all equal that date its IC is 0 (``constant_prediction`` true). Dates with
    fewer rows or a constant target have no measurable correlation and are left out.
    """
    return _daily_correlations(frame, by).select(
        *by, "date", pl.col("ic" if method == "pearson" else "rank_ic").alias("ic"),
        pl.col("_constant").alias("constant_prediction"),
    ).collect()


def _daily_correlations(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    group = [*by, "date"]
    constant = pl.col("_pred_values") == 1
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
        .filter((pl.col("_n") >= MIN_IC_STOCKS) & (pl.col("_target_values") > 1))
        .select(
            *group,
            pl.when(constant).then(0.0).otherwise(pl.col("ic")).alias("ic"),
            pl.when(constant).then(0.0).otherwise(pl.col("rank_ic")).alias("rank_ic"),
            constant.alias("_constant"),
        )
        .sort(group)
    )


class MeanDailyRankIC:
    """``ic_summary(...)["rank_ic"]`` of many prediction vectors against one fixed target.

    For scoring every boosting round: the same definition as ``_daily_correlations`` (average
    ranks for ties, dates with fewer than ``MIN_IC_STOCKS`` valid rows or a constant target
    left out, a constant-prediction date scored 0), computed with NumPy on the rows as given,
    without building a frame per call. The target's ranks are computed once; a prediction
    vector with a non-finite value on a row of known target drops that row and re-ranks.
    """

    def __init__(self, dates: np.ndarray, target: np.ndarray) -> None:
        target = np.asarray(target, dtype=np.float64)
        if np.shape(dates) != target.shape:
            raise ValueError(f"{np.size(dates)} dates for {target.size} targets")
        self._size = target.size
        self._known = np.isfinite(target)
        self._dates = np.unique(np.asarray(dates)[self._known], return_inverse=True)[1].reshape(-1)
        self._target = target[self._known]
        self._target_stats = _centered_ranks(self._target, self._dates)

    def __call__(self, prediction: np.ndarray) -> float | None:
        prediction = np.asarray(prediction, dtype=np.float64)
        if prediction.shape != (self._size,):
            raise ValueError(f"{prediction.size} predictions for {self._size} targets")
        prediction = prediction[self._known]
        finite = np.isfinite(prediction)
        if finite.all():
            dates, (yc, syy, count) = self._dates, self._target_stats
        else:
            dates = np.unique(self._dates[finite], return_inverse=True)[1].reshape(-1)
            prediction = prediction[finite]
            yc, syy, count = _centered_ranks(self._target[finite], dates)
        if dates.size == 0:
            return None
        xc, sxx, _ = _centered_ranks(prediction, dates)
        sxy = np.bincount(dates, xc * yc)
        scored = (count >= MIN_IC_STOCKS) & (syy > 0)
        if not scored.any():
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(sxx > 0, sxy / np.sqrt(sxx * syy), 0.0)
        return float(rho[scored].mean())


def _centered_ranks(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks within each group (ties at their average rank) minus their group's mean, the
    per-group sums of their squares, and the group sizes."""
    order = np.argsort(values, kind="stable")
    order = order[np.argsort(groups[order], kind="stable")]
    ordered, ordered_groups = values[order], groups[order]
    starts_run = np.ones(values.size, dtype=bool)
    starts_run[1:] = (ordered[1:] != ordered[:-1]) | (ordered_groups[1:] != ordered_groups[:-1])
    run = np.cumsum(starts_run) - 1
    position = np.arange(values.size, dtype=np.float64)  # a per-group offset cancels below
    ranks = np.empty(values.size)
    ranks[order] = (np.bincount(run, position) / np.bincount(run))[run]
    count = np.bincount(groups).astype(np.float64)
    centered = ranks - (np.bincount(groups, ranks) / count)[groups]
    return centered, np.bincount(groups, centered * centered), count


def _split_dates(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    """``split keys…, n_split_dates``: dates with a measurable target in each split/horizon.

    A date counts when at least ``MIN_IC_STOCKS`` distinct codes have a known target and the
    targets are not all equal, over the rows of every model (so a model that skips a date
    loses coverage).
    """
    keys = [k for k in by if k != "model"]
    group = [*keys, "date"]
    known = frame.lazy().filter(pl.col("target").cast(pl.Float64).is_finite())
    stocks = pl.col("code").n_unique() if "code" in frame.columns else pl.len()
    dates = (
        known.group_by(group)
        .agg(stocks.alias("_n"), pl.col("target").n_unique().alias("_values"))
        .filter((pl.col("_n") >= MIN_IC_STOCKS) & (pl.col("_values") > 1))
    )
    return _aggregate(dates, keys, [pl.len().cast(pl.Int64).alias("n_split_dates")])


def _ic_stats(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    """``by…, n_dates, constant_dates, ic, ic_se, rank_ic, rank_ic_se, icir, rank_icir``
    (means over the scored dates; IR = mean / std; SE Newey–West)."""
    lag, max_lag = _lag_expr(frame, by)
    stats = _aggregate(
        _daily_correlations(frame, by).with_columns(lag.alias(NW_LAG)),
        by,
        [
            pl.len().cast(pl.Int64).alias("n_dates"),
            pl.col("_constant").sum().cast(pl.Int64).alias("constant_dates"),
            pl.col("ic").mean(),
            _newey_west_se("ic", max_lag).alias("ic_se"),
            pl.col("rank_ic").mean(),
            _newey_west_se("rank_ic", max_lag).alias("rank_ic_se"),
            _ratio("ic").alias("icir"),
            _ratio("rank_ic").alias("rank_icir"),
        ],
    )
    return stats


def _with_coverage(table: pl.LazyFrame, frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    """Attach ``n_split_dates`` and ``coverage`` (scored / split dates) to a per-series table
    holding ``n_dates`` and ``constant_dates``; missing counts become 0."""
    split_keys = [k for k in by if k != "model"]
    split_dates = _split_dates(frame, by)
    joined = (
        table.join(split_dates, on=split_keys, how="left")
        if split_keys
        else table.join(split_dates, how="cross")
    )
    return joined.with_columns(
        pl.col(c).fill_null(0) for c in ("n_dates", "constant_dates", "n_split_dates")
    ).with_columns(
        pl.when(pl.col("n_split_dates") > 0)
        .then(pl.col("n_dates") / pl.col("n_split_dates"))
        .alias("coverage")
    )


def ic_summary(frame: pl.DataFrame) -> dict[str, float | int | None]:
    """``n_dates, constant_dates, ic, ic_se, rank_ic, rank_ic_se, icir, rank_icir,
    n_split_dates, coverage`` of one prediction series.

    IC / RankIC are means over the scored dates of the daily correlations (a constant-prediction
    date scores 0); ``*_se`` their Newey–West standard errors with horizon − 1 lags;
    ICIR = mean / std (ddof=1) over dates (not annualized). Undefined values (no dates, one
    date) are None.
    """
    return _with_coverage(_ic_stats(frame, ()), frame, ()).collect().row(0, named=True)


def ic_table(frame: pl.DataFrame, by: Sequence[str] = SERIES_KEYS) -> pl.DataFrame:
    """``ic_summary`` of every series of ``frame`` (one row per value of the ``by`` keys)."""
    return _with_coverage(_ic_stats(frame, by), frame, by).collect()


# --------------------------------------------------------------------------- portfolios


def _ranked(frame: pl.DataFrame, by: Sequence[str]) -> pl.LazyFrame:
    """Valid rows with ``_pos`` (0 = lowest prediction of the date), ``_n`` (stocks that date)
    and ``_constant`` (the date's predictions are all equal: no ranking, no book)."""
    group = [*by, "date"]
    return (
        _valid(frame, by, extra=("code",))
        .sort([*group, "prediction", "code"])
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int64).over(group).alias("_pos"),
            pl.len().cast(pl.Int64).over(group).alias("_n"),
            (pl.col("prediction").first() == pl.col("prediction").last()).over(group).alias("_constant"),
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
    the book's return over the target's horizon. On a date whose predictions are all equal
    there is no ranking: the book is empty, ``long`` / ``short`` are null and ``spread`` is 0.

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
    books = ranked.filter(pl.col("_n") >= 2)
    legs = (
        books.with_columns(
            pl.when(pl.col("_constant"))
            .then(0.0)
            .when(pl.col("_pos") >= pl.col("_n") - size)
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
    # Number the rebalance dates of each series (empty books included) so "the book lag dates
    # earlier" is a join.
    dates = (
        books.group_by(group)
        .agg(pl.col("_constant").first())
        .with_columns(_over(pl.col("date").rank("dense"), by).cast(pl.Int64).alias("_i"))
    )
    previous = (
        legs.join(dates.select(*group, "_i"), on=group)
        .with_columns((pl.col("_i") + lag_expr).alias("_i"))
        .join(dates.select(*by, pl.col("date").alias("_date"), "_i"), on=[*by, "_i"])
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
        dates.join(returns, on=group, how="left")
        .join(turnover, on=group, how="left")
        .select(
            *group,
            "long",
            "short",
            pl.when(pl.col("_constant")).then(0.0).otherwise(pl.col("long") - pl.col("short")).alias("spread"),
            pl.col("turnover").fill_null(0.0),
        )
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
    frame: pl.DataFrame,
    top: int = 200,
    bottom: int = 200,
    by: Sequence[str] = (),
    leg_share: float | None = None,
) -> pl.DataFrame:
    """``by…, date, spread``: the JPX competition's daily weighted top-minus-bottom return.

    Per date, stocks are ranked by prediction; the top ``top`` get weights linspace(2, 1) from
    the best down, the bottom ``bottom`` likewise from the worst up, and
    spread = Σ w·r_top / Σ w − Σ w·r_bottom / Σ w. The competition's published
    ``calc_spread_return_sharpe`` divides by mean(w) instead of Σ w, i.e. multiplies both legs
    by the leg size: the same score (the size is constant), and a return in return units here.
    A date with fewer than ``top + bottom`` stocks has no competition spread (null): the
    competition never ranked fewer than 400 names.

    ``leg_share`` gives the scaled variant instead: each leg holds
    ``min(top, floor(n · leg_share))`` (≥ 1) names, so every date with ≥ 2 stocks has a spread.
    A date whose predictions are all equal holds nothing: spread 0.
    """
    return _jpx_spread(_ranked(frame, by), by, top, bottom, leg_share).collect()


def _jpx_spread(
    ranked: pl.LazyFrame, by: Sequence[str], top: int, bottom: int, leg_share: float | None
) -> pl.LazyFrame:
    if top < 1 or bottom < 1:
        raise ValueError(f"top and bottom must be >= 1, got {top}, {bottom}")
    group = [*by, "date"]
    if leg_share is None:
        top_size, bottom_size = pl.lit(top, dtype=pl.Int64), pl.lit(bottom, dtype=pl.Int64)
        enough = pl.col("_n") >= top + bottom
    else:
        scaled = (pl.col("_n") * leg_share + _EPS).floor().cast(pl.Int64).clip(lower_bound=1)
        top_size = pl.min_horizontal(pl.lit(top, dtype=pl.Int64), scaled)
        bottom_size = pl.min_horizontal(pl.lit(bottom, dtype=pl.Int64), scaled)
        enough = pl.lit(True)
    from_best = pl.col("_n") - 1 - pl.col("_pos")
    from_worst = pl.col("_pos")
    w_top = pl.when(from_best < top_size).then(_jpx_weight(from_best, top_size))
    w_bottom = pl.when(from_worst < bottom_size).then(_jpx_weight(from_worst, bottom_size))
    spread = (w_top * pl.col("target")).sum() / w_top.sum() - (
        w_bottom * pl.col("target")
    ).sum() / w_bottom.sum()
    return (
        ranked.filter(pl.col("_n") >= 2)
        .group_by(group)
        .agg(
            pl.when(~enough.first())
            .then(None)
            .when(pl.col("_constant").first())
            .then(0.0)
            .otherwise(spread)
            .alias("spread")
        )
        .sort(group)
    )


def _jpx_score(spread: str) -> pl.Expr:
    """mean / std of the daily spreads; null if any date had no spread (too few stocks)."""
    return pl.when(pl.col(spread).null_count() == 0).then(_ratio(spread))


def jpx_competition_score(frame: pl.DataFrame, top: int = 200, bottom: int = 200) -> float | None:
    """mean / std (ddof=1) of ``daily_jpx_spread`` — not annualized (the competition's score).

    None unless every date has at least ``top + bottom`` stocks. The competition scored
    next-day returns only: ``evaluate`` reports it at h = 1 alone.
    """
    daily = daily_jpx_spread(frame, top, bottom)
    return daily.select(_jpx_score("spread")).item() if daily.height else None


def jpx_scaled_score(
    frame: pl.DataFrame, leg_share: float = JPX_SCALED_LEG_SHARE, top: int = 200, bottom: int = 200
) -> float | None:
    """The scaled JPX variant: legs of ``min(200, floor(n · leg_share))`` names, any horizon
    (h-day spreads of consecutive dates overlap), mean / std not annualized. Not the
    competition's metric."""
    daily = daily_jpx_spread(frame, top, bottom, leg_share=leg_share)
    return daily.select(_ratio("spread")).item() if daily.height else None


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
    ``METRIC_COLUMNS``.

    Coverage first: ``n_dates`` scored, ``n_split_dates`` in the split/horizon, ``coverage``
    (their ratio) and ``constant_dates`` (scored 0). ``long_short`` is the mean spread of
    ``long_short_returns`` (lag=horizon) and ``long_short_se`` its Newey–West SE; Sharpe is
    mean / std of the same spreads annualized by √(252/h) (h-day holding-period returns, so a
    year holds 252/h of them; at h = 1 the daily Sharpe × √252) — a point estimate whose
    significance is ``long_short / long_short_se``, not Sharpe × √years (the h-day spreads of
    consecutive dates overlap). Net = spread − cost_bp/1e4 · turnover. ``jpx_score`` is the
    competition's metric (h = 1, 200/200, every date ≥ 400 stocks; null otherwise);
    ``jpx_scaled_score`` the scaled variant (``jpx_scaled_score()``) at every horizon.
    ``n_rows`` counts the rows with both prediction and target; a series without any (e.g.
    ``live``) keeps its row with nulls and zero counts.
    """
    validate_predictions(frame)
    keys = [k for k in SERIES_KEYS if k in frame.columns]
    lag, max_lag = _lag_expr(frame, keys)
    series = frame.lazy().group_by(keys).agg(
        (pl.col("prediction").is_not_null() & pl.col("target").is_not_null())
        .sum()
        .cast(pl.Int64)
        .alias("n_rows")
    )
    ranked = _ranked(frame, keys).collect().lazy()  # sorted once, shared by every portfolio metric
    book = _book(ranked, keys, quantile, lag=pl.col("horizon") if "horizon" in keys else 1)
    periods = (
        pl.lit(TRADING_DAYS_PER_YEAR, dtype=pl.Float64) / pl.col("horizon")
        if "horizon" in keys
        else pl.lit(float(TRADING_DAYS_PER_YEAR))
    )
    sharpes = (
        book.with_columns(
            net_returns(pl.col("spread"), pl.col("turnover"), cost_bp).alias("net"), lag.alias(NW_LAG)
        )
        .group_by(keys)
        .agg(
            pl.col("spread").mean().alias("long_short"),
            _newey_west_se("spread", max_lag).alias("long_short_se"),
            _ratio("spread").alias("sharpe_gross"),
            _ratio("net").alias("sharpe_net"),
        )
        .with_columns(
            (pl.col("sharpe_gross") * periods.sqrt()),
            (pl.col("sharpe_net") * periods.sqrt()),
        )
    )
    competition = pl.col("horizon") == JPX_HORIZON if "horizon" in keys else pl.lit(True)
    jpx = (
        _jpx_spread(ranked, keys, jpx_top, jpx_bottom, None)
        .group_by(keys)
        .agg(_jpx_score("spread").alias("jpx_score"))
        .join(
            _jpx_spread(ranked, keys, jpx_top, jpx_bottom, JPX_SCALED_LEG_SHARE)
            .group_by(keys)
            .agg(_ratio("spread").alias("jpx_scaled_score")),
            on=keys,
            how="full",
            coalesce=True,
        )
        .with_columns(pl.when(competition).then(pl.col("jpx_score")).alias("jpx_score"))
    )
    table = series
    for part in (
        _ic_stats(frame, keys),
        sharpes,
        jpx,
        _hit_rate_stats(frame, keys),
        _top_decile_stats(ranked, keys, quantile),
    ):
        table = table.join(part, on=keys, how="left") if keys else pl.concat([table, part], how="horizontal")
    return _with_coverage(table, frame, keys).select(*keys, *METRIC_COLUMNS).sort(keys).collect()


def coverage(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, split, horizon) with ``COVERAGE_COLUMNS``: dates scored, dates in
    the split with a measurable target, their ratio, and dates with all-equal predictions."""
    validate_predictions(frame)
    keys = [k for k in SERIES_KEYS if k in frame.columns]
    series = frame.lazy().select(keys).unique()
    counts = _aggregate(
        _daily_correlations(frame, keys),
        keys,
        [
            pl.len().cast(pl.Int64).alias("n_dates"),
            pl.col("_constant").sum().cast(pl.Int64).alias("constant_dates"),
        ],
    )
    table = series.join(counts, on=keys, how="left") if keys else counts
    return _with_coverage(table, frame, keys).select(*keys, *COVERAGE_COLUMNS).sort(keys).collect()
