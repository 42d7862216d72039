"""How ``atft run`` reports: stage times, then the evaluation table and where the report is."""

from __future__ import annotations

import polars as pl

from assets.layout import MODEL_ASSETS
from assets.runner import RangeResult
from atft_pipeline.settings import Settings
from atft_pipeline.storage import PartitionStore

REPORT_ASSET = MODEL_ASSETS[-1]
_TABLE_COLUMNS = ["model", "split", "rank_ic", "ic", "rank_icir", "sharpe_gross", "sharpe_net",
                  "hit_rate", "rank_ic_vs_oracle"]


def print_summary(result: RangeResult, settings: Settings) -> None:
    print()
    print(f"range {result.start}..{result.end}  plan={settings.effective_plan.value}  "
          f"data={settings.data_root.resolve()}")
    width = max(len(s.asset) for s in result.stages)
    for stage in result.stages:
        status = "ok" if stage.success else "SKIPPED" if stage.skipped else "FAILED"
        line = f"  {stage.asset:<{width}}  {status:<7} {stage.seconds:7.1f}s  run {stage.run_id[:8]}"
        print(line + (f"  {stage.error}" if stage.skipped else ""))
    if result.interrupted:
        print("interrupted: the remaining stages were not run; `atft run` continues from here")
        return
    if not result.success:
        print("some stages failed; re-run `atft run` to retry only what is missing")
        return
    store = PartitionStore(settings.data_root)
    if not store.exists(REPORT_ASSET):
        return
    table = store.read(REPORT_ASSET).filter(pl.col("horizon") == 1)
    columns = [c for c in _TABLE_COLUMNS if c in table.columns]
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_hide_dataframe_shape=True, float_precision=4):
        print("\n1-day horizon, validation and test windows:")
        print(table.select(columns).sort("split", "model"))
    reports = sorted((settings.home / "reports").glob("*/report.md"), key=lambda p: p.stat().st_mtime)
    if reports:
        print(f"\nreport: {reports[-1].resolve()}  (plots beside it; also in MLflow and the Dagster UI)")
