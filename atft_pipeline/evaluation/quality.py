"""The model-quality benchmark: every model on the same walk-forward folds of a sandbox market.

One synthetic market (``MarketConfig``: stocks × years) is generated, the dataset is built from
its tables with the library's feature families, targets and universe (as ``ml_dataset`` does),
and ``walk_forward`` cuts ``n_folds`` train / val / test folds. On each fold, with the same
rows, targets and normalization statistics (train window only):

* ``oracle``: the planted signals' expected return (the ceiling);
* ``rule``: the fixed momentum / reversal score (no fitting);
* ``ridge`` and ``lightgbm``: the baselines of ``evaluation.baselines``, selected on val;
* ``atft_temporal``, ``atft_fan``, ``atft_gat``, ``atft_full``: ATFT-GAT-FAN after each
  training phase (baseline → +FAN → +GAT → fine-tune; each phase starts from the previous
  phase's best weights), one training run per seed, the training configuration of the
  pipeline config (the demo's budget by default);
* ``atft_ensemble`` (with two or more seeds): the seeds' predictions after the schedule's last
  phase (``ensembled_model``) averaged, each z-scored per date first, as one model (what
  training several seeds and averaging their forecasts would deliver).

Reported per model, fold, horizon (the test split; ``split="val"`` reports the validation
split instead, the one to choose between configurations on): RankIC ± Newey–West SE, RankICIR, decile
long-short Sharpe gross / net, share of the oracle's RankIC, and per planted signal the mean
per-date Spearman correlation of the predictions with that signal's oracle component ± SE.
Neural models: metrics of each seed, averaged over seeds (``seed_sd`` their spread).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from atft_pipeline.config import PipelineConfig
from atft_pipeline.dataset.assemble import assemble_dataset, build_meta
from atft_pipeline.dataset.normalization import compute_normalization_stats
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.dataset.splits import SplitConfig, walk_forward
from atft_pipeline.dataset.targets import compute_targets
from atft_pipeline.evaluation.metrics import evaluate, ic_table
from atft_pipeline.features.catalog import META_COLUMNS, TARGET_COLUMNS
from atft_pipeline.features.registry import compute_family, default_catalog
from atft_pipeline.sandbox.market.signals import SIGNALS

if TYPE_CHECKING:  # torch loads with the training package: only where a model is trained
    from atft_pipeline.training.config import TrainingConfig

log = logging.getLogger(__name__)

ATFT_ABLATIONS = {"baseline": "atft_temporal", "fan": "atft_fan", "gat": "atft_gat", "finetune": "atft_full"}
# The staged ablation credits each phase's gain to its component, but each phase also adds
# epochs; the equal-budget one separates the two (its ``atft_gat`` is the whole architecture).
AblationMode = Literal["staged", "equal_budget"]
EQUAL_BUDGET_VARIANTS = ("baseline", "fan", "gat")
ENSEMBLE_MODEL = "atft_ensemble"
REPORTED = ("rank_ic", "rank_ic_se", "rank_icir", "sharpe_gross", "sharpe_net")


class QualityBenchConfig(BaseModel):
    """Scale and folds of the benchmark; the models' settings come from the pipeline config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_stocks: int = Field(300, ge=20, description="stocks of the sandbox market")
    start: dt.date = Field(dt.date(2021, 1, 4), description="first session of the market")
    end: dt.date = Field(dt.date(2023, 6, 30), description="last session of the market")
    market_seed: int = 7
    warmup_days: int = Field(80, ge=0, description="first sessions left out (momentum warms up)")
    n_folds: int = Field(3, ge=1)
    train_days: int = Field(120, ge=10)
    val_days: int = Field(60, ge=5)
    test_days: int = Field(60, ge=5)
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="ATFT training seeds")
    horizons: tuple[int, ...] = (1, 5)
    families: tuple[str, ...] | None = Field(None, description="feature families (None: all)")
    atft: bool = Field(True, description="train ATFT-GAT-FAN (off: baselines only)")
    split: Literal["val", "test"] = Field(
        "test",
        description="the split the tables report: compare configurations on val, report on test",
    )
    ablation: AblationMode = Field(
        "staged",
        description=(
            "staged: one run per seed through the configured phases, scored after each; "
            "equal_budget: each architecture (temporal, + FAN, + FAN + GAT) trained from scratch "
            "with the same epochs and learning rate"
        ),
    )


