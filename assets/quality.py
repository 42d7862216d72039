"""``quality_benchmark``: the model-quality benchmark as a job (one op calling the library).

Same code as ``python -m bench quality``: a sandbox market of the configured scale, walk-forward
folds, every model; the Markdown report under ``ATFT_HOME/reports/quality/<run>`` and one
MLflow run (experiment ``quality_benchmark``). Run config (all optional): the fields of
``QualityBenchConfig`` that set the scale.
"""


import datetime as dt

from dagster import AssetObservation, Config, MetadataValue, OpExecutionContext, job, op

from atft_pipeline.stages.scope import PipelineScope

QUALITY_JOB = "quality_benchmark"


class QualityRunConfig(Config):
    n_stocks: int = 300
    start: str = "2021-01-04"
    end: str = "2023-06-30"
    n_folds: int = 3
    seeds: list[int] = [0, 1, 2]
    ablation: str = "staged"  # or "equal_budget"; QualityBenchConfig validates it
    split: str = "test"  # or "val", the split to compare configurations on
    atft: bool = True


def build_quality_job(scope: PipelineScope):
    @op(name="quality_benchmark_report")
    def quality_op(context: OpExecutionContext, config: QualityRunConfig) -> None:
        from atft_pipeline.evaluation.quality import (
            QualityBenchConfig,
            log_to_mlflow,
            render_markdown,
            run_quality_benchmark,
        )
        from atft_pipeline.storage import atomic_write_text

        bench = QualityBenchConfig(
            n_stocks=config.n_stocks, start=dt.date.fromisoformat(config.start),
            end=dt.date.fromisoformat(config.end), n_folds=config.n_folds,
            seeds=tuple(config.seeds), atft=config.atft, ablation=config.ablation,
            split=config.split,
        )
        out = scope.settings.home.resolve() / "reports" / "quality" / context.run_id[:8]
        result = run_quality_benchmark(bench, scope.config, out / "runs", progress=context.log.info)
        markdown = render_markdown(result, bench)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "quality.md", markdown)
        run_id = log_to_mlflow(result, bench, scope.settings.mlflow_uri, out / "quality.md")
        # An observation, not an asset: the benchmark's report is shown in the UI's run view.
        context.log_event(
            AssetObservation(
                asset_key=QUALITY_JOB,
                metadata={
                    "report": MetadataValue.md(markdown),
                    "path": str(out),
                    "mlflow_run_id": run_id,
                },
            )
        )

    @job(name=QUALITY_JOB, description="Model-quality benchmark on a sandbox market: oracle, "
         "rule, ridge, LightGBM and the ATFT-GAT-FAN ablations on walk-forward folds.")
    def quality_job():
        quality_op()

    return quality_job
