"""The baselines on the real replay, with prediction health, coverage and standard errors.

``python -m bench honest_eval --replay ../shared/realdata/tse_2013_2018`` builds the dataset of
the bar-based families (price, technical, volatility, market) for 2015-06 → 2018-10 with the
library functions (meta with the stock universe, targets, assembly), fits LightGBM (the ranking
setup, and with ``--legacy`` also the former raw-return setup) and ridge on
train 2015-06 → 2017-05, selects on val 2017-06 → 2017-12, and prints per model, split and
horizon: the health section (coverage, constant-prediction dates, stocks per date) and the
metrics with standard errors, as the evaluation report writes them (``--out``).

``--atft`` also trains ATFT-GAT-FAN (the model and training configuration of ``--config``, one
run per ``--seeds`` entry) on the same train / val windows and adds its rows after each
training phase (``atft_temporal`` … ``atft_full``, as in ``bench quality``); with several seeds
each seed is its own model name (``atft_gat_s0`` …), so the spread between seeds is visible,
and ``atft_ensemble`` is their average after the schedule's last phase (as in ``bench
quality``; with ``ensemble_members: 2`` in the config, two seeds are the pipeline's model).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import polars as pl

from atft_pipeline.config import load_config
from atft_pipeline.dataset.assemble import assemble_dataset, build_meta
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.dataset.splits import DateWindow, SplitConfig
from atft_pipeline.dataset.targets import compute_targets
from atft_pipeline.evaluation import baselines
from atft_pipeline.evaluation.health import prediction_health
from atft_pipeline.evaluation.metrics import PREDICTION_COLUMNS, QUANTILE_COLUMNS
from atft_pipeline.evaluation.quality import atft_predictions, ensembled_model, seed_ensemble
from atft_pipeline.evaluation.report import build_report
from atft_pipeline.features.catalog import META_COLUMNS, TARGET_COLUMNS
from atft_pipeline.features.registry import compute_family, default_catalog
from atft_pipeline.sandbox.replay import read_replay

FAMILIES = ["price", "technical", "volatility", "market"]
WINDOWS = {
    "train": (dt.date(2015, 6, 1), dt.date(2017, 5, 31)),
    "val": (dt.date(2017, 7, 3), dt.date(2017, 12, 22)),
    "test": (dt.date(2018, 1, 29), dt.date(2018, 10, 12)),
}
# The former defaults: raw-return label, no minimum number of rounds.
LEGACY = dict(
    target_transform="raw", min_boost_round=1, num_leaves=63, min_data_in_leaf=200,
    feature_fraction=0.8, lambda_l2=1.0,
)


def build_dataset(replay: Path) -> pl.DataFrame:
    tables = read_replay(replay)
    sessions = sorted(tables["markets/calendar"].filter(pl.col("HolDiv") == "1")["Date"].to_list())
    dates = [d for d in sessions if WINDOWS["train"][0] <= d <= WINDOWS["test"][1]]
    raw = raw_frames_from_tables(tables)
    catalog = default_catalog()
    families = {}
    for family in catalog.enabled(FAMILIES):
        t = time.perf_counter()
        families[family.name] = compute_family(family, raw, dates, sessions)
        print(f"family {family.name}: {time.perf_counter() - t:.0f}s", flush=True)
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, sessions)
    targets = compute_targets(raw["raw_daily_quotes"], sessions, dates)
    return assemble_dataset(meta, families, targets, catalog, list(families))


def atft_rows(dataset: pl.DataFrame, config_path: Path, seeds: list[int], run_dir: Path) -> list[pl.DataFrame]:
    """ATFT-GAT-FAN's val / test predictions per training phase and seed, on ``WINDOWS``."""
    config = load_config(config_path)
    splits = SplitConfig(**{name: DateWindow(start=a, end=b) for name, (a, b) in WINDOWS.items()})
    # the report's contract: ATFT's quantile heads are not scored here
    quantiles = {q: pl.lit(None, pl.Float64) for q in QUANTILE_COLUMNS}
    rows, seeded = [], []
    for seed in seeds:
        t = time.perf_counter()
        frame = atft_predictions(dataset, splits, config, seed, run_dir / f"seed{seed}", (1, 5, 10, 20))
        seeded.append(frame.with_columns(pl.lit(seed, pl.Int64).alias("seed")))
        if len(seeds) > 1:
            frame = frame.with_columns(pl.col("model") + f"_s{seed}")
        rows.append(frame.with_columns(**quantiles).select(PREDICTION_COLUMNS))
        print(f"ATFT-GAT-FAN seed {seed}: {time.perf_counter() - t:.0f}s", flush=True)
    if len(seeds) > 1:
        averaged = ensembled_model(config.training.build(), "staged")
        ensemble = seed_ensemble(pl.concat(seeded), averaged)
        rows.append(ensemble.with_columns(**quantiles).select(PREDICTION_COLUMNS))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench honest_eval")
    parser.add_argument("--replay", type=Path, default=Path("../shared/realdata/tse_2013_2018"))
    parser.add_argument("--cache", type=Path, default=None, help="dataset Parquet to reuse")
    parser.add_argument("--lightgbm-horizons", type=int, nargs="*", default=[1, 5])
    parser.add_argument("--legacy", action="store_true", help="also fit the former LightGBM setup")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("honest_eval_report"), help="report folder")
    parser.add_argument("--atft", action="store_true", help="also train and score ATFT-GAT-FAN")
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"), help="for --atft")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="for --atft")
    args = parser.parse_args(argv)
    if args.cache is not None and args.cache.exists():
        dataset = pl.read_parquet(args.cache)
    else:
        dataset = build_dataset(args.replay)
        if args.cache is not None:
            dataset.write_parquet(args.cache)
    universe = dataset.filter("universe")
    part = {
        name: universe.filter(pl.col("date").is_between(*window)) for name, window in WINDOWS.items()
    }
    features = [c for c in dataset.columns if c not in {*META_COLUMNS, *TARGET_COLUMNS}]
    print(
        f"dataset {dataset.height:,} rows, {len(features)} features; "
        + ", ".join(f"{k} {v['date'].n_unique()} dates" for k, v in part.items()),
        flush=True,
    )
    predictions = []
    setups = {"lightgbm": {}}
    if args.legacy:
        setups["lightgbm_legacy"] = LEGACY
    for name, overrides in setups.items():
        config = baselines.LightGBMConfig(num_threads=args.threads, **overrides)
        for h in args.lightgbm_horizons:
            t = time.perf_counter()
            model = baselines.train_lightgbm(part["train"], part["val"], features, f"target_{h}d", config)
            print(f"{name} {h}d: {model.best_iteration} trees, val RankIC {model.val_rank_ic:.4f}, "
                  f"{time.perf_counter() - t:.0f}s", flush=True)
            for split in ("val", "test"):
                predictions.append(model.predict(part[split], split).with_columns(pl.lit(name).alias("model")))
    t = time.perf_counter()
    predictions.append(baselines.ridge_predictions(part["train"], part["val"], part["test"], features))
    print(f"ridge: {time.perf_counter() - t:.0f}s", flush=True)
    for split in ("val", "test"):
        predictions.append(baselines.momentum_reversal_rule(part[split], split=split))
    if args.atft:
        predictions.extend(atft_rows(dataset, args.config, args.seeds, args.out / "atft"))
    frame = pl.concat(predictions)
    report = build_report(frame, args.out, "Baselines on the real replay (tse_2013_2018)")
    markdown = report.markdown
    print(markdown[: markdown.index("## Plots")])
    print(f"failing the constant-prediction check: {prediction_health(frame).failing}")
    return 0
