"""``serve_sandbox_market``: the market served from a child process, which never outlives
its parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from atft_pipeline.jquants.client import ClientConfig, fetch
from atft_pipeline.sandbox.embedded import sandbox_market_config, serve_sandbox_market
from atft_pipeline.sandbox.market import generate_market
from atft_pipeline.settings import SANDBOX_API_KEY
from tests.helpers import REPO_ROOT

N_STOCKS = 12
pytestmark = pytest.mark.slow  # child processes: seconds each


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by a dead parent's init) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_serves_the_generated_market_from_another_process_and_stops_with_the_block():
    bars = generate_market(sandbox_market_config(n_stocks=N_STOCKS)).tables["equities/bars/daily"]
    with serve_sandbox_market(n_stocks=N_STOCKS) as server:
        assert server.pid != os.getpid() and _alive(server.pid)
        config = ClientConfig(api_key=SANDBOX_API_KEY, base_url=server.base_url, plan="premium")
        served = fetch(config, "equities/bars/daily", date="2023-12-29")
        day = bars.filter(bars["Date"].cast(str) == "2023-12-29")
        assert served.height == day.height > 0
        assert served.sort("Code")["C"].to_list() == day.sort("Code")["C"].to_list()
        pid = server.pid
    assert _wait_gone(pid, 5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/markets/calendar", timeout=2)


def test_a_startup_error_is_reported_with_its_cause():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not start: OSError.*in use"):
            with serve_sandbox_market(n_stocks=N_STOCKS, port=port):
                pass


def test_the_server_leaves_with_a_parent_killed_outright():
    script = (
        "import sys, time\n"
        "from atft_pipeline.sandbox.embedded import serve_sandbox_market\n"
        f"with serve_sandbox_market(n_stocks={N_STOCKS}) as server:\n"
        "    print(server.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait()
        assert _wait_gone(child, 10), "the sandbox server outlived its killed parent"
    finally:
        parent.kill()
        parent.stdout.close()
