"""Training loop, checkpoints/resume, OOM back-off, predictions contract and trackers.

Everything runs on CPU on a small synthetic ``ml_dataset`` (``tests.helpers.make_dataset``) with a
planted signal, so a few epochs must reach a clearly positive validation RankIC.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import spearmanr

from atft_pipeline.dataset.splits import DateWindow, SplitConfig
from atft_pipeline.evaluation.metrics import PREDICTION_COLUMNS, QUANTILE_COLUMNS
from atft_pipeline.features.catalog import HORIZONS
from atft_pipeline.model import ATFTGATFAN, LossConfig, ModelConfig
from atft_pipeline.training import (
    JsonTracker,
    MlflowTracker,
    MultiTracker,
    Panel,
    PhaseConfig,
    TrainCallback,
    TrainingConfig,
    graph_config,
    load_checkpoint,
    load_model,
    predict,
    train,
    train_ensemble,
)
from atft_pipeline.training.loop import WarmupCosine, horizon_metrics, seed_everything
from atft_pipeline.training.tracking import flatten_params
from tests.helpers import RETURN_COLUMN, feature_columns, make_dataset, make_stats

# Every test here trains a model for a few epochs.
pytestmark = pytest.mark.slow

WINDOW = 5


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors run faster on one thread (and the suite shares two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset() -> pl.DataFrame:
    return make_dataset(n_stocks=30, n_dates=150, seed=1)


@pytest.fixture(scope="module")
def splits(dataset) -> SplitConfig:
    return SplitConfig.from_counts(sorted(dataset["date"].unique().to_list()), n_val=25, n_test=10)


@pytest.fixture(scope="module")
def model_config(dataset) -> ModelConfig:
    return ModelConfig.demo(
        len(feature_columns(dataset)),
        window=WINDOW,
        hidden=16,
        attn_heads=2,
        gat_heads=(2, 2),
        fan_top_k=1,
        graph_window=20,
        graph_k=4,
    )


@pytest.fixture(scope="module")
def panel(dataset, splits, model_config) -> Panel:
    stats = make_stats(dataset, train_end=splits.train.end)
    return Panel.from_dataset(
        dataset, stats, return_column=RETURN_COLUMN, window=WINDOW, graph=graph_config(model_config)
    )


def config(phases: dict[str, int], **overrides) -> TrainingConfig:
    values = dict(
        seed=7,
        dates_per_batch=8,
        eval_dates_per_batch=16,
        phases=tuple(
            PhaseConfig(name=name, epochs=epochs, lr=3e-3) for name, epochs in phases.items()
        ),
        early_stopping_patience=5,
        device="cpu",
    )
    return TrainingConfig(**(values | overrides))


def assert_same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for h in a:
        assert a[h].keys() == b[h].keys()
        for name, value in a[h].items():
            if b[h][name] is None:  # a metric undefined on this split (e.g. JPX below 400 stocks)
                assert value is None, (h, name)
            else:
                assert value == pytest.approx(b[h][name], rel=1e-12, abs=1e-15), (h, name)


def n_train(panel, splits) -> int:
    return panel.date_indices(splits.train.start, splits.train.end).size


class BatchRecorder(TrainCallback):
    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[int]]] = []

    def on_batch_start(self, phase, epoch, batch):
        assert torch.equal(batch.date_index.unique(), torch.arange(batch.n_dates))
        self.batches.append((phase, epoch, batch.dates.tolist()))


class KillAfter(TrainCallback):
    """Raises after the ``n``-th epoch's checkpoint was written (a kill between epochs)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, record):
        if record["global_epoch"] == self.n:
            raise KeyboardInterrupt(f"killed after epoch {self.n}")