@dataclass(frozen=True)
class QualityResult:
    table: pl.DataFrame  # model, fold, horizon, metrics (the reported split)
    signals: pl.DataFrame  # model, fold, horizon, signal, corr, corr_se
    summary: pl.DataFrame  # model, horizon: means over folds
    seconds: dict[str, float]


def sandbox_dataset(tables: dict[str, pl.DataFrame], families: Sequence[str] | None) -> pl.DataFrame:
    """The ``ml_dataset`` frame of a whole market or replay: meta, families, targets."""
    sessions = sorted(tables["markets/calendar"].filter(pl.col("HolDiv") == "1")["Date"].to_list())
    bars = tables["equities/bars/daily"]
    dates = [d for d in sessions if bars["Date"].min() <= d <= bars["Date"].max()]
    raw = raw_frames_from_tables(tables)
    catalog = default_catalog()
    enabled = catalog.enabled(families)
    frames = {f.name: compute_family(f, raw, dates, sessions) for f in enabled}
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, sessions)
    targets = compute_targets(raw["raw_daily_quotes"], sessions, dates)
    return assemble_dataset(meta, frames, targets, catalog, [f.name for f in enabled])


def feature_columns(dataset: pl.DataFrame) -> list[str]:
    return [c for c in dataset.columns if c not in {*META_COLUMNS, *TARGET_COLUMNS}]


def benchmark_folds(dataset: pl.DataFrame, config: QualityBenchConfig) -> list[SplitConfig]:
    days = sorted(dataset.filter("universe")["date"].unique().to_list())[config.warmup_days :]
    return walk_forward(days, config.n_folds, config.train_days, config.val_days, config.test_days)


def _long(frame: pl.DataFrame, column: str, horizons: Sequence[int], model: str, split: str) -> pl.DataFrame:
    return pl.concat(
        frame.select(
            "date", "code", pl.lit(h, pl.Int32).alias("horizon"),
            pl.col(f"{column}_{h}d").cast(pl.Float64).alias("prediction"),
            pl.col(f"target_{h}d").cast(pl.Float64).alias("target"),
        )
        for h in horizons
    ).with_columns(pl.lit(split).alias("split"), pl.lit(model).alias("model"))


def baseline_predictions(
    dataset: pl.DataFrame, oracle: pl.DataFrame, splits: SplitConfig, config: PipelineConfig,
    horizons: Sequence[int],
) -> pl.DataFrame:
    """oracle, rule, ridge and LightGBM on the fold's val and test rows (long format)."""
    from atft_pipeline.evaluation import baselines
    from atft_pipeline.stages.model import universe_splits

    features = feature_columns(dataset)
    part = universe_splits(dataset, splits)
    parts = []
    for split in ("val", "test"):
        rows = part[split].join(oracle, on=["date", "code"], how="left")
        parts.append(_long(rows, "oracle", horizons, "oracle", split))
        parts.append(baselines.momentum_reversal_rule(part[split], horizons=horizons, split=split))
    parts.append(
        baselines.ridge_predictions(
            part["train"], part["val"], part["test"], features, config.evaluation.ridge_config(), horizons
        )
    )
    lgb = baselines.train_lightgbm_baseline(
        part["train"], part["val"], features, config.evaluation.lightgbm_config(), horizons
    )
    parts += [lgb.predict(part["val"], "val"), lgb.predict(part["test"], "test")]
    return _contract(pl.concat(parts, how="diagonal_relaxed"))


