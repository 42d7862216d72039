"""The deployment without Docker: code server, webserver and daemon as separate processes.

Same topology and the same files as ``docker-compose.yml``: ``deploy/dagster.yaml`` (Postgres
storage from ``ATFT_POSTGRES_URL``, queued runs, pools) and ``deploy/workspace.yaml`` (the
code location's gRPC server from ``ATFT_CODE_SERVER_HOST`` / ``ATFT_CODE_SERVER_PORT``).
State lives under ``<ATFT_HOME>/serve``: ``dagster/`` (the instance directory), ``pids/``
and ``logs/``. Each process leads its own process group, so stopping one also stops what it
spawned (the code server's gRPC child, run workers).

``python -m assets.serve`` (``make serve``) runs in the foreground until Ctrl-C or until one
process dies; ``python -m assets.serve --stop`` stops a deployment started elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from assets.instance import dagster_environment
from atft_pipeline.settings import Settings

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the directory holding ``assets``
DEPLOY_DIR = PACKAGE_ROOT / "deploy"
CODE_LOCATION = ("assets.definitions", "defs")
# Started in this order, stopped in the reverse one.
PROCESSES = ("code", "webserver", "daemon")

DAEMON_HEALTH_QUERY = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""


class ServeError(RuntimeError):
    """The deployment could not start (which process, and the tail of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Deployment:
    """One native deployment; ``start`` waits until every process is ready, ``stop`` is
    idempotent and always leaves no process behind."""

    settings: Settings
    host: str = "127.0.0.1"
    webserver_port: int = 3000
    code_port: int = 0  # 0: a free port
    deploy_dir: Path = DEPLOY_DIR
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.settings.home.resolve() / "serve"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.webserver_port}"

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.state_dir / "pids" / f"{name}.pid"

    # ------------------------------------------------------------------ start

    def environment(self) -> dict[str, str]:
        if self.settings.postgres_url is None:
            raise ServeError(
                "the deployment keeps Dagster's state in Postgres: set ATFT_POSTGRES_URL, e.g. "
                "postgresql+psycopg2://dagster:dagster@127.0.0.1:5432/dagster"
            )
        return {
            **os.environ,
            **dagster_environment(),
            "ATFT_HOME": str(self.settings.home.resolve()),
            "ATFT_POSTGRES_URL": self.settings.postgres_url.get_secret_value(),
            "ATFT_CODE_SERVER_HOST": self.host,
            "ATFT_CODE_SERVER_PORT": str(self.code_port),
            "DAGSTER_HOME": str(self.dagster_home),
        }

    def commands(self) -> dict[str, list[str]]:
        workspace = str(self.deploy_dir / "workspace.yaml")
        module, attribute = CODE_LOCATION
        return {
            "code": [
                _script("dagster"), "code-server", "start", "-h", self.host,
                "-p", str(self.code_port), "-m", module, "-a", attribute,
                "-d", str(PACKAGE_ROOT),
            ],
            "webserver": [
                _script("dagster-webserver"), "-h", self.host, "-p", str(self.webserver_port),
                "-w", workspace,
            ],
            "daemon": [_script("dagster-daemon"), "run", "-w", workspace],
        }

    def start(self, timeout: float = 180.0) -> None:
        """Prepare the instance (creates Dagster's tables once, before three processes race
        to), start the processes and wait for the code server, ``/server_info`` and healthy
        daemons; on any failure everything started is stopped again."""
        if self.code_port == 0:
            self.code_port = free_port(self.host)
        env = self.environment()
        for sub in ("dagster", "logs", "pids"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.deploy_dir / "dagster.yaml", self.dagster_home / "dagster.yaml")
        self._prepare_storage(env)
        deadline = time.monotonic() + timeout
        try:
            for name, command in self.commands().items():
                self._spawn(name, command, env)
                if name == "code":
                    self._wait(name, deadline, self._code_server_ready)
            self._wait("webserver", deadline, self._webserver_ready)
            self._wait("daemon", deadline, self._daemons_healthy)
        except BaseException:
            self.stop()
            raise

    def _prepare_storage(self, env: Mapping[str, str]) -> None:
        command = [
            sys.executable, "-c",
            "from dagster import DagsterInstance; DagsterInstance.get().dispose()",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServeError(
                f"cannot open the Dagster instance on Postgres:\n{done.stderr[-3000:]}"
            )

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> None:
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=PACKAGE_ROOT,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() kills its children too
            )
        self.processes[name] = process
        self.pid_path(name).write_text(str(process.pid))

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            for other, process in self.processes.items():
                if process.poll() is not None:
                    raise ServeError(
                        f"{other} exited with code {process.returncode} while starting:\n"
                        + self.log_tail(other)
                    )
            if ready():
                return
            time.sleep(0.5)
        raise ServeError(f"{name} was not ready in time:\n{self.log_tail(name)}")

    def _code_server_ready(self) -> bool:
        from dagster._grpc.client import DagsterGrpcClient

        try:
            DagsterGrpcClient(port=self.code_port, host=self.host).ping("")
        except Exception:  # not listening yet
            return False
        return True

    def _webserver_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/server_info", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def _daemons_healthy(self) -> bool:
        try:
            data = graphql(self.url, DAEMON_HEALTH_QUERY)
        except (httpx.HTTPError, GraphQLError):
            return False
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return all(s["healthy"] for s in statuses if s["required"])

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM each process group (daemon first), SIGKILL what is left after ``timeout``."""
        pids = {name: _read_pid(self.pid_path(name)) for name in PROCESSES}
        pids.update({name: p.pid for name, p in self.processes.items()})
        for name in reversed(PROCESSES):
            if pids.get(name) is not None:
                _signal_group(pids[name], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in reversed(PROCESSES):
            pid = pids.get(name)
            if pid is None:
                continue
            while _group_alive(pid) and time.monotonic() < deadline:
                self._reap(name)
                time.sleep(0.2)
            if _group_alive(pid):
                _signal_group(pid, signal.SIGKILL)
            self._reap(name)
            self.pid_path(name).unlink(missing_ok=True)
        self.processes.clear()

    def _reap(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None:
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass

    def exited(self) -> dict[str, int]:
        """Processes that have ended, with their exit codes."""
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}


class GraphQLError(RuntimeError):
    pass


def graphql(url: str, query: str, variables: Mapping | None = None, timeout: float = 60) -> dict:
    """POST one query to the webserver's ``/graphql``; errors become :class:`GraphQLError`."""
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=timeout
    )
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise GraphQLError(str(body["errors"]))
    return body["data"]


def _script(name: str) -> str:
    """A console script of this interpreter's environment (``dagster``, ``dagster-daemon``)."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="atft serve", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address of every process")
    parser.add_argument("--port", type=int, default=3000, help="webserver port")
    parser.add_argument("--code-port", type=int, default=0, help="code server port (0: free)")
    parser.add_argument("--stop", action="store_true", help="stop the deployment under ATFT_HOME")
    parser.set_defaults(handler=serve)
    return parser


def serve(args: argparse.Namespace) -> int:
    deployment = Deployment(
        Settings.from_env(), host=args.host, webserver_port=args.port, code_port=args.code_port
    )
    if args.stop:
        deployment.stop()
        print(f"stopped the deployment under {deployment.state_dir}")
        return 0
    stop_requested = False

    def request_stop(_signum, _frame) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        deployment.start()
        print(f"Dagster UI on {deployment.url}; logs and pids under {deployment.state_dir}")
        while not stop_requested:
            exited = deployment.exited()
            if exited:
                for name, code in exited.items():
                    print(f"{name} exited with code {code}:\n{deployment.log_tail(name)}")
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except ServeError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        deployment.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
