"""The library commands of ``atft``: ``sandbox serve``, ``sandbox export`` and ``catalog``.

These commands need no Dagster. The one ``atft`` parser (``assets.cli``) registers them with
``add_library_commands`` beside the pipeline commands (run, demo, ui).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr, ValidationError

from atft_pipeline.errors import UsageError
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.sandbox.faults import FaultSettings, parse_faults
from atft_pipeline.settings import SANDBOX_API_KEY

if TYPE_CHECKING:  # the market pulls in numpy and friends; commands import it when they run
    from atft_pipeline.sandbox.market import MarketConfig

_MARKET_OPTIONS = ("seed", "n_stocks", "start", "end")


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _clock(text: str) -> dt.datetime:
    from atft_pipeline.sandbox.clock import parse_clock

    try:
        return parse_clock(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _faults(text: str) -> FaultSettings:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_market_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "synthetic market", "unset options take the market's defaults"
    )
    group.add_argument("--seed", type=int, help="random seed of the market")
    group.add_argument("--n-stocks", type=positive_int, help="number of stocks")
    group.add_argument("--start", type=parse_date, help="first calendar date (YYYY-MM-DD)")
    group.add_argument("--end", type=parse_date, help="last calendar date (YYYY-MM-DD)")


def add_library_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sandbox serve``, ``sandbox export`` and ``catalog`` on an ``atft`` subparsers
    object."""
    sandbox = subparsers.add_parser(
        "sandbox", help="the J-Quants V2 stand-in server and replay directories"
    )
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="{serve,export}")
    commands.required = True

    serve = commands.add_parser(
        "serve",
        help="serve the synthetic market (or a replay directory) as a J-Quants V2 API",
        description="Run the J-Quants V2 stand-in server in the foreground until interrupted.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=8787, help="port, 0 for any free one (default: %(default)s)"
    )
    serve.add_argument(
        "--api-key",
        default=SANDBOX_API_KEY,
        help="the x-api-key clients must send (default: sandbox)",
    )
    serve.add_argument(
        "--plan",
        type=Plan,
        choices=list(Plan),
        default=Plan.PREMIUM,
        help="subscription plan to emulate: entitlements, windows (default: %(default)s)",
    )
    serve.add_argument("--replay", type=Path, metavar="DIR", help="serve this replay directory")
    serve.add_argument(
        "--faults",
        type=_faults,
        metavar="SPEC",
        help="inject faults, e.g. latency=0.05,error_rate=0.1,storm=5,truncate_rate=0.02,"
        "fail=markets/short-ratio,forbid=markets/short-ratio",
    )
    serve.add_argument("--page-size", type=positive_int, help="rows per page (default: 5000)")
    serve.add_argument(
        "--rate-limit", type=positive_int, metavar="N", help="requests per minute (default: off)"
    )
    serve.add_argument(
        "--lockout", type=float, metavar="S", help="after a 429, block everything for S seconds"
    )
    serve.add_argument(
        "--today",
        type=parse_date,
        help="date the plan window is measured from (default: the data's last date)",
    )
    serve.add_argument(
        "--clock",
        type=_clock,
        metavar="DATETIME",
        help="serve the API as known at this Tokyo time, e.g. 2024-03-05T19:30 (change it with "
        "PUT /_sandbox/clock; a request may send its own in the X-Sandbox-Clock header)",
    )
    _add_market_options(serve)
    serve.set_defaults(handler=_serve)

    export = commands.add_parser(
        "export",
        help="write the synthetic market as a replay directory",
        description="Write the synthetic market as a replay directory (manifest.json + Parquet).",
    )
    export.add_argument("directory", type=Path, metavar="DIR")
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    _add_market_options(export)
    export.set_defaults(handler=_export)

    catalog = subparsers.add_parser("catalog", help="the feature catalog (every dataset column)")
    catalog.add_argument(
        "--markdown", action="store_true", help="print docs/features.md (the generated reference)"
    )
    catalog.set_defaults(handler=_catalog)


def _catalog(args: argparse.Namespace) -> int:
    from atft_pipeline.features.docs import catalog_markdown, catalog_table
    from atft_pipeline.features.registry import default_catalog

    catalog = default_catalog()
    print(catalog_markdown(catalog) if args.markdown else catalog_table(catalog), end="" if args.markdown else "\n")
    return 0


def user_error_message(exc: BaseException) -> str | None:
    """What to tell the user about ``exc`` when it is their mistake (a bad setting, option,
    file or port), else None (a failure whose traceback matters)."""
    from atft_pipeline.errors import UsageError

    if isinstance(exc, UsageError | OSError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return "invalid option(s): " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
    return None


def _market_config(args: argparse.Namespace) -> MarketConfig:
    from atft_pipeline.sandbox.market import MarketConfig

    given = {
        name: getattr(args, name) for name in _MARKET_OPTIONS if getattr(args, name) is not None
    }
    return MarketConfig(**given)


def _serve(args: argparse.Namespace) -> int:
    from atft_pipeline.sandbox.server import ServerSettings, bind_socket, create_app, uvicorn_server

    market_given = [
        f"--{n.replace('_', '-')}" for n in _MARKET_OPTIONS if getattr(args, n) is not None
    ]
    if args.replay is not None and market_given:
        raise UsageError(
            f"{', '.join(market_given)}: synthetic-market option(s), not used with --replay"
        )
    optional = {
        "page_size": args.page_size,
        "rate_limit_per_minute": args.rate_limit,
        "lockout_s": args.lockout,
        "today": args.today,
        "faults": args.faults,
        "clock": args.clock,
    }
    settings = ServerSettings(
        api_key=SecretStr(args.api_key),
        plan=args.plan,
        **{name: value for name, value in optional.items() if value is not None},
    )
    oracle = None
    if args.replay is not None:
        from atft_pipeline.sandbox.replay import read_replay

        tables, source = read_replay(args.replay), f"replay {args.replay}"
    else:
        from atft_pipeline.sandbox.market import generate_market

        market = generate_market(_market_config(args))
        tables, oracle, source = market.tables, market.oracle, "synthetic market"

    app = create_app(tables, settings=settings, oracle=oracle)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    window = app.state.window
    print(f"J-Quants V2 stand-in server listening on http://{host}:{port}/v2", flush=True)
    print(
        f"  serving {source}: {sum(1 for t in tables.values() if t.height)} endpoints with data; "
        f"plan {settings.plan.value}, window {window.start} ~ {window.end or ''}; "
        f"rate limit {settings.rate_limit_per_minute or 'off'}; press Ctrl+C to stop",
        flush=True,
    )
    uvicorn_server(app, access_log=True).run(sockets=[sock])
    return 0


def _export(args: argparse.Namespace) -> int:
    from atft_pipeline.sandbox.market import generate_market
    from atft_pipeline.sandbox.replay import write_replay

    if args.directory.exists() and not args.overwrite:
        raise UsageError(f"{args.directory} already exists; use --overwrite to replace it")
    config = _market_config(args)
    market = generate_market(config)
    metadata = {
        "source": "atft-pipeline synthetic market",
        "start": config.start,
        "end": config.end,
        "extra": {"market_config": config, "summary": market.summary()},
    }
    path = write_replay(args.directory, market.tables, metadata, overwrite=args.overwrite)
    rows = sum(t.height for t in market.tables.values())
    print(f"wrote {len(market.tables)} endpoints ({rows} rows) to {path}")
    return 0
