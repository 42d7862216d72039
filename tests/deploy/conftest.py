"""Fixtures of the deployment tests: a fresh PostgreSQL database per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# The PostgreSQL server the deployment tests use (trust auth); each session gets its own
# database, dropped afterwards.
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so the mark is known when pytest-xdist is not installed.
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker")


def _admin_connection():
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    connection.autocommit = True
    return connection


@contextmanager
def _fresh_database(prefix: str) -> Iterator[str]:
    import psycopg2

    try:
        admin = _admin_connection()
    except psycopg2.OperationalError as error:
        pytest.fail(f"the deployment tests need PostgreSQL on 127.0.0.1:5432 (trust auth): {error}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A new, empty database for Dagster on the local PostgreSQL server; dropped afterwards."""
    with _fresh_database("atft_test") as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_postgres_url() -> Iterator[str]:
    """Another one for an MLflow backend store (as in docker-compose.yml)."""
    with _fresh_database("atft_test_mlflow") as url:
        yield url