def _contract(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "date", "code", pl.col("horizon").cast(pl.Int32), pl.col("prediction").cast(pl.Float64),
        pl.col("target").cast(pl.Float64), "split", "model",
    )


def equal_budget_schedules(training: TrainingConfig) -> dict[str, TrainingConfig]:
    """One single-phase schedule per architecture: the configured schedule's total epochs at
    its first phase's settings (learning rate, warm-up, clipping), so the variants differ in
    their path alone."""
    first = training.phases[0]
    return {
        variant: training.model_copy(
            update={
                "phases": (first.model_copy(update={"name": variant, "epochs": training.total_epochs}),)
            }
        )
        for variant in EQUAL_BUDGET_VARIANTS
    }


def atft_predictions(
    dataset: pl.DataFrame, splits: SplitConfig, config: PipelineConfig, seed: int, run_dir: Path,
    horizons: Sequence[int], ablation: AblationMode = "staged",
) -> pl.DataFrame:
    """Train ATFT-GAT-FAN and predict val + test with the best checkpoint of each ablation
    step (model names ``ATFT_ABLATIONS``): ``staged`` trains once through every phase,
    ``equal_budget`` once per architecture (``equal_budget_schedules``)."""
    from atft_pipeline.training import JsonTracker, Panel, load_model, predict, train
    from atft_pipeline.training.checkpoint import best_name

    features = feature_columns(dataset)
    train_rows = dataset.filter(pl.col("universe") & pl.col("date").is_between(splits.train.start, splits.train.end))
    stats = compute_normalization_stats(train_rows.lazy(), features)
    model_config = config.model.build(len(features))
    # one model per seed: the seeds' ensemble is the benchmark's own row (``seed_ensemble``)
    training_config = config.training.build().model_copy(update={"seed": seed, "ensemble_members": 1})
    # Only the dates the fold needs: its windows plus the input / graph lookback.
    panel = Panel.for_model(
        dataset, stats, model_config, return_column=config.training.graph_return_column,
        span=(splits.train.start, splits.test.end),
    )
    if ablation == "staged":
        runs = {run_dir: training_config}
    else:
        runs = {run_dir / v: c for v, c in equal_budget_schedules(training_config).items()}
    windows = {
        split: panel.date_indices(getattr(splits, split).start, getattr(splits, split).end)
        for split in ("val", "test")
    }
    parts = []
    for directory, schedule in runs.items():
        directory.mkdir(parents=True, exist_ok=True)
        train(panel, splits, model_config, schedule, directory, JsonTracker(directory / "metrics.jsonl"))
        for phase in (p.name for p in schedule.phases):
            path = directory / best_name(phase)
            if not path.exists():  # the phase never had a defined validation RankIC
                log.warning("%s: no best checkpoint of phase %s; its row is left out", directory, phase)
                continue
            model, _ = load_model(path, panel.device)
            for split, dates in windows.items():
                parts.append(predict(model, panel, dates, split, ATFT_ABLATIONS[phase]))
    predictions = pl.concat(parts).filter(pl.col("horizon").is_in(list(horizons)))
    return _contract(predictions)


def ensembled_model(training: TrainingConfig, ablation: AblationMode) -> str:
    """The ablation row the seeds' ensemble averages: the model after the schedule's last phase
    (``atft_full`` after a fine-tune, ``atft_gat`` when the schedule ends with the GAT phase);
    in the equal-budget mode the whole architecture."""
    last = EQUAL_BUDGET_VARIANTS[-1] if ablation == "equal_budget" else training.phases[-1].name
    return ATFT_ABLATIONS[last]