class OutOfMemoryAbove(TrainCallback):
    """Simulates a device that cannot hold more than ``max_dates`` dates per batch."""

    def __init__(
        self, max_dates: int, error: type[Exception] = torch.cuda.OutOfMemoryError
    ) -> None:
        self.max_dates = max_dates
        self.error = error
        self.raised = 0

    def on_batch_start(self, phase, epoch, batch):
        if batch.n_dates > self.max_dates:
            self.raised += 1
            raise self.error(f"CUDA out of memory: tried a batch of {batch.n_dates} dates")


@pytest.fixture(scope="module")
def trained(panel, splits, model_config, tmp_path_factory):
    """baseline (2 epochs) → gat (2 epochs), uninterrupted, with every batch recorded."""
    run_dir = tmp_path_factory.mktemp("full")
    recorder = BatchRecorder()
    tracker = JsonTracker(run_dir / "metrics.jsonl")
    result = train(
        panel,
        splits,
        model_config,
        config({"baseline": 2, "gat": 2}),
        run_dir,
        tracker,
        callbacks=[recorder],
    )
    return result, run_dir, recorder, tracker


# --------------------------------------------------------------------------- config


def test_training_config_is_strict_and_validated():
    with pytest.raises(ValidationError, match="extra"):
        TrainingConfig(seeds=1)
    with pytest.raises(ValidationError, match="unknown phase"):
        PhaseConfig(name="warmup", epochs=1, lr=1e-3)
    with pytest.raises(ValidationError, match="distinct"):
        TrainingConfig(phases=(PhaseConfig(name="fan", epochs=1, lr=1e-3),) * 2)
    with pytest.raises(ValidationError, match="max_epochs"):
        config({"baseline": 5, "fan": 5}, max_epochs=9)
    cfg = TrainingConfig()
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]
    assert [p.name for p in cfg.phases] == ["baseline", "fan", "gat", "finetune"]
    assert [p.name for p in TrainingConfig.demo().phases] == ["baseline", "fan", "gat", "finetune"]
    assert TrainingConfig.production().total_epochs > TrainingConfig.demo().total_epochs


def test_warmup_cosine_schedule_by_dates():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    schedule = WarmupCosine(opt, peak_lr=2.0, total_dates=100, warmup=0.1)
    assert schedule.factor(0.0) == 0.0
    assert schedule.factor(0.05) == pytest.approx(0.5)
    assert schedule.factor(0.1) == pytest.approx(1.0)
    assert schedule.factor(0.55) == pytest.approx(0.5)
    assert schedule.factor(1.0) == pytest.approx(0.0, abs=1e-12)
    assert schedule.apply(10) == pytest.approx(2.0 * 0.5)  # midpoint of dates 0..10
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    schedule.advance(10)
    restored = WarmupCosine(opt, peak_lr=2.0, total_dates=100, warmup=0.1)
    restored.load_state_dict(schedule.state_dict())
    assert restored.done == 10


# --------------------------------------------------------------------------- training


def test_full_epochs_over_every_training_date(trained, panel, splits):
    result, _, recorder, _ = trained
    n = n_train(panel, splits)
    train_dates = sorted(panel.date_indices(splits.train.start, splits.train.end).tolist())
    assert [(r["phase"], r["epoch"]) for r in result.history] == [
        ("baseline", 1),
        ("baseline", 2),
        ("gat", 1),
        ("gat", 2),
    ]
    orders = []
    for record in result.history:
        batches = [
            b for p, e, b in recorder.batches if (p, e) == (record["phase"], record["epoch"])
        ]
        assert record["n_batches"] == len(batches) == math.ceil(n / 8)
        assert record["dates_seen"] == n
        assert sorted(d for b in batches for d in b) == train_dates  # every date exactly once
        orders.append([d for b in batches for d in b])
        assert isinstance(record["train_loss"], float) and math.isfinite(record["train_loss"])
        assert set(record["val"]) == set(HORIZONS)
    assert len({tuple(o) for o in orders}) == len(orders)  # reshuffled every epoch


