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
import textwrap
from pathlib import Path

from atft_pipeline.cli import add_library_commands, parse_date, user_error_message
from atft_pipeline.sandbox.embedded import SANDBOX_SEED, SANDBOX_STOCKS
from atft_pipeline.settings import SANDBOX_END, SANDBOX_START, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atft", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (any position)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_library_commands(sub)

    run = sub.add_parser("run", help="materialize the whole graph for a date range")
    run.add_argument("--start", type=parse_date, help="first trading day (default: ATFT_START_DATE)")
    run.add_argument("--end", type=parse_date, help="last trading day (default: the sandbox end / today)")
    run.add_argument("--config", type=Path, help="pipeline configuration YAML (families, splits, ...)")
    _add_verbose(run)
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="serve the sandbox market and run the pipeline on it")
    demo.add_argument("--port", type=int, default=0, help="sandbox port (default: a free one)")
    demo.add_argument("--n-stocks", type=int, default=SANDBOX_STOCKS)
    demo.add_argument("--seed", type=int, default=SANDBOX_SEED)
    _add_verbose(demo)
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

    tune = sub.add_parser(
        "tune", help="Optuna study over the model/training configuration (validation only, resumable)"
    )
    tune.add_argument("--search", type=Path, default=REPO_ROOT / "configs" / "tuning.yaml",
                      help="search file: study, trials, pruner, parameters (default: configs/tuning.yaml)")
    tune.add_argument("--trials", type=int, help="finished trials the study should end with")
    _add_verbose(tune)
    tune.set_defaults(handler=cmd_tune)

    from assets.serve import build_parser as build_serve_parser  # `atft serve` (README "Deploying")

    build_serve_parser(sub.add_parser("serve", help="code server, webserver and daemon on Postgres"))
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true",
        help="also show Dagster's own logs (always kept in ATFT_HOME/logs/<run>.log)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from atft_pipeline.config import load_config

    config = load_config(args.config) if args.config else None
    settings = Settings.from_env()
    start = args.start or settings.effective_start_date
    end = args.end or settings.default_end_date
    return run_pipeline(settings, start, end, config, verbose=args.verbose)


def run_pipeline(settings: Settings, start: dt.date, end: dt.date, config=None, *, verbose: bool = False) -> int:
    """Plan ``[start, end]`` (``UsageError`` when no setting of this run can serve it), then
    materialize every stage with ``settings`` (and ``config``, which is also kept as
    ``ATFT_HOME/config.yaml`` for the UI); print one line per stage and the summary."""
    from assets.runner import StageLog
    from atft_pipeline.config import dump_config
    from atft_pipeline.names import DATASET_ASSET
    from atft_pipeline.planning import plan_run
    from atft_pipeline.stages.scope import config_path, resolve_scope
    from atft_pipeline.storage import PartitionStore

    scope = resolve_scope(settings, config)
    store = PartitionStore(settings.data_root)
    stored = [dt.date.fromisoformat(k) for k in store.partitions(DATASET_ASSET)]
    plan = plan_run(scope, start, end, stored)
    if config is not None:
        config.check_builds()  # imports torch: after the cheap checks
        # The UI's code location reads the same file, so it runs with this configuration too.
        dump_config(config, config_path(settings))
    console = Console()
    console.line(
        f"atft run {plan.start}..{plan.end}: plan {settings.effective_plan.value}, "
        f"{len(scope.families)} feature families, data in {settings.data_root.resolve()}"
    )
    by_reason: dict[str, list[str]] = {}
    for family, why in scope.disabled.items():
        by_reason.setdefault(why, []).append(family)
    for why, families in by_reason.items():
        console.line(f"families off: {', '.join(families)}: {why}")
    for note in plan.notes:
        console.line(note)
    log_path = settings.home.resolve() / "logs" / f"{dt.datetime.now():%Y%m%d-%H%M%S}.log"
    console.line(f"Dagster's logs: {log_path}")
    result = _materialize(settings, scope, store, plan, StageLog(log_path, echo=verbose, progress=console.progress), console)
    print_summary(result, settings, store, log_path, console)
    return 0 if result.success else 1


def _materialize(settings, scope, store, plan, log, console):
    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.instance import configure_dagster_process, ensure_dagster_home
    from assets.runner import materialize_range
    from atft_pipeline.names import LATEST_ASSET

    dagster_home = ensure_dagster_home(settings)
    configure_dagster_process()
    with log.capture("definitions"):  # Dagster's import-time notices go to the log too
        defs = build_definitions(settings, config=scope.config)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return materialize_range(
            defs, instance, scope.pipeline_assets(), plan.start, plan.end, store,
            latest_only=[LATEST_ASSET], asset_days=plan.raw_days, skip=plan.skipped,
            progress=console.line, log=log,
        )