def seed_ensemble(seeded: pl.DataFrame, model: str) -> pl.DataFrame:
    """``atft_ensemble``: per split, date, code and horizon the mean over seeds of each seed's
    ``model`` prediction z-scored per date (so no seed weighs more for a wider spread).
    ``seeded`` holds the long predictions of every seed (column ``seed``); a row is kept where
    every seed predicted it."""
    by_date = ["seed", "split", "date", "horizon"]
    full = seeded.filter(pl.col("model") == model)
    if full.is_empty():
        raise ValueError(f"no {model!r} predictions to ensemble; models: {sorted(seeded['model'].unique())}")
    n_seeds = full["seed"].n_unique()
    z = (pl.col("prediction") - pl.col("prediction").mean().over(by_date)) / pl.col(
        "prediction"
    ).std().over(by_date)
    return _contract(
        full.with_columns(z.fill_nan(None).alias("prediction"))
        .group_by("split", "date", "code", "horizon")
        .agg(pl.col("prediction").mean(), pl.col("target").first(), pl.len().alias("_n"))
        .filter(pl.col("_n") == n_seeds)
        .with_columns(pl.lit(ENSEMBLE_MODEL).alias("model"))
        .sort("split", "date", "horizon", "code")
    )


def _fold_metrics(predictions: pl.DataFrame, cost_bp: float) -> pl.DataFrame:
    keys = ["model", "split", "horizon"]
    return evaluate(predictions.select(*keys, "date", "code", "prediction", "target"), cost_bp=cost_bp).select(
        *keys, *REPORTED
    )


def signal_correlations(predictions: pl.DataFrame, components: pl.DataFrame) -> pl.DataFrame:
    """``model, split, horizon, signal, corr, corr_se``: mean per-date Spearman of the
    predictions with each signal's component (same horizon) ± Newey–West SE."""
    parts = []
    for signal in SIGNALS:
        joined = predictions.join(components, on=["date", "code"], how="inner")
        frame = joined.with_columns(
            pl.coalesce(
                pl.when(pl.col("horizon") == h).then(pl.col(f"{signal}_{h}d"))
                for h in predictions["horizon"].unique().to_list()
            ).alias("target")
        )
        stats = ic_table(frame.select("model", "split", "horizon", "date", "code", "prediction", "target"))
        parts.append(
            stats.select(
                "model", "split", "horizon", pl.lit(signal).alias("signal"),
                pl.col("rank_ic").alias("corr"), pl.col("rank_ic_se").alias("corr_se"),
            )
        )
    return pl.concat(parts)