def test_planted_signal_is_learned(trained):
    result, *_ = trained
    assert result.best_metric > 0.3
    assert result.final_metrics[1]["rank_ic"] == pytest.approx(result.best_metric, abs=1e-12)
    assert result.final_metrics[1]["ic"] > 0.3
    assert result.final_metrics[5]["rank_ic"] > 0.2


def test_validation_metrics_match_scipy_per_date(trained, panel, splits):
    result, *_ = trained
    val_idx = panel.date_indices(splits.val.start, splits.val.end)
    frame = predict(result.model, panel, val_idx, "val").filter(
        (pl.col("horizon") == 1) & pl.col("target").is_not_null()
    )
    per_date = [
        spearmanr(g["prediction"].to_numpy(), g["target"].to_numpy()).statistic
        for _, g in frame.group_by("date")
    ]
    assert len(per_date) == val_idx.size
    assert result.final_metrics[1]["rank_ic"] == pytest.approx(float(np.mean(per_date)), abs=1e-9)
    assert result.final_metrics[1]["n_dates"] == val_idx.size


def test_checkpoint_files_and_contents(trained, panel, model_config):
    result, run_dir, *_ = trained
    for name in ("best_baseline.pt", "best_gat.pt", "last.pt", "final_metrics.json"):
        assert (run_dir / name).exists(), name
    last = load_checkpoint(run_dir / "last.pt")
    assert {"model", "optimizer", "schedule", "rng", "progress"} <= set(last)
    assert set(last["rng"]) >= {"torch", "numpy", "python"}
    assert last["progress"]["phase_index"] == 1 and last["progress"]["epoch"] == 2
    model, payload = load_model(result.best_checkpoint)
    assert payload["phase"] == result.best_phase and model.phase.name == result.best_phase
    assert payload["stats_hash"] == panel.stats_hash
    assert payload["feature_columns"] == list(panel.feature_columns)
    assert ModelConfig.model_validate(payload["model_config"]) == model_config
    best_epoch = max(
        (r for r in result.history if r["phase"] == result.best_phase),
        key=lambda r: r["val_rank_ic_h1"],
    )
    assert payload["metric"] == best_epoch["val_rank_ic_h1"] == result.best_metric
    for key, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["best_phase"] == result.best_phase and set(final["val"]) == {
        str(h) for h in HORIZONS
    }


def test_phases_switch_what_is_trained(trained, model_config):
    """Baseline bypasses FAN and GAT (their weights stay at init); the graph phase trains both."""
    _, run_dir, *_ = trained
    seed_everything(7)  # the trainer's seed: the same initial weights
    initial = ATFTGATFAN(model_config).state_dict()
    baseline = load_checkpoint(run_dir / "best_baseline.pt")["model"]
    gat = load_checkpoint(run_dir / "best_gat.pt")["model"]

    def changed(state: dict, prefix: str) -> bool:
        keys = [k for k in initial if k.startswith(prefix)]
        assert keys, prefix
        return any(not torch.equal(state[k], initial[k]) for k in keys)

    assert changed(baseline, "selection.") and changed(baseline, "heads.")
    assert not changed(baseline, "fan.") and not changed(baseline, "graph.")
    assert changed(gat, "fan.") and changed(gat, "graph.")
    assert gat["graph.gate_logit"] != 0.0  # the residual gate moved off its init


def test_json_tracker_has_one_entry_per_epoch_with_horizon_metrics(trained):
    result, run_dir, _, tracker = trained
    entries = tracker.records("metrics")
    assert (
        [e["step"] for e in entries] == [r["global_epoch"] for r in result.history] == [1, 2, 3, 4]
    )
    for entry, record in zip(entries, result.history, strict=True):
        metrics = entry["metrics"]
        assert metrics["train_loss"] == pytest.approx(record["train_loss"])
        for h in HORIZONS:
            for name in ("ic", "rank_ic", "icir", "sharpe_gross", "hit_rate"):
                assert metrics[f"val_h{h}_{name}"] == pytest.approx(record["val"][h][name]), (
                    h,
                    name,
                )
    params = tracker.records("params")[0]["params"]
    assert params["training.seed"] == "7" and params["model.hidden"] == "16"
    assert {Path(r["path"]).name for r in tracker.records("artifact")} == {
        "final_metrics.json",
        result.best_checkpoint.name,
    }


