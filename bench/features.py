"""All feature families over a sandbox market, from raw data stored as Parquet.

``python -m bench features --scale full`` (4,000 stocks × 10 years, about 2,500 trading
days; ``--scale demo`` is the sandbox's 300 × 3, ``--stocks``/``--years`` override either)
generates the market, writes each raw source as one Parquet file (the union of its
partitions), then computes every family for every date (lookback included) and reports wall
time per family, the process's peak RSS after each (``ru_maxrss``, what ``/usr/bin/time -v``
reports) and the sum over families.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.features.registry import compute_family, default_catalog
from atft_pipeline.sandbox.market import MarketConfig, generate_market


SCALES = {"demo": (300, 3), "full": (4000, 10)}  # (stocks, years)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench features")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--stocks", type=int, default=None)
    parser.add_argument("--years", type=int, default=None)
    parser.add_argument("--families", nargs="*", default=None)
    args = parser.parse_args(argv)
    stocks, years = SCALES[args.scale]
    args.stocks = args.stocks or stocks
    args.years = args.years or years
    end = dt.date(2023, 12, 29)
    start = dt.date(end.year - args.years + 1, 1, 4)
    t0 = time.perf_counter()
    market = generate_market(MarketConfig(n_stocks=args.stocks, start=start, end=end))
    print(f"market {args.stocks} x {args.years}y generated in {time.perf_counter() - t0:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        raw = {}
        for asset, frame in raw_frames_from_tables(market.tables).items():
            path = Path(tmp) / f"{asset}.parquet"
            frame.collect().write_parquet(path)
            raw[asset] = pl.scan_parquet(path)
        del market
        days = calendar.trading_days(start, end)
        catalog = default_catalog()
        total = 0.0
        for family in catalog.enabled(args.families):
            t = time.perf_counter()
            frame = compute_family(family, raw, days, days)
            seconds = time.perf_counter() - t
            total += seconds
            print(f"{family.name:<15} {len(family.columns):>3} cols  {frame.height:>9} rows  "
                  f"{seconds:7.1f}s  peak RSS {_peak_rss_gb():.1f} GB")
            del frame
    print(f"all families: {total:.1f}s, peak RSS {_peak_rss_gb():.1f} GB")
    return 0
