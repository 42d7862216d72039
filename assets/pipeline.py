"""How ``atft run`` reports."""

from __future__ import annotations

from assets.runner import RangeResult
from atft_pipeline.settings import Settings


def print_summary(result: RangeResult, settings: Settings) -> None:
    print()
    print(f"range {result.start}..{result.end}  plan={settings.effective_plan.value}  "
          f"data={settings.data_root.resolve()}")
    width = max(len(s.asset) for s in result.stages)
    for stage in result.stages:
        status = "ok" if stage.success else "FAILED"
        print(f"  {stage.asset:<{width}}  {status:<6} {stage.seconds:7.1f}s  run {stage.run_id[:8]}")
    if not result.success:
        print("some stages failed; re-run `atft run` to retry only what is missing")
