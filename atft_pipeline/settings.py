"""User settings, read once from the environment into one typed object.

The only environment variables the project reads (DESIGN §9):

| variable | meaning | default |
|---|---|---|
| ``JQUANTS_API_KEY`` | V2 API key; unset -> the embedded sandbox market | unset |
| ``JQUANTS_BASE_URL`` | API base URL (any stand-in server works) | public V2 URL |
| ``JQUANTS_PLAN`` | ``free`` / ``light`` / ``standard`` / ``premium`` | ``premium`` in sandbox mode, else ``free`` |
| ``ATFT_HOME`` | data, Dagster home, MLflow | ``.atft`` |
| ``ATFT_START_DATE`` | first trading-day partition | the sandbox market's first day |
| ``ATFT_POSTGRES_URL`` | Dagster's Postgres storage for ``atft serve`` / docker compose (a bare ``postgresql://`` gets the psycopg2 driver) | unset |
| ``MLFLOW_TRACKING_URI`` | MLflow tracking server or store | ``sqlite:///<ATFT_HOME>/mlflow.db`` |
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from atft_pipeline.jquants.endpoints import Plan

PUBLIC_BASE_URL = "https://api.jquants.com/v2"
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
    def sandbox(self) -> bool:
        """No key and no URL: the pipeline serves its own synthetic market in-process."""
        return self.api_key is None and self.base_url is None

    @property
    def effective_plan(self) -> Plan:
        if self.plan is not None:
            return self.plan
        # The embedded sandbox serves every endpoint, so it runs as a premium plan.
        return Plan.PREMIUM if self.api_key is None else Plan.FREE

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {k: env.get(k) for k in _ENV_VARS}
        return cls(
            api_key=values["JQUANTS_API_KEY"] or None,
            base_url=values["JQUANTS_BASE_URL"] or None,
            plan=Plan(values["JQUANTS_PLAN"].lower()) if values["JQUANTS_PLAN"] else None,
            home=Path(values["ATFT_HOME"] or ".atft"),
            start_date=values["ATFT_START_DATE"] or None,
            postgres_url=values["ATFT_POSTGRES_URL"] or None,
            mlflow_tracking_uri=values["MLFLOW_TRACKING_URI"] or None,
        )
