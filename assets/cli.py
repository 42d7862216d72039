"""The ``atft`` command: library commands (``sandbox``, ``catalog``) plus the pipeline ones.

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

from atft_pipeline.cli import add_library_commands
from atft_pipeline.settings import SANDBOX_API_KEY, SANDBOX_END, SANDBOX_START, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_library_commands(sub)

    run = sub.add_parser("run", help="materialize the whole graph for a date range")
    run.add_argument("--start", type=_date, help="first trading day (default: ATFT_START_DATE)")
    run.add_argument("--end", type=_date, help="last trading day (default: the sandbox end / today)")
    run.add_argument("--config", type=Path, help="pipeline configuration YAML (families, splits, ...)")
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="serve the sandbox market and run the pipeline on it")
    demo.add_argument("--port", type=int, default=0, help="sandbox port (default: a free one)")
    demo.add_argument("--n-stocks", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=cmd_demo)

    ui = sub.add_parser("ui", help="start the Dagster UI on workspace.yaml")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(handler=cmd_ui)

    from assets.serve import build_parser as build_serve_parser  # `atft serve` (README "Deploying")

    build_serve_parser(sub.add_parser("serve", help="code server, webserver and daemon on Postgres"))
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.instance import ensure_dagster_home, relax_sqlite_durability
    from assets.layout import LATEST_ASSET, config_path, resolve_layout
    from assets.pipeline import print_summary
    from assets.runner import materialize_range
    from atft_pipeline.config import dump_config, load_config
    from atft_pipeline.storage import PartitionStore

    settings = Settings.from_env()
    config = load_config(args.config) if getattr(args, "config", None) else None
    if config is not None:
        config.check_builds()
        # The UI's code location reads the same file, so it runs with this configuration too.
        dump_config(config, config_path(settings))
    ensure_dagster_home(settings)
    relax_sqlite_durability()
    layout = resolve_layout(settings, config)
    for family, reason in layout.disabled.items():
        print(f"feature family {family!r} disabled: {reason}")
    start = args.start or settings.effective_start_date
    uses_sandbox_data = settings.api_key is None or settings.api_key.get_secret_value() == SANDBOX_API_KEY
    end = args.end or (SANDBOX_END if uses_sandbox_data else dt.date.today())
    defs = build_definitions(settings, config=layout.config)
    with DagsterInstance.get() as instance:
        store = PartitionStore(settings.data_root)
        result = materialize_range(
            defs, instance, layout.pipeline_assets(), start, end, store, latest_only=[LATEST_ASSET]
        )
    print_summary(result, settings)
    return 0 if result.success else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from atft_pipeline.sandbox.market import MarketConfig, generate_market
    from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread

    print(f"generating the sandbox market ({args.n_stocks} stocks, {SANDBOX_START}..{SANDBOX_END}) ...")
    market = generate_market(
        MarketConfig(seed=args.seed, n_stocks=args.n_stocks, start=SANDBOX_START, end=SANDBOX_END)
    )
    app = create_app(market.tables, settings=ServerSettings(api_key=SANDBOX_API_KEY), oracle=market.oracle)
    with serve_in_thread(app, port=args.port) as server:
        print(f"sandbox J-Quants server on {server.base_url}")
        # The demo is an ordinary run against a J-Quants server that happens to be local.
        os.environ.update(
            JQUANTS_API_KEY=SANDBOX_API_KEY,
            JQUANTS_BASE_URL=server.base_url,
            JQUANTS_PLAN="premium",
            ATFT_START_DATE=SANDBOX_START.isoformat(),
        )
        return cmd_run(argparse.Namespace(start=SANDBOX_START, end=SANDBOX_END, config=DEMO_CONFIG))


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
    return subprocess.call(command, cwd=REPO_ROOT, env=os.environ.copy())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