def _seed_average(table: pl.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pl.DataFrame:
    """Metrics of the seeds of one model averaged (``seed_sd``: spread of the first value)."""
    return table.group_by(keys, maintain_order=True).agg(
        *[pl.col(v).mean() for v in values],
        pl.col(values[0]).std().alias("seed_sd"),
        pl.len().alias("seeds"),
    )


def run_quality_benchmark(
    bench: QualityBenchConfig, config: PipelineConfig, work_dir: Path, *, progress=print
) -> QualityResult:
    """Generate the market, build the dataset, run every model on every fold; see the module
    docstring."""
    from atft_pipeline.sandbox.market import MarketConfig, generate_market
    from atft_pipeline.sandbox.market.oracle import signal_components

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    market = generate_market(
        MarketConfig(seed=bench.market_seed, n_stocks=bench.n_stocks, start=bench.start, end=bench.end)
    )
    components = signal_components(
        market.tables, market.hidden.params, market.hidden.universe.codes, market.hidden.timeline,
        bench.horizons,
    )
    seconds["market"] = time.perf_counter() - t
    t = time.perf_counter()
    dataset = sandbox_dataset(market.tables, bench.families)
    seconds["dataset"] = time.perf_counter() - t
    folds = benchmark_folds(dataset, bench)
    progress(
        f"market {bench.n_stocks} stocks {bench.start}..{bench.end}: dataset {dataset.height:,} rows, "
        f"{len(feature_columns(dataset))} features, {len(folds)} folds "
        f"({seconds['market']:.0f}s market, {seconds['dataset']:.0f}s dataset)"
    )
    tables, signal_tables = [], []
    for k, splits in enumerate(folds):
        t = time.perf_counter()
        predictions = [baseline_predictions(dataset, market.oracle, splits, config, bench.horizons)]
        seconds[f"fold{k}_baselines"] = time.perf_counter() - t
        progress(f"fold {k} ({splits.test.start}..{splits.test.end}): baselines {seconds[f'fold{k}_baselines']:.0f}s")
        seeded = []
        for seed in bench.seeds if bench.atft else ():
            t = time.perf_counter()
            frame = atft_predictions(
                dataset, splits, config, seed, work_dir / f"fold{k}" / f"seed{seed}", bench.horizons,
                bench.ablation,
            )
            seeded.append(frame.with_columns(pl.lit(seed, pl.Int64).alias("seed")))
            seconds[f"fold{k}_atft_seed{seed}"] = time.perf_counter() - t
            progress(f"fold {k}: ATFT seed {seed} {seconds[f'fold{k}_atft_seed{seed}']:.0f}s")
        if len(seeded) >= 2:
            averaged = ensembled_model(config.training.build(), bench.ablation)
            predictions.append(seed_ensemble(pl.concat(seeded), averaged))
        base = pl.concat(predictions).with_columns(pl.lit(None, pl.Int64).alias("seed"))
        everything = pl.concat([base, *seeded]) if seeded else base
        everything = everything.filter(pl.col("split") == bench.split)
        metrics, signals = [], []
        for (seed,), part in everything.group_by(["seed"], maintain_order=True):
            metrics.append(_fold_metrics(part.drop("seed"), config.evaluation.cost_bp).with_columns(pl.lit(seed, pl.Int64).alias("seed")))
            signals.append(signal_correlations(part.drop("seed"), components).with_columns(pl.lit(seed, pl.Int64).alias("seed")))
        fold_table = _seed_average(pl.concat(metrics), ["model", "horizon"], REPORTED)
        oracle = fold_table.filter(pl.col("model") == "oracle").select("horizon", pl.col("rank_ic").alias("_oracle"))
        fold_table = fold_table.join(oracle, on="horizon", how="left").with_columns(
            (pl.col("rank_ic") / pl.col("_oracle")).alias("share_of_oracle")
        ).drop("_oracle")
        tables.append(fold_table.with_columns(pl.lit(k).alias("fold")))
        signal_tables.append(
            _seed_average(pl.concat(signals), ["model", "horizon", "signal"], ["corr", "corr_se"]).with_columns(pl.lit(k).alias("fold"))
        )
    table = pl.concat(tables).sort("horizon", "fold", "model")
    signals = pl.concat(signal_tables).sort("horizon", "signal", "fold", "model")
    return QualityResult(table, signals, summarize(table), seconds)


def summarize(table: pl.DataFrame) -> pl.DataFrame:
    """Means over folds per model and horizon; the SE of a mean of independent fold
    estimates is sqrt(Σ se²) / n_folds. ``folds_beaten`` counts the folds where the model's
    RankIC exceeds that of every baseline (rule, ridge, LightGBM)."""
    best_baseline = (
        table.filter(pl.col("model").is_in(["rule", "ridge", "lightgbm"]))
        .group_by("fold", "horizon").agg(pl.col("rank_ic").max().alias("_best_baseline"))
    )
    return (
        table.join(best_baseline, on=["fold", "horizon"], how="left")
        .group_by("model", "horizon")
        .agg(
            pl.col("rank_ic").mean(),
            ((pl.col("rank_ic_se") ** 2).sum().sqrt() / pl.len()).alias("rank_ic_se"),
            pl.col("rank_icir").mean(),
            pl.col("sharpe_gross").mean(),
            pl.col("sharpe_net").mean(),
            pl.col("share_of_oracle").mean(),
            (pl.col("rank_ic") > pl.col("_best_baseline")).sum().alias("folds_beating_baselines"),
            pl.len().alias("folds"),
        )
        .sort("horizon", "rank_ic", descending=[False, True])
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


_SPLIT_NAMES = {"val": "Validation", "test": "Test"}


def render_markdown(result: QualityResult, bench: QualityBenchConfig) -> str:
    """The summary, per-fold and per-signal tables as Markdown."""
    lines = [
        f"Sandbox market: {bench.n_stocks} stocks, {bench.start} → {bench.end} (seed {bench.market_seed}); "
        f"{bench.n_folds} walk-forward folds of {bench.train_days} train / {bench.val_days} val / "
        f"{bench.test_days} test sessions; ATFT seeds {list(bench.seeds)}, {bench.ablation} ablation. "
        f"{_SPLIT_NAMES[bench.split]} split; SE Newey–West.",
        "",
        "| model | h | RankIC ± SE (mean of folds) | RankICIR | Sharpe gross / net | share of oracle | folds above every baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.summary.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['horizon']} | {_fmt(r['rank_ic'])} ± {_fmt(r['rank_ic_se'])} | "
            f"{_fmt(r['rank_icir'], 3)} | {_fmt(r['sharpe_gross'], 2)} / {_fmt(r['sharpe_net'], 2)} | "
            f"{_fmt(r['share_of_oracle'], 2)} | {r['folds_beating_baselines']} / {r['folds']} |"
        )
    lines += [
        "",
        "Per fold:",
        "",
        "| model | h | fold | RankIC ± SE | seed sd | RankICIR | Sharpe gross / net | share of oracle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.table.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['horizon']} | {r['fold']} | {_fmt(r['rank_ic'])} ± {_fmt(r['rank_ic_se'])} | "
            f"{_fmt(r['seed_sd'])} | {_fmt(r['rank_icir'], 3)} | {_fmt(r['sharpe_gross'], 2)} / "
            f"{_fmt(r['sharpe_net'], 2)} | {_fmt(r['share_of_oracle'], 2)} |"
        )
    per_signal = (
        result.signals.group_by("model", "horizon", "signal")
        .agg(pl.col("corr").mean(), ((pl.col("corr_se") ** 2).sum().sqrt() / pl.len()).alias("se"))
    )
    models = sorted(per_signal["model"].unique().to_list())
    lines += [
        "",
        "Correlation of predictions with each planted signal's oracle component (mean per-date "
        f"Spearman over {bench.split} dates, mean of folds ± SE):",
        "",
        f"| model | h | {' | '.join(SIGNALS)} |",
        "|---|---:|" + "---:|" * len(SIGNALS),
    ]
    for h in sorted(per_signal["horizon"].unique().to_list()):
        for model in models:
            row = per_signal.filter((pl.col("model") == model) & (pl.col("horizon") == h))
            cells = []
            for signal in SIGNALS:
                cell = row.filter(pl.col("signal") == signal)
                cells.append(f"{_fmt(cell['corr'][0], 3)} ± {_fmt(cell['se'][0], 3)}" if cell.height else "—")
            lines.append(f"| {model} | {h} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def log_to_mlflow(result: QualityResult, bench: QualityBenchConfig, tracking_uri: str, markdown_path: Path) -> str:
    """One MLflow run of experiment ``quality_benchmark``: the scale as params, the summary
    as metrics, the Markdown as an artifact; returns the run id."""
    from atft_pipeline.training import MlflowTracker

    tracker = MlflowTracker(tracking_uri, experiment="quality_benchmark", run_name=f"quality-{bench.n_stocks}x{bench.start.year}-{bench.end.year}")
    tracker.log_params(bench.model_dump(mode="json"))
    metrics = {}
    for r in result.summary.iter_rows(named=True):
        for key in ("rank_ic", "rank_ic_se", "rank_icir", "sharpe_gross", "sharpe_net", "share_of_oracle"):
            metrics[f"{r['model']}_{r['horizon']}d_{key}"] = r[key]
    tracker.log_metrics(metrics, step=0)
    tracker.log_artifact(markdown_path)
    tracker.finish("FINISHED")
    return tracker.run_id

