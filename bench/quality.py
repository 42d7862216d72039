"""Model quality on a sandbox market: ``python -m bench quality`` (see BENCHMARKS.md).

Walk-forward folds of one synthetic market; oracle, rule, ridge, LightGBM and the
ATFT-GAT-FAN ablations (after each training phase, or with ``--ablation equal_budget`` each
architecture trained from scratch for the same epochs) with the training configuration of
``--config`` (the demo's by default), several seeds. Prints the Markdown tables and writes
them (and the per-fold / per-signal tables as Parquet) to ``--out``; with
``--tracking-uri`` (or ``MLFLOW_TRACKING_URI``) also logs one MLflow run. The default scale
fits a loaded 2-core machine; ``--stocks 600 --start 2017-01-04 --end 2022-12-30`` is the
large market.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import time
from pathlib import Path
from typing import get_args

from atft_pipeline.config import load_config
from atft_pipeline.evaluation.quality import (
    AblationMode,
    QualityBenchConfig,
    log_to_mlflow,
    render_markdown,
    run_quality_benchmark,
)


def main(argv: list[str]) -> int:
    defaults = QualityBenchConfig()
    parser = argparse.ArgumentParser(prog="python -m bench quality")
    parser.add_argument("--stocks", type=int, default=defaults.n_stocks)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=defaults.start)
    parser.add_argument("--end", type=dt.date.fromisoformat, default=defaults.end)
    parser.add_argument("--market-seed", type=int, default=defaults.market_seed)
    parser.add_argument("--folds", type=int, default=defaults.n_folds)
    parser.add_argument("--train-days", type=int, default=defaults.train_days)
    parser.add_argument("--val-days", type=int, default=defaults.val_days)
    parser.add_argument("--test-days", type=int, default=defaults.test_days)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--families", nargs="*", default=None, help="feature families (default: all)")
    parser.add_argument("--no-atft", action="store_true", help="baselines only")
    parser.add_argument("--ablation", choices=get_args(AblationMode), default=defaults.ablation)
    parser.add_argument(
        "--split", choices=["val", "test"], default=defaults.split,
        help="the split the tables report (compare configurations on val)",
    )
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--out", type=Path, default=Path("quality_report"))
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(argv)
    bench = QualityBenchConfig(
        n_stocks=args.stocks, start=args.start, end=args.end, market_seed=args.market_seed,
        n_folds=args.folds, train_days=args.train_days, val_days=args.val_days,
        test_days=args.test_days, seeds=tuple(args.seeds),
        families=tuple(args.families) if args.families else None, atft=not args.no_atft,
        ablation=args.ablation, split=args.split,
    )
    config = load_config(args.config)
    wall = time.perf_counter()
    result = run_quality_benchmark(bench, config, args.out / "runs", progress=lambda m: print(m, flush=True))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    markdown = render_markdown(result, bench)
    markdown += (
        f"\nWall {time.perf_counter() - wall:.0f} s, CPU {usage.ru_utime + usage.ru_stime:.0f} s, "
        f"load average {os.getloadavg()[0]:.1f}; config {args.config}.\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.md").write_text(markdown, encoding="utf-8")
    result.table.write_parquet(args.out / "folds.parquet")
    result.signals.write_parquet(args.out / "signals.parquet")
    print(markdown)
    if args.tracking_uri:
        print(f"MLflow run {log_to_mlflow(result, bench, args.tracking_uri, args.out / 'quality.md')}")
    return 0
