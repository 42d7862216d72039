"""One trading night end to end (budget ≤ 60 s): ``python -m bench nightly``.

In a fresh ``ATFT_HOME`` the demo's sandbox market (300 stocks) is served on its simulated
clock; the history before the first night is backfilled and the model trained on it (as
``atft run`` would have done that morning; not timed against the budget), then each night runs
what the schedules request (``atft simulate``'s ``NightlySimulator``: the real schedules, the
same Definitions and instance). Printed per night: every run's wall time, and for the
19:30 ``nightly_update`` run (raw partitions of the day → every feature family → the dataset
row → ``latest_predictions`` from the stored model) the time of each step beside the run's
wall time, so the part that is Dagster's own run start and bookkeeping is visible.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

BUDGET_S = 60.0


def _step_seconds(instance, run_id: str) -> list[tuple[str, float]]:
    stats = instance.get_run_step_stats(run_id)
    return sorted(
        ((s.step_key, (s.end_time or 0.0) - (s.start_time or 0.0)) for s in stats),
        key=lambda item: -item[1],
    )


def _simulate(home: Path, config_file: Path, first_night: dt.date, nights: int, n_stocks: int) -> int:
    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.instance import configure_dagster_process, ensure_dagster_home
    from assets.jobs import NIGHTLY_SCHEDULE
    from assets.runner import StageLog
    from assets.simulate import NightlySimulator, SimulationResult, simulate_nights
    from atft_pipeline.config import dump_config, load_config
    from atft_pipeline.jquants.endpoints import Plan
    from atft_pipeline.nightly.clock import ServerClock
    from atft_pipeline.sandbox.embedded import SANDBOX_SEED, sandbox_settings, serve_sandbox_market
    from atft_pipeline.settings import SANDBOX_START, Settings
    from atft_pipeline.stages.scope import config_path, resolve_scope
    from atft_pipeline.storage import PartitionStore

    configure_dagster_process()
    with serve_sandbox_market(SANDBOX_SEED, n_stocks) as server:
        settings = sandbox_settings(Settings(home=home), server.base_url).model_copy(
            update={"plan": Plan.PREMIUM, "start_date": SANDBOX_START}
        )
        config = load_config(config_file)
        dump_config(config, config_path(settings))
        scope = resolve_scope(settings, config)
        defs = build_definitions(settings, config=scope.config)
        store = PartitionStore(settings.data_root)
        clock = ServerClock(settings.base_url, settings.api_key)
        log = StageLog(home / "logs" / "bench-nightly.log")
        with DagsterInstance.from_config(str(ensure_dagster_home(settings))) as instance:
            started = time.perf_counter()
            bootstrap = simulate_nights(
                defs, instance, scope, store, clock, first_night, 0, progress=lambda _: None, log=log
            )
            print(f"history {SANDBOX_START}..{first_night - dt.timedelta(days=1)} backfilled and the model "
                  f"trained in {time.perf_counter() - started:.0f} s (not part of a night)")
            if not bootstrap.success:
                print("the history backfill failed")
                return 1
            simulator = NightlySimulator(defs, instance, clock, progress=lambda _: None, log=log)
            result = SimulationResult(first_night, first_night + dt.timedelta(days=nights - 1))
            worst = 0.0
            for offset in range(nights):
                day = first_night + dt.timedelta(days=offset)
                before = len(result.runs)
                simulator.night(day, result)
                for run in result.runs[before:]:
                    status = "ok" if run.success else f"FAILED: {run.error}"
                    print(f"night {day}: {run.moment:%m-%d %H:%M} {run.origin} [{run.partition}]: {run.seconds:.1f} s {status}")
                    if run.origin != NIGHTLY_SCHEDULE:
                        continue
                    worst = max(worst, run.seconds)
                    steps = _step_seconds(instance, run.run_id)
                    in_steps = sum(s for _, s in steps)
                    print(f"  {len(steps)} steps {in_steps:.1f} s, run {run.seconds:.1f} s "
                          f"(outside the steps {run.seconds - in_steps:.1f} s); longest steps:")
                    for key, seconds in steps[:8]:
                        print(f"    {key:<40} {seconds:6.2f} s")
            clock.clear()
    failed = [r for r in result.runs if not r.success]
    nightly = [r for r in result.runs if r.origin == NIGHTLY_SCHEDULE]
    print(f"\n{len(nightly)} nightly_update runs, slowest {worst:.1f} s (budget {BUDGET_S:.0f} s); "
          f"{len(failed)} runs failed")
    return 0 if nightly and not failed and worst <= BUDGET_S else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench nightly", description=__doc__)
    parser.add_argument("--first-night", type=dt.date.fromisoformat, default=dt.date(2023, 12, 26))
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--stocks", type=int, default=300)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as home:
        code = _simulate(Path(home), args.config, args.first_night, args.nights, args.stocks)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"peak RSS of this process {usage.ru_maxrss / 2**20:.1f} GB")
    return code
