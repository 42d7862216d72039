"""The sandbox market served locally: the one way the pipeline starts a stand-in server.

``serve_sandbox_market`` is a context manager (``atft demo`` and ``atft simulate`` hold it
around their run); ``start_embedded_sandbox`` starts one for settings without a base URL and
keeps it for the life of the process (a step process of a run starts its own; generation is
deterministic, so all of them serve the same market). Nothing starts a server implicitly.

The server runs in a child process, not a thread: its JSON encoding then runs on another core
than the client's decoding and parsing instead of taking turns with them for the interpreter
(the demo's raw stages took a quarter less wall time), and the market's tables stay out of
the pipeline process's memory.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from atft_pipeline.settings import SANDBOX_API_KEY, SANDBOX_END, SANDBOX_START, Settings

if TYPE_CHECKING:  # the market and the server pull in numpy, starlette and uvicorn
    from atft_pipeline.sandbox.market import MarketConfig

SANDBOX_SEED = 7
SANDBOX_STOCKS = 300
# The last 45 sessions (where a nightly simulation of the sandbox runs) hold planted splits,
# late filings and restatements, and the margin-interest switch to daily rows.
SANDBOX_EVENTS_FROM = dt.date(2023, 10, 26)
SANDBOX_MARGIN_DAILY_FROM = dt.date(2023, 11, 20)

_lock = threading.Lock()
_servers: dict[tuple[int, int], str] = {}
_exit_stack = ExitStack()
atexit.register(_exit_stack.close)


# Generating the default market takes seconds; a 4,000-stock one about a minute.
STARTUP_TIMEOUT_S = 600.0
HOST = "127.0.0.1"


@dataclass(frozen=True)
class SandboxServer:
    """A sandbox market served by a child process on ``HOST``."""

    port: int
    pid: int

    @property
    def base_url(self) -> str:
        """The V2 base URL to give a client (``JQUANTS_BASE_URL``)."""
        from atft_pipeline.sandbox.server import API_PREFIX

        return f"http://{HOST}:{self.port}{API_PREFIX}"


@contextmanager
def serve_sandbox_market(
    seed: int = SANDBOX_SEED, n_stocks: int = SANDBOX_STOCKS, port: int = 0
) -> Iterator[SandboxServer]:
    """Generate the sandbox market (``SANDBOX_START``..``SANDBOX_END``) and serve it, with its
    oracle, on a loopback port (0: a free one) from a child process until the block exits."""
    command = [
        sys.executable, "-m", __name__, "--seed", str(seed), "--n-stocks", str(n_stocks),
        "--port", str(port), "--parent", str(os.getpid()),
    ]
    # The child's first stdout line is its port, or its startup error; then it serves until
    # terminated (uvicorn exits on SIGTERM) or orphaned.
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = _first_line(child, STARTUP_TIMEOUT_S)
        if not line.strip().isdigit():
            raise RuntimeError(f"the sandbox market server could not start: {line.strip()}")
        yield SandboxServer(port=int(line), pid=child.pid)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _first_line(child: subprocess.Popen, timeout: float) -> str:
    assert child.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line:
        raise TimeoutError(f"the sandbox market server did not start within {timeout:.0f} s")
    if not line[0]:
        raise RuntimeError(
            f"the sandbox market server exited during startup (exit code {child.wait()})"
        )
    return line[0]


def _serve(seed: int, n_stocks: int, port: int, parent: int) -> None:
    """The child: generate, bind, report the port (or the error), serve until terminated or
    orphaned."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    try:
        from atft_pipeline.sandbox.market import generate_market
        from atft_pipeline.sandbox.server import (
            ServerSettings,
            bind_socket,
            create_app,
            uvicorn_server,
        )

        market = generate_market(sandbox_market_config(seed, n_stocks))
        app = create_app(market.tables, settings=ServerSettings(), oracle=market.oracle)
        sock = bind_socket(HOST, port)
        server = uvicorn_server(app)
    except Exception as error:  # the parent reports it
        print(f"{type(error).__name__}: {error}", flush=True)
        raise
    print(sock.getsockname()[1], flush=True)
    server.run(sockets=[sock])


def _exit_when_orphaned(parent: int) -> None:
    """A parent killed outright (SIGKILL) runs no cleanup: leave with it."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def sandbox_market_config(seed: int = SANDBOX_SEED, n_stocks: int = SANDBOX_STOCKS) -> MarketConfig:
    """The market ``atft demo`` and nightly simulations serve (``docs/sandbox.md``)."""
    from atft_pipeline.sandbox.market import MarketConfig

    return MarketConfig(
        seed=seed,
        n_stocks=n_stocks,
        start=SANDBOX_START,
        end=SANDBOX_END,
        event_window_start=SANDBOX_EVENTS_FROM,
        margin_interest_daily_from=SANDBOX_MARGIN_DAILY_FROM,
    )


def sandbox_settings(settings: Settings, base_url: str) -> Settings:
    """``settings`` pointed at a sandbox server on ``base_url``."""
    return settings.model_copy(update={"api_key": SecretStr(SANDBOX_API_KEY), "base_url": base_url})


def start_embedded_sandbox(
    settings: Settings, seed: int = SANDBOX_SEED, n_stocks: int = SANDBOX_STOCKS
) -> Settings:
    """Serve the sandbox market in this process (once per market) and return ``settings``
    pointed at it."""
    with _lock:
        if (seed, n_stocks) not in _servers:
            handle = _exit_stack.enter_context(serve_sandbox_market(seed, n_stocks))
            _servers[seed, n_stocks] = handle.base_url
        return sandbox_settings(settings, _servers[seed, n_stocks])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="serve the sandbox market (serve_sandbox_market's child)")
    for flag in ("--seed", "--n-stocks", "--port", "--parent"):
        parser.add_argument(flag, type=int, required=True)
    args = parser.parse_args()
    _serve(args.seed, args.n_stocks, args.port, args.parent)