def test_same_seed_same_weights_and_other_seed_differs(panel, splits, model_config, tmp_path):
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        cfg = config({"baseline": 1}, seed=seed)
        out = train(
            panel,
            splits,
            model_config,
            cfg,
            tmp_path / name,
            JsonTracker(tmp_path / f"{name}.jsonl"),
        )
        return out.model.state_dict()

    a, b, c = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_early_stopping_ends_a_phase(panel, splits, model_config, tmp_path):
    # A learning rate this small leaves the validation RankIC (almost) unchanged, so no epoch
    # after the first improves by min_delta: the phase stops after 1 + patience epochs.
    cfg = config(
        {"baseline": 10, "fan": 1}, early_stopping_patience=2, early_stopping_min_delta=0.05
    )
    cfg = cfg.model_copy(
        update={"phases": (cfg.phases[0].model_copy(update={"lr": 1e-9}), cfg.phases[1])}
    )
    result = train(panel, splits, model_config, cfg, tmp_path, JsonTracker(tmp_path / "m.jsonl"))
    baseline = [r for r in result.history if r["phase"] == "baseline"]
    assert [r["epoch"] for r in baseline] == [1, 2, 3]
    assert [r["improved"] for r in baseline] == [True, False, False]
    assert [r["early_stopped"] for r in baseline] == [False, False, True]
    assert [r["phase"] for r in result.history][-1] == "fan"  # the next phase still runs


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_resume_after_kill_is_bit_identical(
    trained, panel, splits, model_config, tmp_path, kill_after
):
    """Epoch 1: mid-phase; 2: at the baseline → gat boundary; 3: inside the graph phase."""
    reference, reference_dir, *_ = trained
    cfg = config({"baseline": 2, "gat": 2})
    with pytest.raises(KeyboardInterrupt):
        train(
            panel,
            splits,
            model_config,
            cfg,
            tmp_path,
            JsonTracker(tmp_path / "a.jsonl"),
            callbacks=[KillAfter(kill_after)],
        )
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["global_epoch"] == kill_after
    resumed = train(
        panel, splits, model_config, cfg, tmp_path, JsonTracker(tmp_path / "b.jsonl"), resume=True
    )

    last_a, last_b = (
        load_checkpoint(reference_dir / "last.pt"),
        load_checkpoint(tmp_path / "last.pt"),
    )
    for key, value in last_a["model"].items():
        assert torch.equal(value, last_b["model"][key]), key
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    state_a, state_b = last_a["optimizer"]["state"], last_b["optimizer"]["state"]
    assert all(torch.equal(state_a[i]["exp_avg_sq"], state_b[i]["exp_avg_sq"]) for i in state_a)
    assert resumed.best_phase == reference.best_phase
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in reference.history
    ]
    # identical weights give identical predictions; the metrics over them are Polars group-by
    # aggregations whose summation order is not fixed, so they agree to ~1e-15, not bit-for-bit
    val_idx = panel.date_indices(splits.val.start, splits.val.end)
    assert predict(resumed.model, panel, val_idx, "val").equals(
        predict(reference.model, panel, val_idx, "val")
    )
    assert_same_metrics(resumed.final_metrics, reference.final_metrics)
    for a, b in zip(resumed.history, reference.history, strict=True):
        assert_same_metrics(a["val"], b["val"])


