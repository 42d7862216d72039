"""The shipped deployment files: docker-compose.yml (validated by ``docker compose config``
where a docker CLI exists, and structurally in any case), the Dagster instance and workspace
files against Dagster's own schemas, the Postgres driver, the Helm values against the chart's
values structure and the training run's Kubernetes tag against dagster-k8s's parser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from assets.k8s import K8S_CONFIG_TAG, TRAINING_RUN_TAGS
from atft_pipeline.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = REPO_ROOT / "docker-compose.yml"
DEPLOY = REPO_ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# --------------------------------------------------------------------------- docker compose


def _compose_cli() -> list[str] | None:
    """``docker compose`` (plugin) or ``docker-compose``, when one is installed."""
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_config_is_valid_where_compose_exists():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose here; the structure is checked by the other tests")
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_every_compose_service_is_health_checked_or_waits_for_a_healthy_one():
    services = compose()["services"]
    assert set(services) == {"postgres", "mlflow", "code", "webserver", "daemon"}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, (name, target)
            assert "healthcheck" in services[target], (name, target)
        assert "healthcheck" in service or depends, name
    assert set(services["code"]["depends_on"]) == {"postgres", "mlflow"}
    assert set(services["webserver"]["depends_on"]) == {"code"}
    assert set(services["daemon"]["depends_on"]) == {"code"}


def test_compose_binds_uis_to_loopback_and_takes_hosts_from_the_environment():
    services = compose()["services"]
    published = {n: s["ports"] for n, s in services.items() if "ports" in s}
    assert published == {"webserver": ["127.0.0.1:3000:3000"], "mlflow": ["127.0.0.1:5000:5000"]}
    env = services["code"]["environment"]
    assert services["webserver"]["environment"] == env == services["daemon"]["environment"]
    assert env["ATFT_POSTGRES_URL"].startswith("postgresql+psycopg2://")
    assert (env["ATFT_CODE_SERVER_HOST"], env["ATFT_CODE_SERVER_PORT"]) == ("code", "4000")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mlflow = services["mlflow"]["command"]
    store = next(a for a in mlflow if a.startswith("--backend-store-uri="))
    assert store.startswith("--backend-store-uri=postgresql+psycopg2://")
    assert store.endswith("/mlflow")
    init = (DEPLOY / "postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow;" in init
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"] == {"postgres_url": {"env": "ATFT_POSTGRES_URL"}}
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == {"env": "ATFT_CODE_SERVER_HOST"}
    assert server["port"] == {"env": "ATFT_CODE_SERVER_PORT"}
    for role in ("webserver", "daemon"):
        assert "/app/deploy/workspace.yaml" in services[role]["command"]


def test_the_image_carries_the_deploy_files():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY deploy ./deploy" in dockerfile
    assert "cp deploy/dagster.yaml $DAGSTER_HOME/dagster.yaml" in dockerfile


# --------------------------------------------------------------------------- Dagster files


def test_instance_and_workspace_files_resolve_from_the_environment(tmp_path, monkeypatch):
    from dagster import StringSource
    from dagster._config import process_config
    from dagster._config.field import resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA
    from dagster_postgres.utils import pg_url_from_config

    url = "postgresql+psycopg2://dagster:secret@db.internal:5432/dagster"
    monkeypatch.setenv("ATFT_POSTGRES_URL", url)
    monkeypatch.setenv("ATFT_CODE_SERVER_HOST", "code.internal")
    monkeypatch.setenv("ATFT_CODE_SERVER_PORT", "4100")
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "ATFT_POSTGRES_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"

    resolved = process_config(
        resolve_to_config_type({"postgres_url": StringSource}), config["storage"]["postgres"]
    )
    assert resolved.success and pg_url_from_config(resolved.value) == url

    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    result = process_config(resolve_to_config_type(WORKSPACE_CONFIG_SCHEMA), workspace)
    assert result.success, result.errors
    server = result.value["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"]) == ("code.internal", 4100)


def test_the_postgres_driver_is_psycopg2_whatever_scheme_the_user_writes():
    import psycopg2  # the pinned driver: imported, not just listed
    from sqlalchemy.engine import make_url

    assert psycopg2.__version__.startswith("2.9.13")
    for given in ("postgresql://u:p@h:5432/d", "postgres://u:p@h:5432/d",
                  "postgresql+psycopg2://u:p@h:5432/d"):
        url = Settings(postgres_url=given).postgres_url.get_secret_value()
        assert url == "postgresql+psycopg2://u:p@h:5432/d"
        assert make_url(url).get_dialect().driver == "psycopg2"
    env = Settings.from_env(
        {"ATFT_POSTGRES_URL": "postgresql://x@y/z", "MLFLOW_TRACKING_URI": "http://m:5000"}
    )
    assert env.postgres_url.get_secret_value() == "postgresql+psycopg2://x@y/z"
    assert "x@y" not in repr(env)  # the URL carries a password: never printed
    assert env.mlflow_uri == "http://m:5000"
    assert Settings(home=Path("/h")).mlflow_uri == "sqlite:////h/mlflow.db"


# --------------------------------------------------------------------------- Helm values

# The values structure of Dagster's official chart `dagster` 1.13.27 (helm/dagster/values.yaml
# and its JSON schema, which rejects unknown keys), written down for the sections used here.
# ANY: a free-form Kubernetes object (resources, volumes, env entries, ...).
ANY = object()
K8S_RESOURCES = ANY
IMAGE = {"repository": str, "tag": str, "pullPolicy": str}
CHART_VALUES = {
    "global": {"postgresqlSecretName": str, "dagsterHome": str, "serviceAccountName": str,
               "celeryConfigSecretName": str},
    "nameOverride": str, "fullnameOverride": str, "rbacEnabled": bool, "imagePullSecrets": list,
    "computeLogManager": {"type": str, "config": ANY},
    "pythonLogs": ANY,
    "dagsterWebserver": {
        "replicaCount": int, "image": IMAGE, "nameOverride": str, "pathPrefix": str,
        "service": {"type": str, "port": int, "annotations": ANY},
        "workspace": ANY, "env": list, "envConfigMaps": list, "envSecrets": list,
        "deploymentLabels": ANY, "labels": ANY, "nodeSelector": ANY, "affinity": ANY,
        "tolerations": list, "podSecurityContext": ANY, "securityContext": ANY,
        "resources": K8S_RESOURCES, "readinessProbe": ANY, "livenessProbe": ANY,
        "startupProbe": ANY, "annotations": ANY, "enableReadOnly": bool,
        "dbStatementTimeout": int, "dbPoolRecyclingTime": int, "logLevel": str, "logFormat": str,
    },
    "dagster-user-deployments": {
        "enabled": bool, "enableSubchart": bool, "imagePullSecrets": list,
        "deployments": [{
            "name": str, "image": IMAGE, "dagsterApiGrpcArgs": list, "codeServerArgs": list,
            "port": int, "includeConfigInLaunchedRuns": {"enabled": bool},
            "env": list, "envConfigMaps": list, "envSecrets": list, "annotations": ANY,
            "nodeSelector": ANY, "affinity": ANY, "tolerations": list,
            "podSecurityContext": ANY, "securityContext": ANY, "resources": K8S_RESOURCES,
            "livenessProbe": ANY, "readinessProbe": ANY, "startupProbe": ANY, "labels": ANY,
            "volumes": list, "volumeMounts": list, "service": ANY, "initContainers": list,
            "sidecarContainers": list, "schedulerName": str,
        }],
    },
    "pipelineRun": {"image": IMAGE, "env": ANY},
    "runLauncher": {
        "type": str,
        "config": {
            "k8sRunLauncher": {
                "image": IMAGE, "imagePullPolicy": str, "jobNamespace": str,
                "loadInclusterConfig": bool, "kubeconfigFile": str, "envConfigMaps": list,
                "envSecrets": list, "envVars": list, "volumeMounts": list, "volumes": list,
                "labels": ANY, "resources": K8S_RESOURCES, "schedulerName": str,
                "securityContext": ANY, "runK8sConfig": ANY, "failPodOnRunFailure": bool,
            },
            "celeryK8sRunLauncher": ANY,
            "customRunLauncher": ANY,
        },
    },
    "postgresql": {
        "enabled": bool, "image": IMAGE, "postgresqlHost": str, "postgresqlUsername": str,
        "postgresqlPassword": str, "postgresqlDatabase": str, "postgresqlParams": ANY,
        "postgresqlScheme": str, "service": {"port": int},
    },
    "generatePostgresqlPasswordSecret": bool,
    "generateCeleryConfigSecret": bool,
    "rabbitmq": ANY, "redis": ANY, "flower": ANY, "ingress": ANY,
    "dagsterDaemon": {
        "enabled": bool, "image": IMAGE, "heartbeatTolerance": int,
        "runCoordinator": {
            "enabled": bool, "type": str,
            "config": {"queuedRunCoordinator": {
                "maxConcurrentRuns": int, "tagConcurrencyLimits": list,
                "dequeueIntervalSeconds": int, "dequeueUseThreads": bool,
                "dequeueNumWorkers": int,
            }, "customRunCoordinator": ANY},
        },
        "runMonitoring": ANY, "runRetries": ANY, "sensors": ANY, "schedules": ANY,
        "backfills": ANY, "env": list, "envConfigMaps": list, "envSecrets": list,
        "deploymentLabels": ANY, "labels": ANY, "nodeSelector": ANY, "affinity": ANY,
        "tolerations": list, "podSecurityContext": ANY, "securityContext": ANY,
        "resources": K8S_RESOURCES, "livenessProbe": ANY, "readinessProbe": ANY,
        "startupProbe": ANY, "annotations": ANY, "logLevel": str, "logFormat": str,
    },
    "busybox": {"image": IMAGE},
    "migrate": ANY,
    "scheduler": ANY,
    "serviceAccount": ANY,
    "extraManifests": list,
    "retention": ANY,
    "telemetry": {"enabled": bool},
    "additionalInstanceConfig": ANY,
}


def _check_against(values: Any, schema: Any, path: str) -> list[str]:
    if schema is ANY:
        return []
    if isinstance(schema, dict):
        if not isinstance(values, dict):
            return [f"{path}: expected a mapping"]
        errors = [f"{path}.{k}: not a key of the chart's values" for k in values if k not in schema]
        for key, value in values.items():
            if key in schema:
                errors += _check_against(value, schema[key], f"{path}.{key}")
        return errors
    if isinstance(schema, list) and schema and isinstance(schema[0], dict):
        if not isinstance(values, list):
            return [f"{path}: expected a list"]
        return [
            e for i, v in enumerate(values) for e in _check_against(v, schema[0], f"{path}[{i}]")
        ]
    return [] if isinstance(values, schema) else [f"{path}: {values!r} is not {schema.__name__}"]


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())


def test_helm_values_follow_the_charts_structure():
    assert _check_against(helm_values(), CHART_VALUES, "values") == []
    # The check itself rejects what the chart would.
    broken = {"runLauncher": {"config": {"k8sRunLauncher": {"volume": []}}}}
    assert _check_against(broken, CHART_VALUES, "values") == [
        "values.runLauncher.config.k8sRunLauncher.volume: not a key of the chart's values"
    ]


def test_helm_values_run_every_run_as_a_job_on_postgres_with_the_data_volume():
    from dagster_k8s import K8sRunLauncher

    values = helm_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", "assets.definitions", "-a", "defs"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for spec in (deployment, launcher):
        assert {"name": "atft-data", "mountPath": "/data"} in spec["volumeMounts"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]]
        assert claims == ["atft-data"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["ATFT_HOME"] == "/data" and env["MLFLOW_TRACKING_URI"].startswith("http://")
    # The chart turns these camelCase keys into K8sRunLauncher's snake_case config fields.
    fields = set(K8sRunLauncher.config_type().keys())
    for key in launcher:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
        assert snake in fields, key


def test_training_runs_ask_for_a_gpu_node_through_dagster_k8s_tags():
    from dagster_k8s.job import get_user_defined_k8s_config

    from assets.definitions import build_definitions
    from assets.jobs import WEEKLY_RETRAIN_JOB

    config = get_user_defined_k8s_config(TRAINING_RUN_TAGS)  # dagster-k8s's own parser
    limits = config.container_config["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert config.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert config.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"
    with pytest.raises(Exception, match="resourcez"):  # it does reject what Kubernetes would
        get_user_defined_k8s_config(
            {K8S_CONFIG_TAG: json.dumps({"container_config": {"resourcez": {}}})}
        )
    job = build_definitions(Settings()).resolve_job_def(WEEKLY_RETRAIN_JOB)
    assert job.tags[K8S_CONFIG_TAG] == TRAINING_RUN_TAGS[K8S_CONFIG_TAG]
