"""The code location loads fast, validates, and keeps the layering rules."""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, build_schedule_context

from assets.definitions import build_definitions
from assets.jobs import NIGHTLY_JOB
from assets.partitions import TOKYO, trading_day_lookback, trading_day_partitions
from atft_pipeline.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JQUANTS_", "ATFT_"))}
    env.update(extra)
    return env


# Loaded by the code server, the webserver's reloads and every run worker: what only training,
# tracking or tuning needs is imported inside those steps. No wall-clock bound: the load took
# 12 s on a 2-core machine at load average 8 and a few seconds idle, so a bound only tests the
# machine.
HEAVY_MODULES = ("torch", "mlflow", "lightgbm", "optuna", "sklearn")


@pytest.mark.slow
def test_definitions_load_without_heavy_imports(tmp_path):
    code = (
        "import sys, json; "
        "from assets.definitions import defs; "
        "defs.get_repository_def().get_all_jobs(); "
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        env=_env(ATFT_HOME=str(tmp_path)), check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_dagster_definitions_validate_passes(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=_env(ATFT_HOME=str(tmp_path),
        DAGSTER_HOME=str(tmp_path)), timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_domain_library_never_imports_dagster():
    offenders = []
    for path in (REPO_ROOT / "atft_pipeline").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "dagster" or n.startswith(("dagster.", "dagster_", "assets", "resources")) for n in names):
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {names}")
    assert not offenders, offenders


def test_trading_day_partitions_follow_the_jpx_calendar():
    parts = trading_day_partitions(dt.date(2024, 1, 1))
    keys = [k for k in parts.get_partition_keys() if k < "2025-01-01"]
    assert len(keys) == 245
    assert keys[0] == "2024-01-04"  # year-end closure 1/1-1/3
    assert "2024-05-03" not in keys and "2024-05-06" not in keys  # Golden Week
    assert parts.timezone == "Asia/Tokyo"


def test_lookback_mapping_counts_trading_days_across_golden_week():
    parts = trading_day_partitions(dt.date(2024, 1, 1))
    mapping = trading_day_lookback(5)
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        parts.empty_subset().with_partition_keys(["2024-05-07"]), parts, parts
    ).partitions_subset.get_partition_keys()
    # the partition itself plus the 5 trading days before it, across Golden Week
    assert sorted(upstream) == [
        "2024-04-25", "2024-04-26", "2024-04-30", "2024-05-01", "2024-05-02", "2024-05-07",
    ]


@pytest.mark.parametrize(
    ("start", "evening", "closed"),
    [
        # a J-Quants deployment: its partitions run to tonight
        (dt.date(2024, 1, 4), dt.datetime(2024, 5, 7, 19, 30), dt.datetime(2024, 5, 6, 19, 30)),
        # the sandbox: its partitions end on its last session, and an evening inside its range
        # (as `atft simulate` evaluates them) still finds that evening's partition
        (dt.date(2022, 3, 1), dt.datetime(2023, 11, 13, 19, 30), dt.datetime(2023, 11, 23, 19, 30)),
    ],
    ids=["jquants", "sandbox"],
)
def test_nightly_schedule_targets_that_evenings_partition(tmp_path, start, evening, closed):
    api = {"api_key": "x"} if start.year == 2024 else {"api_key": "sandbox", "base_url": "http://127.0.0.1:9/v2"}
    settings = Settings(home=tmp_path, start_date=start, **api)
    assert settings.is_sandbox == (start.year != 2024)
    defs = build_definitions(settings)
    if settings.is_sandbox:  # and no partition after the sandbox's last session
        partitions = defs.get_assets_def(AssetKey("raw_daily_quotes")).partitions_def
        assert partitions.get_last_partition_key() == "2023-12-29"
    repository = defs.get_repository_def()
    schedule = repository.get_schedule_def("nightly_update_schedule")
    assert schedule.job_name == NIGHTLY_JOB

    def tick(when: dt.datetime):
        context = build_schedule_context(scheduled_execution_time=when, repository_def=repository)
        return schedule.evaluate_tick(context)

    requests = tick(evening.replace(tzinfo=TOKYO))
    assert [r.partition_key for r in requests.run_requests] == [evening.date().isoformat()]
    skipped = tick(closed.replace(tzinfo=TOKYO))  # a holiday: Children's Day, Labour Thanksgiving
    assert not skipped.run_requests and "trading day" in skipped.skip_message


def test_plan_decides_which_raw_sources_are_in_the_jobs(tmp_path):
    light = build_definitions(Settings(home=tmp_path, plan="light", api_key="x"))
    job = light.get_job_def(NIGHTLY_JOB)
    selected = {k.path[-1] for k in job.asset_layer.executable_asset_keys}
    assert "raw_daily_quotes" in selected and "raw_topix" in selected
    assert "raw_short_selling" not in selected and "raw_weekly_margin_interest" not in selected
    spec = light.get_assets_def(AssetKey("raw_short_selling")).specs_by_key[AssetKey("raw_short_selling")]
    assert spec.metadata["entitled"] is False
    assert "needs 'standard'" in spec.metadata["disabled_reason"]


def test_asset_bodies_are_thin_and_storage_is_reached_one_way():
    """Every asset body resolves partitions, calls its stage and writes (at most 15 lines);
    nothing under assets/ or resources/ reads frames itself: stages read from the store."""
    bodies = {}
    for path in (REPO_ROOT / "assets").glob("*.py"):
        source = path.read_text()
        assert ".scan(" not in source and ".read(" not in source, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", "").endswith("asset")
                for d in node.decorator_list
            ):
                bodies[node.name] = node.end_lineno - node.body[0].lineno + 1
    assert len(bodies) == 11, sorted(bodies)  # 2 raw builders, 2 feature/targets, 2 dataset, 5 model
    assert max(bodies.values()) <= 15, bodies
    for path in (REPO_ROOT / "resources").glob("*.py"):
        assert ".scan(" not in path.read_text() and ".read(" not in path.read_text(), path.name


def test_recovery_sensor_interval_comes_from_the_orchestration_config(tmp_path):
    import pytest
    from pydantic import ValidationError

    from assets.recovery import RECOVERY_SENSOR
    from atft_pipeline.config import OrchestrationSection, PipelineConfig

    settings = Settings(home=tmp_path)
    shipped = build_definitions(settings).get_sensor_def(RECOVERY_SENSOR)
    assert shipped.minimum_interval_seconds == 300
    config = PipelineConfig(orchestration=OrchestrationSection(recovery_sensor_interval_s=30))
    sensor = build_definitions(settings, config=config).get_sensor_def(RECOVERY_SENSOR)
    assert sensor.minimum_interval_seconds == 30
    with pytest.raises(ValidationError, match="greater than or equal to 5"):
        OrchestrationSection(recovery_sensor_interval_s=1)
    with pytest.raises(ValidationError, match="recovery_interval"):
        PipelineConfig.model_validate({"orchestration": {"recovery_interval": 30}})