def test_resume_refuses_a_different_configuration(trained, panel, splits, model_config):
    _, run_dir, *_ = trained
    other = config({"baseline": 2, "gat": 2}, seed=8)
    with pytest.raises(ValueError, match="training_config differs"):
        train(
            panel,
            splits,
            model_config,
            other,
            run_dir,
            JsonTracker(run_dir / "x.jsonl"),
            resume=True,
        )


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_the_batch_and_skips_nothing(
    panel, splits, model_config, tmp_path, error
):
    n = n_train(panel, splits)
    oom = OutOfMemoryAbove(max_dates=2, error=error)
    recorder = BatchRecorder()
    result = train(
        panel,
        splits,
        model_config,
        config({"baseline": 2}, dates_per_batch=8),
        tmp_path,
        JsonTracker(tmp_path / "m.jsonl"),
        callbacks=[oom, recorder],
    )
    assert oom.raised == 2  # 8 dates -> 4 -> 2
    assert result.dates_per_batch == 2
    first, second = result.history
    assert first["oom_backoffs"] == 2 and second["oom_backoffs"] == 0
    assert first["dates_seen"] == second["dates_seen"] == n
    assert second["n_batches"] == math.ceil(n / 2)
    train_dates = sorted(panel.date_indices(splits.train.start, splits.train.end).tolist())
    for epoch in (1, 2):  # the recorder runs after the failing callback: it sees accepted batches
        batches = [b for _, e, b in recorder.batches if e == epoch]
        assert max(len(b) for b in batches) == 2
        assert sorted(d for b in batches for d in b) == train_dates


def test_other_runtime_errors_are_not_mistaken_for_oom(panel, splits, model_config, tmp_path):
    class Broken(TrainCallback):
        def on_batch_start(self, phase, epoch, batch):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        train(
            panel,
            splits,
            model_config,
            config({"baseline": 1}),
            tmp_path,
            JsonTracker(tmp_path / "m.jsonl"),
            callbacks=[Broken()],
        )


def test_mismatched_panel_and_model_are_refused(panel, splits, model_config, tmp_path):
    tracker = JsonTracker(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="window"):
        train(
            panel,
            splits,
            model_config.model_copy(update={"window": 6}),
            config({"baseline": 1}),
            tmp_path,
            tracker,
        )
    with pytest.raises(ValueError, match="graph settings"):
        train(
            panel,
            splits,
            model_config.model_copy(update={"graph_k": 5}),
            config({"baseline": 1}),
            tmp_path,
            tracker,
        )
    unit_targets = config({"baseline": 1}, loss=LossConfig(target_transform="normal_score"))
    with pytest.raises(ValueError, match="target_scale is 'returns'"):
        train(panel, splits, model_config, unit_targets, tmp_path, tracker)
    with pytest.raises(ValueError, match="target_transform 'raw'"):
        train(
            panel,
            splits,
            model_config.model_copy(update={"target_scale": "unit"}),
            config({"baseline": 1}),
            tmp_path,
            tracker,
        )
    with pytest.raises(ValueError, match="input_normalization"):
        train(
            panel,
            splits,
            model_config.model_copy(update={"input_normalization": "cross_sectional_z"}),
            config({"baseline": 1}),
            tmp_path,
            tracker,
        )
    late = SplitConfig(
        train=DateWindow(start=panel.dates[0], end=panel.dates[60]),
        val=DateWindow(start=dt.date(2025, 1, 6), end=dt.date(2025, 3, 3)),
        test=DateWindow(start=dt.date(2025, 6, 2), end=dt.date(2025, 7, 1)),
    )
    with pytest.raises(ValueError, match="validation dates"):
        train(panel, late, model_config, config({"baseline": 1}), tmp_path, tracker)


