"""The ``atft`` command: the library commands and the pipeline commands in one parser.

Handlers import what they need when they run, so the library commands (``sandbox``,
``catalog``) load neither Dagster nor torch.

Pipeline commands drive the same Definitions the Dagster UI loads:

- ``atft run [--start D] [--end D]``: materialize the graph for a date range through the
  persistent local instance (``ATFT_HOME/dagster``) against the configured source.
- ``atft demo``: serve the sandbox market on a loopback port, then ``run`` against it.
- ``atft ui``: the Dagster UI (webserver + daemon) on ``workspace.yaml`` with that instance.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from atft_pipeline.cli import add_library_commands, parse_date
from atft_pipeline.sandbox.embedded import SANDBOX_SEED, SANDBOX_STOCKS
from atft_pipeline.settings import SANDBOX_END, SANDBOX_START, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_library_commands(sub)

    run = sub.add_parser("run", help="materialize the whole graph for a date range")
    run.add_argument("--start", type=parse_date, help="first trading day (default: ATFT_START_DATE)")
    run.add_argument("--end", type=parse_date, help="last trading day (default: the sandbox end / today)")
    run.add_argument("--config", type=Path, help="pipeline configuration YAML (families, splits, ...)")
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="serve the sandbox market and run the pipeline on it")
    demo.add_argument("--port", type=int, default=0, help="sandbox port (default: a free one)")
    demo.add_argument("--n-stocks", type=int, default=SANDBOX_STOCKS)
    demo.add_argument("--seed", type=int, default=SANDBOX_SEED)
    demo.set_defaults(handler=cmd_demo)

    ui = sub.add_parser("ui", help="start the Dagster UI on workspace.yaml")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(handler=cmd_ui)

    simulate = sub.add_parser(
        "simulate", help="run N nights as the schedules would, against a stand-in's clock"
    )
    simulate.add_argument("--nights", type=int, required=True, help="consecutive calendar nights")
    simulate.add_argument("--start", type=parse_date, help="first night (default: N nights ending at the last day)")
    simulate.add_argument("--check-backfill", action="store_true", help="then compare with a one-shot backfill")
    simulate.add_argument("--backfill-home", type=Path, help="its ATFT_HOME (default: ATFT_HOME-backfill)")
    simulate.add_argument("--config", type=Path, help="pipeline configuration YAML")
    simulate.add_argument("--n-stocks", type=int, default=SANDBOX_STOCKS, help="sandbox market size")
    simulate.add_argument("--seed", type=int, default=SANDBOX_SEED, help="sandbox market seed")
    simulate.set_defaults(handler=cmd_simulate)

    from assets.serve import build_parser as build_serve_parser  # `atft serve` (README "Deploying")

    build_serve_parser(sub.add_parser("serve", help="code server, webserver and daemon on Postgres"))
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from atft_pipeline.config import load_config

    config = load_config(args.config) if args.config else None
    settings = Settings.from_env()
    return run_pipeline(settings, args.start or settings.effective_start_date, args.end or settings.default_end_date, config)


def run_pipeline(settings: Settings, start: dt.date, end: dt.date, config=None) -> int:
    """Materialize every stage for ``[start, end]`` with ``settings`` (and ``config``, which
    is also kept as ``ATFT_HOME/config.yaml`` for the UI); print the summary."""
    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.instance import ensure_dagster_home, relax_sqlite_durability
    from assets.runner import materialize_range
    from atft_pipeline.config import dump_config
    from atft_pipeline.names import LATEST_ASSET
    from atft_pipeline.stages.scope import config_path, resolve_scope
    from atft_pipeline.storage import PartitionStore

    if config is not None:
        config.check_builds()
        # The UI's code location reads the same file, so it runs with this configuration too.
        dump_config(config, config_path(settings))
    dagster_home = ensure_dagster_home(settings)
    relax_sqlite_durability()
    scope = resolve_scope(settings, config)
    for family, reason in scope.disabled.items():
        print(f"feature family {family!r} disabled: {reason}")
    defs = build_definitions(settings, config=scope.config)
    store = PartitionStore(settings.data_root)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        result = materialize_range(
            defs, instance, scope.pipeline_assets(), start, end, store, latest_only=[LATEST_ASSET]
        )
    print_summary(result, settings, store)
    return 0 if result.success else 1


def print_summary(result, settings: Settings, store) -> None:
    """Stage times, then the 1-day evaluation table and where the report is."""
    import polars as pl

    from atft_pipeline.stages.model import report_summary

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
    table = report_summary(store)
    if table is None:
        return
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_hide_dataframe_shape=True, float_precision=4):
        print("\n1-day horizon, validation and test windows:")
        print(table)
    reports = sorted((settings.home / "reports").glob("*/report.md"), key=lambda p: p.stat().st_mtime)
    if reports:
        print(f"\nreport: {reports[-1].resolve()}  (plots beside it; also in MLflow and the Dagster UI)")


def cmd_demo(args: argparse.Namespace) -> int:
    from atft_pipeline.config import load_config
    from atft_pipeline.jquants.endpoints import Plan
    from atft_pipeline.sandbox.embedded import sandbox_settings, serve_sandbox_market

    print(f"generating the sandbox market ({args.n_stocks} stocks, {SANDBOX_START}..{SANDBOX_END}) ...")
    with serve_sandbox_market(args.seed, args.n_stocks, args.port) as server:
        print(f"sandbox J-Quants server on {server.base_url}")
        # The demo is an ordinary run against a J-Quants server that happens to be local.
        settings = sandbox_settings(Settings.from_env(), server.base_url).model_copy(
            update={"plan": Plan.PREMIUM, "start_date": SANDBOX_START}
        )
        return run_pipeline(settings, SANDBOX_START, SANDBOX_END, load_config(DEMO_CONFIG))


def cmd_simulate(args: argparse.Namespace) -> int:
    from assets.simulate import SimulationRequest, run_simulation
    from atft_pipeline.config import load_config

    request = SimulationRequest(
        nights=args.nights, first_night=args.start, check_backfill=args.check_backfill,
        backfill_home=args.backfill_home, seed=args.seed, n_stocks=args.n_stocks,
    )
    config = load_config(args.config) if args.config else None
    return run_simulation(Settings.from_env(), request, config)


def cmd_ui(args: argparse.Namespace) -> int:
    from assets.instance import ensure_dagster_home

    home = ensure_dagster_home(Settings.from_env())
    print(f"Dagster UI on http://{args.host}:{args.port} (instance {home})")
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    return subprocess.call(command, cwd=REPO_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
