"""User settings, read once from the environment into one typed object.

The only environment variables the project reads (DESIGN §9):

| variable | meaning | default |
|---|---|---|
| ``JQUANTS_API_KEY`` | V2 API key; unset (or ``sandbox``) -> the sandbox market | unset |
| ``JQUANTS_BASE_URL`` | API base URL (any stand-in server works) | public V2 URL; the embedded sandbox when the key is unset |
| ``JQUANTS_PLAN`` | ``free`` / ``light`` / ``standard`` / ``premium`` | ``premium`` in sandbox mode, else ``free`` |
| ``ATFT_HOME`` | data, Dagster home, MLflow | ``.atft`` |
| ``ATFT_START_DATE`` | first trading-day partition | the sandbox market's first day |
| ``ATFT_POSTGRES_URL`` | Dagster's Postgres storage for ``atft serve`` / docker compose (a bare ``postgresql://`` gets the psycopg2 driver) | unset |
| ``MLFLOW_TRACKING_URI`` | MLflow tracking server or store | ``sqlite:///<ATFT_HOME>/mlflow.db`` |
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator

from atft_pipeline.errors import UsageError
from atft_pipeline.jquants.client import DEFAULT_BASE_URL, ClientConfig
from atft_pipeline.jquants.endpoints import Plan

SANDBOX_API_KEY = "sandbox"
POSTGRES_DRIVER_SCHEME = "postgresql+psycopg2://"
SANDBOX_START = dt.date(2021, 1, 4)
SANDBOX_END = dt.date(2023, 12, 29)

_ENV_VARS = (
    "JQUANTS_API_KEY",
    "JQUANTS_BASE_URL",
    "JQUANTS_PLAN",
    "ATFT_HOME",
    "ATFT_START_DATE",
    "ATFT_POSTGRES_URL",
    "MLFLOW_TRACKING_URI",
)


class Settings(BaseModel):
    """Where data comes from and where everything is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr | None = None
    base_url: str | None = None
    plan: Plan | None = None
    home: Path = Path(".atft")
    start_date: dt.date | None = None
    postgres_url: SecretStr | None = None  # carries a password: never printed
    mlflow_tracking_uri: str | None = None

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("postgres_url", mode="before")
    @classmethod
    def _psycopg2_driver(cls, value):
        # SQLAlchemy 2 maps a bare postgresql:// to psycopg 3, whose server-side parameter
        # binding breaks dagster-postgres's ``NOTIFY run_events, %s``: pin the driver.
        if isinstance(value, str):
            for prefix in ("postgresql://", "postgres://"):
                if value.startswith(prefix):
                    return POSTGRES_DRIVER_SCHEME + value.removeprefix(prefix)
        return value

    @property
    def is_sandbox(self) -> bool:
        """No key or the sandbox key: the data is a stand-in server's, not a subscription's."""
        return self.api_key is None or self.api_key.get_secret_value() == SANDBOX_API_KEY

    @property
    def embedded_sandbox(self) -> bool:
        """Sandbox without a URL: the pipeline must serve its own synthetic market in-process
        (``atft_pipeline.sandbox.embedded.start_embedded_sandbox``) before calling the API."""
        return self.is_sandbox and self.base_url is None

    @property
    def effective_plan(self) -> Plan:
        if self.plan is not None:
            return self.plan
        # Stand-in servers serve every endpoint by default, so the sandbox runs as premium.
        return Plan.PREMIUM if self.is_sandbox else Plan.FREE

    @property
    def default_end_date(self) -> dt.date:
        """Last trading day ``atft run`` covers unless told: the sandbox's last day, or today."""
        return self.last_session or dt.date.today()

    @property
    def last_session(self) -> dt.date | None:
        """The data's known last session: the sandbox market's; None for J-Quants (today's
        data keeps arriving)."""
        return SANDBOX_END if self.is_sandbox else None

    @property
    def effective_start_date(self) -> dt.date:
        return self.start_date or SANDBOX_START

    @property
    def data_root(self) -> Path:
        return self.home / "data"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').as_posix()}"

    def client_config(self, **overrides) -> ClientConfig:
        """The J-Quants client for these settings (``overrides``: other ClientConfig fields)."""
        if self.embedded_sandbox:
            raise RuntimeError(
                "no JQUANTS_BASE_URL: start the embedded sandbox server first "
                "(atft_pipeline.sandbox.embedded.start_embedded_sandbox)"
            )
        base_url = self.base_url or DEFAULT_BASE_URL
        return ClientConfig(
            base_url=base_url,
            api_key=self.api_key,
            plan=self.effective_plan,
            rate_limited=not _is_loopback(base_url),
            **overrides,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (default ``os.environ``); a bad value raises
        ``SettingsError`` naming the variable and the values it may take."""
        env = os.environ if environ is None else environ
        values = {k: env.get(k) for k in _ENV_VARS}
        try:
            return cls(
                api_key=values["JQUANTS_API_KEY"] or None,
                base_url=values["JQUANTS_BASE_URL"] or None,
                plan=_plan(values["JQUANTS_PLAN"]),
                home=Path(values["ATFT_HOME"] or ".atft"),
                start_date=values["ATFT_START_DATE"] or None,
                postgres_url=values["ATFT_POSTGRES_URL"] or None,
                mlflow_tracking_uri=values["MLFLOW_TRACKING_URI"] or None,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            variable = _FIELD_VARS.get(str(error["loc"][0]), str(error["loc"][0]))
            raise SettingsError(f"{variable}={error['input']!r}: {error['msg']}") from exc


class SettingsError(UsageError, ValueError):
    """An environment variable holds a value the project cannot use."""


# Settings field -> the environment variable it is read from.
_FIELD_VARS = {
    "api_key": "JQUANTS_API_KEY",
    "base_url": "JQUANTS_BASE_URL",
    "plan": "JQUANTS_PLAN",
    "home": "ATFT_HOME",
    "start_date": "ATFT_START_DATE",
    "postgres_url": "ATFT_POSTGRES_URL",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
}


def _plan(text: str | None) -> Plan | None:
    if not text:
        return None
    try:
        return Plan(text.lower())
    except ValueError:
        valid = ", ".join(p.value for p in Plan)
        raise SettingsError(f"JQUANTS_PLAN={text!r} is not a J-Quants plan; use one of: {valid}") from None

def _is_loopback(url: str) -> bool:
    """A server on this machine is a stand-in, not J-Quants: no client-side pacing."""
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
