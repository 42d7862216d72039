"""The non-neural baselines the ATFT-GAT-FAN model is compared with.

- **LightGBM** (``model="lightgbm"``): one gradient-boosted model per horizon on the same
  dataset rows and catalog features, set up for cross-sectional ranking: by default it is fit
  on the per-date normal score of the forward return (``normal_scores``), so date-level
  features (the market's move, the calendar) cannot explain the label and every split must
  separate stocks of the same date — fit on raw returns, the first trees split dates apart
  and the model predicts one value per date. Leaves hold at least half a median date's stocks,
  and early stopping on the mean per-date validation RankIC starts only after
  ``min_boost_round`` trees (the first one or two rounds' RankIC is noise). Deterministic:
  ``deterministic=True, force_row_wise=True``, one seed, a fixed thread count.
- **Ridge** (``model="ridge"``): a linear ranking model on per-date z-scored features and the
  normal-score target, its penalty chosen on the validation RankIC.
- **Momentum / reversal rule** (``model="rule"``): a fixed score, no fitting.

All emit the long predictions contract (DESIGN §5): ``date, code, horizon, prediction,
q05 … q95, target, split, model``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import ndtri

from atft_pipeline.dataset.normalization import cross_sectional_normalize
from atft_pipeline.evaluation.metrics import (
    PREDICTION_COLUMNS,
    QUANTILE_COLUMNS,
    QUANTILE_LEVELS,
    MeanDailyRankIC,
)
from atft_pipeline.features.catalog import HORIZONS
from atft_pipeline.progress import Counter

LIGHTGBM_MODEL = "lightgbm"
RIDGE_MODEL = "ridge"
RULE_MODEL = "rule"
MIN_LEAF_ROWS = 20  # the floor of the universe-sized min_data_in_leaf


class LightGBMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_boost_round: int = Field(1000, ge=1, description="upper bound on trees")
    min_boost_round: int = Field(
        50, ge=1, description="trees grown before early stopping may stop or select"
    )
    early_stopping_rounds: int = Field(50, ge=1)
    early_stopping_metric: Literal["rank_ic", "l2"] = Field(
        "rank_ic", description="val criterion: mean per-date Spearman, or L2 of the fitted label"
    )
    target_transform: Literal["normal_score", "raw"] = Field(
        "normal_score",
        description="label: the per-date normal score of the return (ranking), or the raw return",
    )
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    max_depth: int = Field(-1, ge=-1, description="-1: unlimited")
    min_data_in_leaf: int | None = Field(
        None, ge=1, description="None: half the median number of stocks per training date"
    )
    feature_fraction: float = Field(0.7, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(10.0, ge=0)
    max_bin: int = Field(255, ge=2)
    seed: int = 42
    num_threads: int = Field(2, ge=1)

    def leaf_rows(self, rows_per_date: float) -> int:
        """``min_data_in_leaf``, or half a median training date's stocks (≥ MIN_LEAF_ROWS)."""
        if self.min_data_in_leaf is not None:
            return self.min_data_in_leaf
        return max(MIN_LEAF_ROWS, int(rows_per_date // 2))

    def params(self, rows_per_date: float) -> dict[str, object]:
        return {
            "objective": "regression",
            "metric": "l2" if self.early_stopping_metric == "l2" else "None",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.leaf_rows(rows_per_date),
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            # Features are binned once for every horizon (``BinnedSplits``), before this
            # horizon's min_data_in_leaf is known: no pre-filtering by it at binning time.
            "feature_pre_filter": False,
            "seed": self.seed,  # derives the bagging / feature-fraction / data seeds
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }


def _target_column(horizon: int) -> str:
    return f"target_{horizon}d"


def _horizon_of(target: str) -> int:
    for h in HORIZONS:
        if target == _target_column(h):
            return h
    raise ValueError(f"unknown target column {target!r}; expected one of target_{{{HORIZONS}}}d")


def _split_column(frame: pl.DataFrame, split: str | None) -> pl.Expr:
    if split is not None:
        return pl.lit(split, dtype=pl.String)
    if "split" in frame.columns:
        return pl.col("split").cast(pl.String)
    raise ValueError("frame has no 'split' column; pass split='val' / 'test' / 'live'")


def _long_format(
    frame: pl.DataFrame,
    horizon: int,
    prediction: pl.Series,
    quantiles: Mapping[str, pl.Expr],
    model: str,
    split: str | None,
) -> pl.DataFrame:
    """Rows of ``frame`` (``date, code``, its ``target_{h}d`` when present) in contract form."""
    target = _target_column(horizon)
    target_expr = pl.col(target) if target in frame.columns else pl.lit(None)
    return frame.select(
        "date",
        "code",
        pl.lit(horizon, dtype=pl.Int32).alias("horizon"),
        prediction.cast(pl.Float64).alias("prediction"),
        target_expr.cast(pl.Float64).alias("target"),
        _split_column(frame, split).alias("split"),
        pl.lit(model, dtype=pl.String).alias("model"),
    ).with_columns(**{q: expr.cast(pl.Float64) for q, expr in quantiles.items()}).select(
        PREDICTION_COLUMNS
    )


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")


def _features(frame: pl.DataFrame, feature_columns: Sequence[str]) -> np.ndarray:
    """Feature matrix with nulls as NaN (LightGBM's missing value)."""
    return frame.select(pl.col(list(feature_columns)).cast(pl.Float32)).to_numpy()


def normal_scores(frame: pl.DataFrame, column: str) -> np.ndarray:
    """Per-date normal score of ``column``: Φ⁻¹(rank / (n + 1)), average ranks for ties.

    n is the date's count of known values; the scores of a date are symmetric around 0 with
    unit-normal spacing, so every date weighs the same whatever its volatility. Null stays NaN.
    """
    ranked = frame.select(
        pl.col(column).rank("average").over("date").alias("_rank"),
        pl.col(column).count().over("date").alias("_n"),
    )
    quantile = (ranked["_rank"] / (ranked["_n"] + 1)).cast(pl.Float64).to_numpy()
    return ndtri(np.where(np.isnan(quantile), np.nan, quantile))


def _rows_per_date(frame: pl.DataFrame) -> float:
    return float(frame.group_by("date").len()["len"].median())


def _early_stopping(min_rounds: int, patience: int) -> Callable[[lgb.callback.CallbackEnv], None]:
    """Stop ``patience`` rounds after the best validation score, never before ``min_rounds``
    trees; only iterations from ``min_rounds`` on can be selected as the best."""
    best = {"score": float("-inf"), "iteration": min_rounds - 1, "results": []}

    def callback(env: lgb.callback.CallbackEnv) -> None:
        _, name, score, higher_better = env.evaluation_result_list[0][:4]
        score = score if higher_better else -score
        if env.iteration + 1 >= min_rounds and score > best["score"]:
            best.update(score=score, iteration=env.iteration, results=env.evaluation_result_list)
        if env.iteration + 1 >= min_rounds and env.iteration - best["iteration"] >= patience:
            raise lgb.callback.EarlyStopException(best["iteration"], best["results"])
        if env.iteration + 1 == env.end_iteration and best["results"]:
            raise lgb.callback.EarlyStopException(best["iteration"], best["results"])

    callback.order = 30  # after LightGBM's own evaluation logging
    return callback


def _quantiles(point: pl.Series, offsets: Mapping[str, float]) -> dict[str, pl.Expr]:
    """Quantile columns: point + offset, or for a ranking score (no offsets) ``q50`` = the
    score and the other quantiles null."""
    if offsets:
        return {q: pl.lit(point) + offset for q, offset in offsets.items()}
    return {q: pl.lit(point) if q == "q50" else pl.lit(None) for q in QUANTILE_COLUMNS}


# --------------------------------------------------------------------------- LightGBM


@dataclass(frozen=True)
class LightGBMModel:
    """One horizon's booster (trimmed to its best iteration) and its quantile offsets.

    ``residual_offsets`` (raw-return models) maps each quantile column to quantile_q − median
    of the validation residuals (target − prediction) at the best iteration; a row's ``qXX`` is
    its point prediction plus that offset, and ``q50`` is the point prediction itself (the
    contract's median). The offsets are ordered, so the quantiles never cross. They are fit on
    the validation window, so val quantile coverage is in-sample; test coverage is honest.
    Empty for a ranking (normal-score) model: its ``q50`` is the score, other quantiles null.
    """

    horizon: int
    target: str
    feature_columns: tuple[str, ...]
    booster: lgb.Booster
    best_iteration: int
    residual_offsets: dict[str, float]
    val_rank_ic: float | None

    def predict(self, frame: pl.DataFrame, split: str | None = None) -> pl.DataFrame:
        """Long-format predictions for every row of ``frame`` (features may be null)."""
        _require_columns(frame, ["date", "code", *self.feature_columns], f"frame for {self.target}")
        point = pl.Series("prediction", self.booster.predict(_features(frame, self.feature_columns)))
        quantiles = _quantiles(point, self.residual_offsets)
        return _long_format(frame, self.horizon, point, quantiles, LIGHTGBM_MODEL, split)

    def to_dict(self) -> dict[str, object]:
        return {
            "horizon": self.horizon,
            "target": self.target,
            "feature_columns": list(self.feature_columns),
            "booster": self.booster.model_to_string(),
            "best_iteration": self.best_iteration,
            "residual_offsets": self.residual_offsets,
            "val_rank_ic": self.val_rank_ic,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LightGBMModel:
        return cls(
            horizon=int(data["horizon"]),
            target=str(data["target"]),
            feature_columns=tuple(data["feature_columns"]),
            booster=lgb.Booster(model_str=data["booster"]),
            best_iteration=int(data["best_iteration"]),
            residual_offsets={k: float(v) for k, v in dict(data["residual_offsets"]).items()},
            val_rank_ic=data["val_rank_ic"],
        )


def _rank_ic_feval(
    val: pl.DataFrame, target: str
) -> Callable[[np.ndarray, lgb.Dataset], tuple[str, float, bool]]:
    """LightGBM eval function: mean per-date Spearman of the current predictions on val
    (``ic_summary``'s RankIC, computed without a frame per boosting round)."""
    score_of = MeanDailyRankIC(val["date"].to_numpy(), val[target].cast(pl.Float64).to_numpy())

    def feval(preds: np.ndarray, _data: lgb.Dataset) -> tuple[str, float, bool]:
        score = score_of(preds)
        return "rank_ic", (score if score is not None else float("-inf")), True

    return feval


@dataclass(frozen=True)
class BinnedSplits:
    """Train and val features binned once for every horizon's model.

    LightGBM's bin boundaries come from the feature values of every train row (a feature is
    known whether or not a row's h-day outcome is), so the horizons share one binning and each
    model trains on the subset of rows with a known target. Rows are sorted by ``date, code``:
    bins and bagging depend on row order, so identical rows in another order would train
    another model.
    """

    train: pl.DataFrame
    val: pl.DataFrame
    feature_columns: tuple[str, ...]
    train_set: lgb.Dataset
    val_set: lgb.Dataset
    x_val: np.ndarray

    @classmethod
    def build(
        cls, train: pl.DataFrame, val: pl.DataFrame, feature_columns: Sequence[str], config: LightGBMConfig
    ) -> BinnedSplits:
        names = list(feature_columns)
        columns = ["date", "code", *names]
        _require_columns(train, columns, "train frame")
        _require_columns(val, columns, "val frame")
        train, val = train.sort("date", "code"), val.sort("date", "code")
        params = {"max_bin": config.max_bin, "feature_pre_filter": False, "verbosity": -1}
        train_set = lgb.Dataset(
            _features(train, names), label=np.zeros(train.height), feature_name=names, params=params
        ).construct()
        x_val = _features(val, names)
        val_set = lgb.Dataset(x_val, label=np.zeros(val.height), reference=train_set, params=params).construct()
        return cls(train, val, tuple(names), train_set, val_set, x_val)


def train_lightgbm(
    train: pl.DataFrame,
    val: pl.DataFrame,
    feature_columns: Sequence[str],
    target: str = "target_1d",
    config: LightGBMConfig | None = None,
    binned: BinnedSplits | None = None,
) -> LightGBMModel:
    """Fit one horizon's model on ``train`` and early-stop it on ``val``.

    Rows with a null target are dropped (their outcome is unknown); null features stay null
    and LightGBM routes them as missing. The label is the per-date normal score of the target
    (``target_transform="normal_score"``) or the raw target. Quantile offsets come from the
    validation residuals when the label is the raw return; a normal-score model predicts a
    ranking score, so its ``q50`` is the score and the other quantiles are null. ``binned``:
    the same ``train``/``val`` already binned (``BinnedSplits.build``), shared by horizons.
    """
    config = config or LightGBMConfig()
    horizon = _horizon_of(target)
    _require_columns(train, [target], "train frame")
    _require_columns(val, [target], "val frame")
    if binned is None:
        binned = BinnedSplits.build(train, val, feature_columns, config)
    elif binned.feature_columns != tuple(feature_columns) or binned.train.height != train.height:
        raise ValueError("binned splits were built from other frames or feature columns")
    train_rows = np.flatnonzero(binned.train[target].is_not_null().to_numpy())
    val_rows = np.flatnonzero(binned.val[target].is_not_null().to_numpy())
    for name, rows in (("train", train_rows), ("val", val_rows)):
        if rows.size == 0:
            raise ValueError(f"{name} frame has no rows with a known {target!r}")
    train, val = binned.train[train_rows], binned.val[val_rows]
    raw = config.target_transform == "raw"

    def label(part: pl.DataFrame) -> np.ndarray:
        return part[target].cast(pl.Float64).to_numpy() if raw else normal_scores(part, target)

    params = config.params(_rows_per_date(train))
    train_set = binned.train_set.subset(train_rows.tolist(), params=params).construct()
    train_set.set_label(label(train))
    val_set = binned.val_set.subset(val_rows.tolist(), params=params).construct()
    val_set.set_label(label(val))
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[val_set],
        valid_names=["val"],
        feval=_rank_ic_feval(val, target) if config.early_stopping_metric == "rank_ic" else None,
        callbacks=[_early_stopping(config.min_boost_round, config.early_stopping_rounds)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the selected trees so the in-memory model and a reloaded one are identical.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    predicted = booster.predict(binned.x_val[val_rows])
    if raw:
        residuals = val[target].cast(pl.Float64).to_numpy() - predicted
        median = float(np.quantile(residuals, 0.5))
        offsets = {
            column: 0.0 if level == 0.5 else float(np.quantile(residuals, level)) - median
            for column, level in zip(QUANTILE_COLUMNS, QUANTILE_LEVELS, strict=True)
        }
    else:
        offsets = {}
    # NumPy in row order (rows sorted by date, code): the same value to the last bit for the
    # same rows in any input order, unlike a parallel aggregation.
    val_rank_ic = MeanDailyRankIC(val["date"].to_numpy(), val[target].cast(pl.Float64).to_numpy())(predicted)
    return LightGBMModel(horizon, target, binned.feature_columns, booster, best, offsets, val_rank_ic)


@dataclass(frozen=True)
class LightGBMBaseline:
    """One ``LightGBMModel`` per horizon; predicts all horizons at once."""

    models: dict[int, LightGBMModel]

    def predict(self, frame: pl.DataFrame, split: str | None = None) -> pl.DataFrame:
        return pl.concat([self.models[h].predict(frame, split) for h in sorted(self.models)])

    def to_json(self) -> str:
        return json.dumps({str(h): m.to_dict() for h, m in sorted(self.models.items())})

    @classmethod
    def from_json(cls, text: str) -> LightGBMBaseline:
        return cls({int(h): LightGBMModel.from_dict(d) for h, d in json.loads(text).items()})


def train_lightgbm_baseline(
    train: pl.DataFrame,
    val: pl.DataFrame,
    feature_columns: Sequence[str],
    config: LightGBMConfig | None = None,
    horizons: Sequence[int] = HORIZONS,
) -> LightGBMBaseline:
    """One independently early-stopped model per horizon (``target_{h}d``)."""
    counter = Counter("LightGBM horizons trained", len(horizons), every_s=0.0)
    config = config or LightGBMConfig()
    binned = BinnedSplits.build(train, val, feature_columns, config)
    models: dict[int, LightGBMModel] = {}
    for h in horizons:
        models[h] = train_lightgbm(train, val, feature_columns, _target_column(h), config, binned)
        counter.advance()
    return LightGBMBaseline(models)


# --------------------------------------------------------------------------- ridge


class RidgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alphas: tuple[float, ...] = Field(
        (1.0, 10.0, 100.0, 1000.0, 10000.0),
        min_length=1,
        description="L2 penalties tried; the one with the best val RankIC is kept",
    )
    clip: float = Field(5.0, gt=0, description="per-date z-scores are clipped at ±clip")

    def model_post_init(self, _context: object) -> None:
        if any(a <= 0 for a in self.alphas):
            raise ValueError(f"ridge alphas must be > 0, got {self.alphas}")


def _standardized(frame: pl.DataFrame, feature_columns: Sequence[str], clip: float) -> np.ndarray:
    """Per-date z-scores of the features, a missing value at its date's mean (0)."""
    z = cross_sectional_normalize(frame.lazy(), list(feature_columns), clip).collect()
    return z.select(pl.col(list(feature_columns)).fill_null(0.0).cast(pl.Float64)).to_numpy()


@dataclass(frozen=True)
class RidgeModel:
    """One horizon's ridge coefficients on per-date z-scored features.

    Every feature and the normal-score label have mean 0 within each date, so there is no
    intercept: a constant would not change any date's ranking.
    """

    horizon: int
    target: str
    feature_columns: tuple[str, ...]
    coefficients: tuple[float, ...]
    alpha: float
    clip: float
    val_rank_ic: float | None

    def predict(self, frame: pl.DataFrame, split: str | None = None) -> pl.DataFrame:
        _require_columns(frame, ["date", "code", *self.feature_columns], f"frame for {self.target}")
        point = pl.Series(
            "prediction", _standardized(frame, self.feature_columns, self.clip) @ np.asarray(self.coefficients)
        )
        return _long_format(frame, self.horizon, point, _quantiles(point, {}), RIDGE_MODEL, split)


def _fit_ridge(
    x: np.ndarray,
    train: pl.DataFrame,
    x_val: np.ndarray,
    val: pl.DataFrame,
    feature_columns: Sequence[str],
    target: str,
    config: RidgeConfig,
) -> RidgeModel:
    """Ridge on standardized matrices (rows with a null target included, masked out here)."""
    horizon = _horizon_of(target)
    known = train[target].is_not_null().to_numpy()
    known_val = val[target].is_not_null().to_numpy()
    if not known.any() or not known_val.any():
        name = "train" if not known.any() else "val"
        raise ValueError(f"{name} frame has no rows with a known {target!r}")
    x, x_val = x[known], x_val[known_val]
    y = normal_scores(train.filter(known), target)
    gram, moment = x.T @ x, x.T @ y
    scored = val.filter(known_val)
    # the mean per-date RankIC of ic_summary, with the target's ranks computed once
    val_rank_ic = MeanDailyRankIC(scored["date"].to_numpy(), scored[target].to_numpy())
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in config.alphas:
        beta = np.linalg.solve(gram + alpha * np.eye(len(feature_columns)), moment)
        rank_ic = val_rank_ic(x_val @ beta)
        rank_ic = float("-inf") if rank_ic is None else rank_ic
        if best is None or rank_ic > best[1]:
            best = (alpha, rank_ic, beta)
    alpha, rank_ic, beta = best
    return RidgeModel(
        horizon, target, tuple(feature_columns), tuple(float(b) for b in beta), alpha, config.clip,
        None if rank_ic == float("-inf") else rank_ic,
    )


def train_ridge(
    train: pl.DataFrame,
    val: pl.DataFrame,
    feature_columns: Sequence[str],
    target: str = "target_1d",
    config: RidgeConfig | None = None,
) -> RidgeModel:
    """Solve (XᵀX + αI) β = Xᵀy for each α on ``train`` (X per-date z-scored features, y the
    per-date normal score of the target) and keep the α with the best mean per-date RankIC on
    ``val``. Rows with a null target are dropped; the z-scores use every row of a date."""
    config = config or RidgeConfig()
    columns = ["date", "code", *feature_columns, target]
    _require_columns(train, columns, "train frame")
    _require_columns(val, columns, "val frame")
    x = _standardized(train, feature_columns, config.clip)
    x_val = _standardized(val, feature_columns, config.clip)
    return _fit_ridge(x, train, x_val, val, feature_columns, target, config)


def ridge_predictions(
    train: pl.DataFrame,
    val: pl.DataFrame,
    test: pl.DataFrame,
    feature_columns: Sequence[str],
    config: RidgeConfig | None = None,
    horizons: Sequence[int] = HORIZONS,
) -> pl.DataFrame:
    """Fit one ridge per horizon and return its val + test predictions (contract form).

    The features are standardized once per split and shared by every horizon."""
    config = config or RidgeConfig()
    targets = [_target_column(h) for h in horizons]
    for name, frame in (("train", train), ("val", val)):
        _require_columns(frame, ["date", "code", *feature_columns, *targets], f"{name} frame")
    _require_columns(test, ["date", "code", *feature_columns], "test frame")
    x = {
        name: _standardized(frame, feature_columns, config.clip)
        for name, frame in (("train", train), ("val", val), ("test", test))
    }
    parts = []
    for target in targets:
        model = _fit_ridge(x["train"], train, x["val"], val, feature_columns, target, config)
        for name, frame in (("val", val), ("test", test)):
            point = pl.Series("prediction", x[name] @ np.asarray(model.coefficients))
            parts.append(
                _long_format(frame, model.horizon, point, _quantiles(point, {}), RIDGE_MODEL, name)
            )
    return pl.concat(parts)


# --------------------------------------------------------------------------- rule


def momentum_reversal_rule(
    frame: pl.DataFrame,
    log_return_short: str = "logret_5d",
    log_return_long: str = "logret_60d",
    horizons: Sequence[int] = HORIZONS,
    split: str | None = None,
    clip: float = 5.0,
) -> pl.DataFrame:
    """Score = −z(5-day return) + z(60-day momentum skipping the last 5 days), per date.

    The short-term reversal and the intermediate-term momentum effects, from the price family's
    log returns: because log returns add, the skip-5 momentum is ``logret_60d − logret_5d``
    (the return from t−60 to t−5). z is the per-date cross-sectional z-score clipped at
    ±``clip`` (``cross_sectional_normalize``); a missing input counts as the date's mean (z = 0),
    so every row gets a score. The same score ranks every horizon. The score is a ranking, not
    a return forecast: ``q50`` = the score and the other quantile columns are null.
    """
    _require_columns(frame, ["date", "code", log_return_short, log_return_long], "frame for the rule")
    inputs = frame.select(
        "date",
        pl.col(log_return_short).cast(pl.Float64).alias("_reversal"),
        (pl.col(log_return_long).cast(pl.Float64) - pl.col(log_return_short).cast(pl.Float64)).alias(
            "_momentum"
        ),
    )
    z = cross_sectional_normalize(inputs.lazy(), ["_reversal", "_momentum"], clip).collect()
    score = (-z["_reversal"].fill_null(0.0) + z["_momentum"].fill_null(0.0)).alias("prediction")
    quantiles = _quantiles(score, {})
    return pl.concat([_long_format(frame, h, score, quantiles, RULE_MODEL, split) for h in horizons])