def test_rank_inputs_and_normal_score_targets_learn_the_signal(
    dataset, splits, model_config, tmp_path
):
    """The cross-sectional configuration end to end: the panel, the loss and the checkpoint
    carry it, and the planted signal is still learned; predictions are in score units."""
    unit = model_config.model_copy(
        update={"input_normalization": "cross_sectional_rank", "target_scale": "unit"}
    )
    panel = Panel.from_dataset(
        dataset, make_stats(dataset, train_end=splits.train.end), return_column=RETURN_COLUMN,
        window=WINDOW, graph=graph_config(unit), input_normalization="cross_sectional_rank",
    )
    training = config({"baseline": 2}, loss=LossConfig(target_transform="normal_score"))
    result = train(panel, splits, unit, training, tmp_path, JsonTracker(tmp_path / "m.jsonl"))
    assert result.best_metric > 0.3
    model, payload = load_model(result.best_checkpoint)
    assert model.config == unit
    assert payload["training_config"]["loss"]["target_transform"] == "normal_score"
    test_idx = panel.date_indices(splits.test.start, splits.test.end)
    frame = predict(model, panel, test_idx, "test").filter(pl.col("horizon") == 1)
    per_date = frame.group_by("date").agg(pl.col("prediction").std())["prediction"]
    assert per_date.mean() > 0.1  # score units (~1), not return units (~0.02)


# --------------------------------------------------------------------------- predictions


def test_predictions_follow_the_long_contract(trained, panel):
    result, *_ = trained
    dates = np.arange(panel.n_dates - 30, panel.n_dates)  # the tail: some targets unknown
    frame = predict(result.model, panel, dates, "test")
    assert frame.columns == list(PREDICTION_COLUMNS)
    assert frame.schema["date"] == pl.Date and frame.schema["horizon"] == pl.Int32
    valid = panel.valid.numpy()[dates]
    assert frame.height == int(valid.sum()) * len(HORIZONS)
    assert frame.select("date", "code", "horizon").is_unique().all()
    assert frame["prediction"].null_count() == 0 and frame["prediction"].is_finite().all()
    assert (frame["prediction"] == frame["q50"]).all()
    q = frame.select(QUANTILE_COLUMNS).to_numpy()
    assert (np.diff(q, axis=1) > 0).all()
    assert set(frame["split"]) == {"test"} and set(frame["model"]) == {"atft_gat_fan"}
    assert sorted(frame["horizon"].unique().to_list()) == list(HORIZONS)
    # target null exactly where the panel's target is unknown (never 0)
    day = {d: i for i, d in enumerate(panel.dates)}
    code = {c: i for i, c in enumerate(panel.codes)}
    rows = frame.select("date", "code", "horizon", "target").rows()
    targets = panel.targets.numpy()
    for d, c, h, target in rows:
        expected = targets[day[d], code[c], HORIZONS.index(h)]
        assert (target is None) == bool(np.isnan(expected))
        if target is not None:
            assert target == pytest.approx(float(expected))
    assert frame["target"].null_count() > 0
    assert predict(result.model, panel, [], "test").columns == list(PREDICTION_COLUMNS)


def test_predict_refuses_nan_outputs_and_foreign_quantiles(trained, panel, model_config):
    result, *_ = trained
    broken = ATFTGATFAN(model_config)
    broken.load_state_dict(result.model.state_dict())
    with torch.no_grad():
        broken.heads.projection.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN"):
        predict(broken, panel, [60, 61], "val")
    other = ATFTGATFAN(model_config.model_copy(update={"quantiles": (0.1, 0.5, 0.9)}))
    with pytest.raises(ValueError, match="quantiles"):
        predict(other, panel, [60], "val")


# --------------------------------------------------------------------------- tracking


def test_mlflow_and_json_trackers_record_every_epoch(panel, splits, model_config, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_tracker = MlflowTracker(uri, "atft-test", run_name="unit")
    json_tracker = JsonTracker(tmp_path / "metrics.jsonl")
    tracker = MultiTracker([mlflow_tracker, json_tracker])
    result = train(panel, splits, model_config, config({"baseline": 2}), tmp_path / "run", tracker)
    tracker.finish()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.run_id == mlflow_tracker.run_id
    assert run.data.params["training.seed"] == "7"
    for h in HORIZONS:
        for name in ("ic", "rank_ic", "rank_icir", "sharpe_gross", "hit_rate"):
            history = client.get_metric_history(result.run_id, f"val_h{h}_{name}")
            assert [m.step for m in history] == [1, 2], (h, name)
            assert history[-1].value == pytest.approx(result.history[-1]["val"][h][name])
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"final_metrics.json", result.best_checkpoint.name} <= artifacts
    artifact_root = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_root.is_relative_to(tmp_path)  # local artifacts beside the database
    assert len(json_tracker.records("metrics")) == 2