def print_summary(result, settings: Settings, store, log_path: Path, console: Console) -> None:
    """The total, what failed or was skipped and why, the 1-day evaluation table and where
    the report and the logs are."""
    from atft_pipeline.stages.model import report_summary

    ran = [s for s in result.stages if not s.skipped]
    skipped = [s for s in result.stages if s.skipped]
    stages = sorted({s.asset for s in result.stages}, key=[s.asset for s in result.stages].index)
    console.line(
        f"\n{len(stages)} stages in {result.seconds:.1f}s: {len({s.asset for s in ran if s.success})} ok, "
        f"{len({s.asset for s in result.failed})} failed, {len(skipped)} skipped"
    )
    if result.interrupted:
        console.line("interrupted: the remaining stages were not run; `atft run` continues from here")
    elif result.failed:
        names = ", ".join(sorted({s.asset for s in result.failed}))
        console.line(
            f"failed: {names} (the error is on its line above; the stages that depend on it were "
            "skipped); fix the cause, then `atft run` redoes only what is missing"
        )
    table = report_summary(store) if not result.failed and not result.interrupted else None
    if table is not None:
        console.line("\n1-day horizon, validation and test windows:")
        console.line(fit_table(table, width=100))
        reports = sorted((settings.home / "reports").glob("*/report.md"), key=lambda p: p.stat().st_mtime)
        if reports:
            console.line(f"\nreport: {reports[-1].resolve()}  (plots beside it; also in MLflow and the UI)")
    console.line(f"Dagster's logs: {log_path}")


# Shorter headers so the table fits 100 columns without wrapping a name.
_HEADERS = {"rank_ic_vs_oracle": "vs_oracle", "sharpe_gross": "sharpe", "sharpe_net": "sharpe_net"}


def fit_table(table, width: int = 100) -> str:
    """``table`` as aligned text at most ``width`` columns wide: floats to 4 places, short
    headers, and the rightmost columns left out (named below) if it still does not fit."""
    cells = [[_cell(v) for v in table[c].to_list()] for c in table.columns]
    headers = [_HEADERS.get(c, c) for c in table.columns]
    widths = [max(len(h), *(len(v) for v in col)) for h, col in zip(headers, cells, strict=True)]
    keep = len(headers)
    while keep > 1 and sum(widths[:keep]) + 2 * (keep - 1) > width:
        keep -= 1
    rows = [
        "  ".join(
            (h.ljust(w) if i < 2 else h.rjust(w)) for i, (h, w) in enumerate(zip(line, widths[:keep], strict=False))
        ).rstrip()
        for line in [headers[:keep], *zip(*(c for c in cells[:keep]), strict=True)]
    ]
    if keep < len(headers):
        rows.append(f"(not shown: {', '.join(table.columns[keep:])})")
    return "\n".join(rows)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


class Console:
    """The human output of a run: whole lines, plus the progress of the running stage, which a
    terminal shows in place (one line, redrawn) and a log file or pipe gets only where it is
    worth a line (a training phase's last epoch; counters are left to the stage's own line)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.pending: tuple[str, str] | None = None  # (progress key, line) not yet printed
        self.shown = False  # a live line is on screen

    def line(self, text: str) -> None:
        """Print ``text``; a line longer than 100 columns is wrapped at words."""
        self._settle()
        for line in text.splitlines() or [""]:
            wrapped = textwrap.wrap(line, 100, subsequent_indent="    ", break_long_words=False,
                                    break_on_hyphens=False, drop_whitespace=True) if len(line) > 100 else [line]
            for part in wrapped:
                print(part, file=self.stream, flush=True)

    def progress(self, update) -> None:
        """Show one ``StageProgress`` of the running stage."""
        text = f"    {update.stage}: {update.message}"
        if self.live:
            self.stream.write("\r\033[K" + text[:99])
            self.stream.flush()
            self.shown = True
            return
        if not update.keep:
            return
        if self.pending is not None and self.pending[0] != update.key:
            print(self.pending[1], file=self.stream, flush=True)
        self.pending = (update.key, text)

    def _settle(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.shown = False
        if self.pending is not None:
            print(self.pending[1], file=self.stream, flush=True)
            self.pending = None


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
        return run_pipeline(settings, SANDBOX_START, SANDBOX_END, load_config(DEMO_CONFIG), verbose=args.verbose)


def cmd_simulate(args: argparse.Namespace) -> int:
    from assets.simulate import SimulationRequest, run_simulation
    from atft_pipeline.config import load_config

    request = SimulationRequest(
        nights=args.nights, first_night=args.start, check_backfill=args.check_backfill,
        backfill_home=args.backfill_home, seed=args.seed, n_stocks=args.n_stocks,
    )
    config = load_config(args.config) if args.config else None
    return run_simulation(Settings.from_env(), request, config)


def cmd_tune(args: argparse.Namespace) -> int:
    from assets.tuning import run_tuning

    return run_tuning(Settings.from_env(), str(args.search), args.trials, verbose=args.verbose)


def cmd_ui(args: argparse.Namespace) -> int:
    from assets.instance import dagster_environment, ensure_dagster_home

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
    return subprocess.call(command, cwd=REPO_ROOT, env={**os.environ, **dagster_environment(), "DAGSTER_HOME": str(home)})


def main(argv: list[str] | None = None) -> int:
    """Run one ``atft`` command. A user error (``user_error_message``) ends as one or two
    lines on stderr and exit status 2; ``--debug`` (anywhere) shows its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return int(args.handler(args) or 0)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
