"""MLflow against a tracking server as the deployment runs it (``mlflow server`` on a free
loopback port, backend store in a fresh PostgreSQL database, proxied artifacts): every run
ends, runs have readable names, the checkpoint is an artifact and the registered model
scores a dataset partition through ``mlflow models predict``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from tests.helpers import RETURN_COLUMN, make_dataset, make_stats

from assets.serve import free_port
from atft_pipeline.config import ModelSection, PipelineConfig, TrainingSection
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.features.catalog import META_COLUMNS, TARGET_COLUMNS
from atft_pipeline.stages.model import predict_atft, train_atft
from atft_pipeline.training.mlflow_model import REGISTERED_MODEL, scoring_rows, to_wire
from atft_pipeline.training.tracking import MlflowTracker, tracked_run

MODEL_OVERRIDES = dict(hidden=16, attn_heads=2, gat_heads=(2, 2), fan_top_k=1, graph_k=4)
# Two members: the registered model is then an ensemble checkpoint (a single model's is the
# pipeline's default, registered by every whole-graph run).
TRAINING_OVERRIDES = dict(
    device="cpu",
    dates_per_batch=8,
    ensemble_members=2,
    phases=[
        {"name": "baseline", "epochs": 1, "lr": 3e-3},
        {"name": "gat", "epochs": 1, "lr": 3e-3},
    ],
)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, mlflow_postgres_url) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    with (root / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", mlflow_postgres_url,
             "--artifacts-destination", str(root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_runs_end_finished_failed_or_killed(mlflow_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    statuses = {}
    for outcome, error in (("ok", None), ("error", ValueError), ("interrupt", KeyboardInterrupt)):
        tracker = MlflowTracker(mlflow_server, "lifecycle", run_name=outcome)
        with pytest.raises(error) if error else _nothing():
            with tracked_run(tracker):
                tracker.log_metrics({"x": 1.0}, step=0)
                if error:
                    raise error("stop")
        statuses[outcome] = client.get_run(tracker.run_id).info.status
    assert statuses == {"ok": "FINISHED", "error": "FAILED", "interrupt": "KILLED"}


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
def test_training_run_is_named_finished_and_its_registered_model_scores_a_partition(
    mlflow_server, tmp_path
):
    from mlflow.tracking import MlflowClient

    dataset = make_dataset(n_stocks=20, n_dates=90, seed=3)
    dates = sorted(dataset["date"].unique().to_list())
    splits = SplitConfig.from_counts(dates, n_val=20, n_test=10)
    stats = make_stats(dataset, train_end=splits.train.end)
    config = PipelineConfig(
        model=ModelSection(overrides=MODEL_OVERRIDES),
        training=TrainingSection(overrides=TRAINING_OVERRIDES, graph_return_column=RETURN_COLUMN),
    )
    features = [c for c in dataset.columns if c not in {*META_COLUMNS, *TARGET_COLUMNS}]
    trained = train_atft(
        dataset, features, stats, splits, config, tmp_path / "run", mlflow_server,
        tags={"catalog_hash": "c0ffee"}, resume=False,
    )

    client = MlflowClient(mlflow_server)
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert re.fullmatch(
        rf"atft_gat_fan-[0-9a-f]{{8}}-{splits.train.start}\.\.{splits.val.end}", run.info.run_name
    ), run.info.run_name
    assert run.data.tags["catalog_hash"] == "c0ffee"
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {trained.checkpoint.name, "final_metrics.json"} <= artifacts, artifacts

    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    assert [v.run_id for v in versions] == [trained.run_id]
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{REGISTERED_MODEL}/{versions[0].version}")
    assert "date" in info.signature.inputs.input_names()
    assert "prediction" in info.signature.outputs.input_names()

    # Score the last test partition with the CLI, in this environment.
    last = splits.test.end
    rows = scoring_rows(dataset, last, window=trained_window(trained))
    request = tmp_path / "rows.json"
    payload = {"dataframe_split": to_wire(rows).to_dict(orient="split")}
    request.write_text(json.dumps(payload, default=str))
    scored = tmp_path / "scored.json"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mlflow")), "models", "predict",
         "-m", f"models:/{REGISTERED_MODEL}/{versions[0].version}", "-i", str(request),
         "-t", "json", "-o", str(scored), "--env-manager", "local"],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = pl.DataFrame(json.loads(scored.read_text())["predictions"])
    assert set(predictions["date"]) == {last.isoformat()}

    # The same numbers as the pipeline's own prediction path over the full history.
    expected = predict_atft(trained.checkpoint, dataset, stats, config, {"live": (last, last)})
    joined = expected.with_columns(pl.col("date").dt.to_string("%Y-%m-%d")).join(
        predictions.select("date", "code", "horizon", pl.col("prediction").alias("served")),
        on=["date", "code", "horizon"],
    )
    assert joined.height == expected.height > 0
    assert (joined["prediction"] - joined["served"]).abs().max() < 1e-5


def trained_window(trained) -> int:
    from atft_pipeline.training.checkpoint import load_checkpoint

    return load_checkpoint(trained.checkpoint)["window"]