def test_credentials_never_reach_the_trackers():
    flat = flatten_params(
        {"jquants": {"JQUANTS_API_KEY": "secret-value", "plan": "premium"}, "seed": 1}
    )
    assert flat == {"jquants.plan": "premium", "seed": "1"}


# --------------------------------------------------------------------------- ensembles


class KillAtEpochEnd(TrainCallback):
    """Raises at the ``n``-th epoch end seen, counted across an ensemble's members."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def on_epoch_end(self, record):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt(f"killed at epoch end {self.n}")


@pytest.fixture(scope="module")
def ensemble_run(panel, splits, model_config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ensemble")
    tracker = JsonTracker(run_dir / "metrics.jsonl")
    cfg = config({"baseline": 1, "gat": 1}, ensemble_members=2)
    return train_ensemble(panel, splits, model_config, cfg, run_dir, tracker), run_dir, tracker


def test_ensemble_members_are_seeded_runs_and_it_predicts_their_mean(
    ensemble_run, panel, splits, model_config, tmp_path
):
    result, run_dir, tracker = ensemble_run
    assert result.best_checkpoint == run_dir / "ensemble.pt" and result.best_phase == "ensemble"
    payload = load_checkpoint(result.best_checkpoint)
    assert [m["seed"] for m in payload["members"]] == [7, 8]
    assert [r["member"] for r in result.history] == [0, 0, 1, 1]

    # member 1 is exactly an ordinary run with seed 8 (the member count changes nothing else)
    alone = train(
        panel, splits, model_config, config({"baseline": 1, "gat": 1}, seed=8), tmp_path,
        JsonTracker(tmp_path / "alone.jsonl"),
    )
    loaded, _ = load_model(result.best_checkpoint)
    first, second = loaded.members
    for key, value in alone.model.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not all(torch.equal(v, first.state_dict()[k]) for k, v in second.state_dict().items())

    # the ensemble's forecast is the mean of the members' quantiles, row for row
    val_idx = panel.date_indices(splits.val.start, splits.val.end)
    ours = predict(loaded, panel, val_idx, "val")
    each = [predict(m, panel, val_idx, "val") for m in loaded.members]
    for column in ("prediction", *QUANTILE_COLUMNS):
        mean = (each[0][column].to_numpy() + each[1][column].to_numpy()) / 2
        np.testing.assert_allclose(ours[column].to_numpy(), mean, rtol=1e-6, atol=1e-7)
    assert ours.select("date", "code", "horizon").equals(each[0].select("date", "code", "horizon"))

    # its final metrics are the ensemble's own validation metrics
    assert_same_metrics(result.final_metrics, horizon_metrics(ours))
    written = json.loads((run_dir / "final_metrics.json").read_text())
    assert written["best_checkpoint"] == "ensemble.pt" and len(written["members"]) == 2
    assert written["val"]["1"]["rank_ic"] == pytest.approx(result.final_metrics[1]["rank_ic"])

    # one run, every member tracked under its prefix
    names = set().union(*(e["metrics"] for e in tracker.records("metrics")))
    assert {"member0_train_loss", "member1_train_loss", "ensemble_val_h1_rank_ic"} <= names
    seeds = {
        key: record["params"][key]
        for record in tracker.records("params")
        for key in ("member0.training.seed", "member1.training.seed")
        if key in record["params"]
    }
    assert seeds == {"member0.training.seed": "7", "member1.training.seed": "8"}
    assert {Path(r["path"]).name for r in tracker.records("artifact")} == {
        "final_metrics.json", "ensemble.pt",
    }


def test_an_ensemble_killed_inside_its_second_member_resumes_to_the_same_models(
    ensemble_run, panel, splits, model_config, tmp_path
):
    reference, _, _ = ensemble_run
    cfg = config({"baseline": 1, "gat": 1}, ensemble_members=2)
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(
            panel, splits, model_config, cfg, tmp_path, JsonTracker(tmp_path / "a.jsonl"),
            callbacks=[KillAtEpochEnd(3)],  # after member 1's first epoch
        )
    assert not (tmp_path / "ensemble.pt").exists()
    resumed = train_ensemble(
        panel, splits, model_config, cfg, tmp_path, JsonTracker(tmp_path / "b.jsonl"), resume=True
    )
    for a, b in zip(reference.model.members, resumed.model.members, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    assert_same_metrics(resumed.final_metrics, reference.final_metrics)


def test_a_larger_ensemble_trains_only_its_new_members(
    ensemble_run, panel, splits, model_config, tmp_path
):
    reference, _, _ = ensemble_run
    two = config({"baseline": 1, "gat": 1}, ensemble_members=2)
    train_ensemble(panel, splits, model_config, two, tmp_path, JsonTracker(tmp_path / "a.jsonl"))
    counter = KillAtEpochEnd(0)  # never fires; counts the epochs run
    three = train_ensemble(
        panel, splits, model_config, two.model_copy(update={"ensemble_members": 3}), tmp_path,
        JsonTracker(tmp_path / "b.jsonl"), resume=True, callbacks=[counter],
    )
    assert counter.seen == 2  # the third member's two epochs, nothing else
    assert len(three.model.members) == 3
    assert load_checkpoint(three.best_checkpoint)["training_config"]["ensemble_members"] == 3
    for a, b in zip(reference.model.members, three.model.members[:2], strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


def test_ensemble_size_is_validated():
    for bad in (0, 17):
        with pytest.raises(ValidationError, match="ensemble_members"):
            config({"baseline": 1}, ensemble_members=bad)


def test_each_training_configuration_gets_its_own_run_directory(
    panel, splits, model_config, tmp_path
):
    """A killed run resumes only with the configuration that wrote it; the pipeline's model
    directory therefore carries the configuration, so training with another one starts fresh
    instead of failing (and switching back finds its own checkpoints)."""
    from atft_pipeline.config import PipelineConfig, TrainingSection
    from atft_pipeline.stages.model import model_run_dir
    from atft_pipeline.training.tracking import run_name

    def pipeline(**training) -> PipelineConfig:
        return PipelineConfig(training=TrainingSection(overrides=training))

    base, other = pipeline(), pipeline(ensemble_members=2)
    a = model_run_dir(tmp_path, "cat", "stats", base, 12)
    assert a == model_run_dir(tmp_path, "cat", "stats", pipeline(), 12)
    assert a.parent == (tmp_path / "models" / "atft_gat_fan").resolve()
    assert a != model_run_dir(tmp_path, "cat", "stats", other, 12)
    assert a != model_run_dir(tmp_path, "cat", "stats", base, 13)  # another feature set
    assert a != model_run_dir(tmp_path, "cat2", "stats", base, 12)
    # the directory's configuration hash is the one in the MLflow run name
    dumped = {
        "model": base.model.build(12).model_dump(mode="json"),
        "training": base.training.build().model_dump(mode="json"),
    }
    digest = a.name.rsplit("-", 1)[1]
    assert run_name("m", dumped, splits.train.start, splits.val.end).split("-")[1] == digest

    # why: in one directory, a second configuration cannot resume the first one's run
    first, second = config({"baseline": 1}), config({"baseline": 1}, seed=9)
    train(panel, splits, model_config, first, tmp_path / "one", JsonTracker(tmp_path / "1.jsonl"))
    with pytest.raises(ValueError, match="training_config differs"):
        train(panel, splits, model_config, second, tmp_path / "one",
              JsonTracker(tmp_path / "2.jsonl"), resume=True)
