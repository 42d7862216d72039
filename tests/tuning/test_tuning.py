"""Hyperparameter search: the search file is checked at load, trials are selected on
validation only (perturbing the test window changes nothing), a killed study resumes, and
the best configuration is a file ``atft run --config`` accepts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import optuna
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from atft_pipeline.config import ConfigError, PipelineConfig, load_config
from atft_pipeline.tuning import SearchSpace, apply_values, load_search_space, run_study, selection_frame
from atft_pipeline.tuning.study import TUNING_EXPERIMENT
from tests.helpers import feature_columns, make_dataset, make_stats

BASE = PipelineConfig.model_validate(
    {
        "splits": {"val_fraction": 0.2, "test_fraction": 0.15},
        "model": {
            "overrides": {
                "window": 10, "hidden": 16, "attn_heads": 2, "gat_heads": [2, 2], "fan_top_k": 1,
                "graph_window": 20, "graph_k": 4,
                # as the demo configuration: the trials' panels must be built the model's way
                "input_normalization": "cross_sectional_rank",
            }
        },
        "training": {
            "overrides": {
                "seed": 3, "device": "cpu", "dates_per_batch": 8, "eval_dates_per_batch": 16,
                "phases": [{"name": "baseline", "epochs": 1, "lr": 1e-3},
                           {"name": "fan", "epochs": 1, "lr": 1e-3}],
            }
        },
    }
)
SPACE = {
    "study": "test-study",
    "trials": 3,
    "seed": 5,
    "pruner": {"startup_trials": 2, "warmup_epochs": 1},
    "parameters": [
        {"key": "training.lr_scale", "type": "float", "low": 0.5, "high": 8.0, "log": True},
        {"key": "model.overrides.dropout", "type": "float", "low": 0.0, "high": 0.3},
        {"key": "training.overrides.loss.rank_ic_weight", "type": "categorical", "choices": [0.02, 0.2]},
    ],
}


def test_values_land_on_their_keys_and_lr_scale_multiplies_every_phase():
    config = apply_values(BASE, {"training.lr_scale": 4.0, "training.overrides.loss.rank_ic_weight": 0.2,
                                 "model.overrides.hidden": 24})
    training = config.training.build()
    assert [p.lr for p in training.phases] == [4e-3, 4e-3]
    assert training.loss.rank_ic_weight == 0.2 and training.loss.ic_weight == 0.01  # rest kept
    assert config.model.build(5).hidden == 24
    assert BASE.training.build().phases[0].lr == 1e-3  # the base is not modified


@pytest.mark.parametrize(
    "parameter, message",
    [
        ({"key": "model.widht", "type": "int", "low": 1, "high": 2}, "no 'widht'"),
        ({"key": "model.overrides.widht", "type": "int", "low": 1, "high": 2}, "widht"),
        ({"key": "training.lr_scale", "type": "categorical", "low": 1, "high": 2}, "takes choices"),
        ({"key": "training.lr_scale", "type": "float", "low": 0, "high": 2, "log": True}, "0 < low"),
    ],
)
def test_a_bad_search_file_fails_at_load_naming_the_key(tmp_path, parameter, message):
    import yaml

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "parameters": [parameter]}))
    with pytest.raises(ConfigError, match=message):
        load_search_space(path, BASE)


def test_unknown_study_setting_is_an_error(tmp_path):
    import yaml

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "trails": 3}))
    with pytest.raises(ConfigError, match="trails"):
        load_search_space(path, BASE)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow database for the module's studies (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def data():
    dataset = make_dataset(n_stocks=16, n_dates=110, seed=4)
    days = sorted(dataset["date"].unique().to_list())
    splits = BASE.splits.resolve(days)
    stats = make_stats(dataset, train_end=splits.train.end)
    return dataset, days, splits, stats


def _study(tmp_path, tracking, dataset, days, stats, space=SPACE, name="a"):
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    return run_study(
        dataset, feature_columns(dataset), stats, days, BASE, SearchSpace.model_validate(space),
        storage_url=f"sqlite:///{home / 'optuna.db'}", out_dir=home / "out", tracking_uri=tracking,
    )


def _perturb_test_window(dataset: pl.DataFrame, test_start: dt.date) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    in_test = pl.col("date") >= test_start
    noise = pl.Series(rng.standard_normal(dataset.height).astype(np.float32))
    return dataset.with_columns(
        *(pl.when(in_test).then(noise).otherwise(pl.col(c)).alias(c) for c in dataset.columns if c.startswith("target_")),
        pl.when(in_test).then(-pl.col("signal")).otherwise(pl.col("signal")).alias("signal"),
    )


@pytest.mark.slow
def test_selection_never_sees_the_test_window(tmp_path, tracking, data):
    dataset, days, splits, stats = data
    assert selection_frame(dataset, splits)["date"].max() == splits.val.end
    first = _study(tmp_path, tracking, dataset, days, stats, name="clean")
    perturbed = _perturb_test_window(dataset, splits.test.start)
    assert not perturbed.filter(pl.col("date") >= splits.test.start).equals(
        dataset.filter(pl.col("date") >= splits.test.start)
    )
    second = _study(tmp_path, tracking, perturbed, days, stats, name="perturbed")
    assert first.best_params == second.best_params
    assert first.trials.equals(second.trials)
    assert first.complete + first.pruned == 3 and first.failed == 0
    assert np.isfinite(first.best_value)
    # the best configuration is a file `atft run --config` accepts, with the best values
    loaded = load_config(first.best_config)
    assert loaded == apply_values(BASE, first.best_params)
    loaded.check_builds()
    # one parent MLflow run, one child per trial
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(TUNING_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.parent_run_id]
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}
    states = sorted(r.data.tags["optuna_state"] for r in children)
    assert states == sorted(first.trials["state"].to_list())
    parent = client.get_run(first.parent_run_id)
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.metrics["best_val_rank_ic_1d"] == pytest.approx(first.best_value)


@pytest.mark.slow
def test_a_killed_study_resumes_and_retries_the_interrupted_trial(tmp_path, tracking, data):
    dataset, days, _, stats = data
    storage = f"sqlite:///{tmp_path / 'k' / 'optuna.db'}"
    (tmp_path / "k").mkdir()
    two = {**SPACE, "trials": 2}
    _study(tmp_path, tracking, dataset, days, stats, space=two, name="k")
    # what a kill in the middle of the third trial leaves: a RUNNING trial with its values
    study = optuna.load_study(study_name=SPACE["study"], storage=storage)
    interrupted = study.ask({p["key"]: _distribution(p) for p in SPACE["parameters"]})
    assert interrupted.number == 2
    values = dict(interrupted.params)
    resumed = _study(tmp_path, tracking, dataset, days, stats, name="k")
    trials = optuna.load_study(study_name=SPACE["study"], storage=storage).get_trials()
    states = [t.state.name for t in trials]
    assert states[2] == "FAIL" and len(trials) == 4  # two kept, one failed, one retried
    assert trials[3].params == values  # the interrupted values ran again
    assert resumed.complete + resumed.pruned == 3 and resumed.failed == 1
    # a finished study runs nothing more
    again = _study(tmp_path, tracking, dataset, days, stats, name="k")
    assert again.trials.height == 4


def _distribution(parameter: dict):
    if parameter["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(parameter["choices"])
    return optuna.distributions.FloatDistribution(
        parameter["low"], parameter["high"], log=parameter.get("log", False)
    )


def test_a_key_that_moves_the_test_window_is_refused(data):
    from atft_pipeline.tuning.study import trial_splits

    _, days, splits, _ = data
    moved = apply_values(BASE, {"splits.test_fraction": 0.3})
    with pytest.raises(ConfigError, match="validation/test windows"):
        trial_splits(moved, days, splits)
    shorter = apply_values(BASE, {"splits.max_train_days": 40})
    assert trial_splits(shorter, days, splits).val == splits.val
