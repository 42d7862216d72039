"""The model-quality benchmark: signal components, folds and tables (baselines only: fast)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from atft_pipeline.config import EvaluationSection, PipelineConfig
from atft_pipeline.evaluation.quality import QualityBenchConfig, render_markdown, run_quality_benchmark
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.market.oracle import signal_components
from atft_pipeline.sandbox.market.signals import SIGNALS

SCALE = dict(n_stocks=40, start=dt.date(2021, 1, 4), end=dt.date(2022, 3, 31))


@pytest.fixture(scope="module")
def market():
    return generate_market(MarketConfig(seed=3, **SCALE))


def test_one_day_components_add_up_to_the_oracle(market):
    hidden = market.hidden
    parts = signal_components(market.tables, hidden.params, hidden.universe.codes, hidden.timeline, (1, 5))
    joined = market.oracle.join(parts, on=["date", "code"], how="inner")
    assert joined.height == market.oracle.height
    total = joined.select(pl.sum_horizontal(f"{s}_1d" for s in SIGNALS)).to_series().to_numpy()
    np.testing.assert_allclose(total, joined["oracle_1d"].to_numpy(), rtol=1e-9, atol=1e-12)
    # 5 days: the sum of the first-order terms is the oracle up to compounding (tiny drifts)
    total5 = joined.select(pl.sum_horizontal(f"{s}_5d" for s in SIGNALS)).to_series().to_numpy()
    assert np.corrcoef(total5, joined["oracle_5d"].to_numpy())[0, 1] > 0.999
    assert np.abs(total5 - joined["oracle_5d"].to_numpy()).max() < 2e-3
    assert all(joined[f"{s}_1d"].std() > 0 for s in SIGNALS)


@pytest.mark.slow
def test_baseline_benchmark_tables(tmp_path):
    bench = QualityBenchConfig(
        **SCALE, market_seed=3, warmup_days=60, n_folds=2, train_days=60, val_days=20,
        test_days=20, atft=False,
    )
    fast = EvaluationSection(
        lightgbm=dict(num_threads=1, num_boost_round=20, min_boost_round=5, learning_rate=0.2)
    )
    result = run_quality_benchmark(
        bench, PipelineConfig(evaluation=fast), tmp_path, progress=lambda _: None
    )
    models = {"oracle", "rule", "ridge", "lightgbm"}
    assert set(result.table["model"]) == models
    assert result.table.height == len(models) * 2 * 2  # models × folds × horizons
    oracle = result.table.filter(pl.col("model") == "oracle")
    assert oracle["share_of_oracle"].to_list() == pytest.approx([1.0] * 4)
    assert (result.table["rank_ic_se"] > 0).all()
    # the oracle correlates with its own components; the rule's reversal leg with reversal
    sig = result.signals.filter(pl.col("horizon") == 1)
    oracle_rev = sig.filter((pl.col("model") == "oracle") & (pl.col("signal") == "reversal"))
    rule_rev = sig.filter((pl.col("model") == "rule") & (pl.col("signal") == "reversal"))
    assert (oracle_rev["corr"] > 0.2).all() and (rule_rev["corr"] > 0.1).all()
    assert set(result.summary["folds"]) == {2}
    markdown = render_markdown(result, bench)
    assert "| oracle | 1 |" in markdown and "reversal" in markdown and "Test split" in markdown
    # the validation split's tables: the same models on other dates
    on_val = bench.model_copy(update={"split": "val"})
    val = run_quality_benchmark(on_val, PipelineConfig(evaluation=fast), tmp_path / "val", progress=lambda _: None)
    assert set(val.table["model"]) == models
    for model in ("oracle", "rule"):
        ics = [r.table.filter(pl.col("model") == model).sort("fold", "horizon")["rank_ic"] for r in (result, val)]
        assert not np.allclose(ics[0].to_numpy(), ics[1].to_numpy())
    assert "Validation split" in render_markdown(val, on_val)


def test_equal_budget_schedules_differ_only_in_the_path():
    from atft_pipeline.evaluation.quality import equal_budget_schedules
    from atft_pipeline.training.config import TrainingConfig

    staged = TrainingConfig.demo(seed=5)  # four phases of one epoch at different rates
    schedules = equal_budget_schedules(staged)
    assert list(schedules) == ["baseline", "fan", "gat"]
    first = staged.phases[0]
    for variant, schedule in schedules.items():
        (phase,) = schedule.phases
        assert phase.name == variant and phase.epochs == staged.total_epochs == 4
        assert phase.model_dump(exclude={"name", "epochs"}) == first.model_dump(exclude={"name", "epochs"})
        assert schedule.model_dump(exclude={"phases"}) == staged.model_dump(exclude={"phases"})


def test_seed_ensemble_averages_per_date_z_scores_of_the_full_model():
    from scipy.stats import zscore

    from atft_pipeline.evaluation.quality import seed_ensemble

    rng = np.random.default_rng(0)
    dates = [dt.date(2023, 1, 4), dt.date(2023, 1, 5)]
    codes = [f"{1000 + i}" for i in range(6)]
    rows = []
    raw = {seed: rng.normal(size=(2, 6)) for seed in (0, 1)}
    for seed in (0, 1):
        for d, day in enumerate(dates):
            for c, code in enumerate(codes):
                # seed 1's scale and level differ per date: the z-scores take both out
                value = raw[seed][d, c] * (10.0 if seed else 1.0) + 3.0 * d
                rows.append((seed, "atft_full", "test", day, code, 1, value, 0.01 * c))
                rows.append((seed, "atft_fan", "test", day, code, 1, 99.0, 0.01 * c))
    frame = pl.DataFrame(
        rows, schema=["seed", "model", "split", "date", "code", "horizon", "prediction", "target"],
        orient="row",
    )
    # a row only one seed predicted is left out
    only_seed0 = (pl.col("seed") == 1) & (pl.col("code") == "1005") & (pl.col("date") == dates[1])
    frame = frame.filter(~only_seed0)
    out = seed_ensemble(frame, "atft_full").sort("date", "code")
    assert set(out["model"]) == {"atft_ensemble"} and out.height == 11
    expected = (zscore(raw[0], axis=1, ddof=1) + zscore(raw[1], axis=1, ddof=1)) / 2
    day0 = out.filter(pl.col("date") == dates[0])
    np.testing.assert_allclose(day0["prediction"].to_numpy(), expected[0], rtol=1e-12)
    np.testing.assert_allclose(day0["target"].to_numpy(), 0.01 * np.arange(6))
    day1 = out.filter(pl.col("date") == dates[1])
    assert day1["code"].to_list() == codes[:5]


def test_the_ensemble_averages_the_schedules_last_phase():
    from atft_pipeline.evaluation.quality import ensembled_model, seed_ensemble
    from atft_pipeline.training.config import TrainingConfig

    staged = TrainingConfig.demo()
    assert ensembled_model(staged, "staged") == "atft_full"
    without_finetune = staged.model_copy(update={"phases": staged.phases[:3]})
    assert ensembled_model(without_finetune, "staged") == "atft_gat"
    assert ensembled_model(staged, "equal_budget") == "atft_gat"
    frame = pl.DataFrame(
        {"seed": [0, 1], "model": ["atft_gat"] * 2, "split": ["test"] * 2,
         "date": [dt.date(2023, 1, 4)] * 2, "code": ["1000"] * 2, "horizon": [1, 1],
         "prediction": [0.1, 0.2], "target": [0.0, 0.0]}
    )
    with pytest.raises(ValueError, match="no 'atft_full' predictions to ensemble.*atft_gat"):
        seed_ensemble(frame, "atft_full")
