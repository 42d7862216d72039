"""Deployment files: docker-compose structure and Dagster instance configs (no Docker engine here)."""

from __future__ import annotations

import shutil

import yaml
from dagster._core.instance.config import dagster_instance_config

from assets.instance import ensure_dagster_home
from atft_pipeline.settings import Settings
from tests.helpers import REPO_ROOT



def test_compose_has_every_service_and_binds_uis_to_loopback():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon", "mlflow"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    assert "-m" in services["code"]["command"] and "assets.definitions" in services["code"]["command"]
    for name in ("code", "webserver", "daemon", "mlflow"):
        assert any(v.endswith(":/data") for v in services[name]["volumes"]), name


def test_instance_configs_validate_against_dagsters_schema(tmp_path):
    docker_home = tmp_path / "docker"
    docker_home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", docker_home / "dagster.yaml")
    config, _ = dagster_instance_config(str(docker_home))
    assert config["concurrency"]["pools"]["default_limit"] == 2
    assert "postgres" in config["storage"]

    local_home = ensure_dagster_home(Settings(home=tmp_path / "atft"))
    local, _ = dagster_instance_config(str(local_home))
    assert local["concurrency"]["pools"]["default_limit"] >= 1
