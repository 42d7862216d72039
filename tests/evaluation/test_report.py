"""The evaluation report: table = metrics.evaluate, valid PNGs, refusals of empty / NaN input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from atft_pipeline.evaluation import metrics
from atft_pipeline.evaluation.report import ORACLE_FRACTION, build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = {"atft_gat_fan": 0.3, "lightgbm": 0.2, "rule": 0.1, "oracle": 0.8}


@pytest.fixture(scope="module")
def predictions() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n_dates, n_stocks = 50, 40
    days = [dt.date(2024, 1, 4) + dt.timedelta(days=i) for i in range(n_dates)]
    frames = []
    for h in (1, 5):
        target = rng.normal(0, 0.02 * np.sqrt(h), (n_dates, n_stocks))
        for model, strength in MODELS.items():
            prediction = strength * target + rng.normal(0, 0.02 * np.sqrt(h), target.shape)
            frames.append(
                pl.DataFrame(
                    {
                        "date": pl.Series(
                            [d for d in days for _ in range(n_stocks)], dtype=pl.Date
                        ),
                        "code": [f"{1000 + i:04d}0" for _ in days for i in range(n_stocks)],
                        "horizon": pl.Series([h] * target.size, dtype=pl.Int32),
                        "prediction": prediction.ravel(),
                        **{q: prediction.ravel() for q in metrics.QUANTILE_COLUMNS},
                        "target": target.ravel(),
                        "split": [
                            "val" if i < 25 else "test"
                            for i in range(n_dates)
                            for _ in range(n_stocks)
                        ],
                        "model": [model] * target.size,
                    }
                )
            )
    return pl.concat(frames).select(metrics.PREDICTION_COLUMNS)


@pytest.mark.slow
def test_report_table_equals_evaluate_and_writes_files(
    predictions: pl.DataFrame, tmp_path: Path
) -> None:
    result = build_report(
        predictions, tmp_path / "report", "Sandbox evaluation", oracle_rank_ic={1: 0.5, 5: 0.4}
    )
    expected = metrics.evaluate(predictions, cost_bp=10.0)
    assert result.table.height == 4 * 2 * 2
    table = result.table.drop(ORACLE_FRACTION)
    assert table.columns == expected.columns
    assert table.select(metrics.SERIES_KEYS).equals(expected.select(metrics.SERIES_KEYS))
    assert table["jpx_score"].to_list() == expected["jpx_score"].to_list() == [None] * 16  # 40 stocks
    for column in metrics.METRIC_COLUMNS:
        if column != "jpx_score":
            assert table[column].to_list() == pytest.approx(expected[column].to_list(), rel=1e-12), column
    fraction = result.table.select(
        (pl.col("rank_ic") / pl.col("horizon").replace_strict({1: 0.5, 5: 0.4}))
        - pl.col(ORACLE_FRACTION)
    )
    assert fraction.to_series().abs().max() < 1e-12
    # the better planted model ranks above the weaker one
    test_h1 = result.table.filter((pl.col("split") == "test") & (pl.col("horizon") == 1))
    by_model = dict(zip(test_h1["model"], test_h1["rank_ic"], strict=True))
    assert by_model["oracle"] > by_model["atft_gat_fan"] > by_model["rule"]

    assert set(result.plots) == {"cumulative_long_short", "daily_rank_ic", "decile_returns"}
    for path in result.plots.values():
        assert path.parent == tmp_path / "report"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert result.path.read_text() == result.markdown
    assert not list((tmp_path / "report").glob(".*"))  # no temporary files left behind
    md = result.markdown
    assert md.startswith("# Sandbox evaluation")
    assert "## Metrics — split `val`" in md and "## Metrics — split `test`" in md
    assert md.index("## Health") < md.index("## Metrics")  # health leads the report
    assert "| test | lightgbm | 5 | 25 / 25 | 100.0% | 0 (0.0%) | ok |" in md
    for name in result.plots.values():
        assert f"]({name.name})" in md
    # a value from the table appears, formatted, in the model's row
    row = expected.filter(
        (pl.col("model") == "lightgbm") & (pl.col("split") == "test") & (pl.col("horizon") == 5)
    ).row(0, named=True)
    line = next(
        line
        for line in md.splitlines()[md.splitlines().index("## Metrics — split `test`") :]
        if line.startswith("| lightgbm | 5 |")
    )
    assert f"{row['rank_ic']:.4f} ± {row['rank_ic_se']:.4f}" in line
    assert f"{row['sharpe_net']:.2f}" in line


@pytest.mark.slow
def test_oracle_model_gives_the_fraction_without_reported_values(
    predictions: pl.DataFrame, tmp_path: Path
) -> None:
    table = build_report(predictions, tmp_path, "r", None).table
    oracle = table.filter(pl.col("model") == "oracle")
    assert oracle[ORACLE_FRACTION].to_list() == pytest.approx([1.0] * oracle.height)
    row = table.filter(
        (pl.col("model") == "rule") & (pl.col("split") == "val") & (pl.col("horizon") == 1)
    )
    ref = table.filter(
        (pl.col("model") == "oracle") & (pl.col("split") == "val") & (pl.col("horizon") == 1)
    )
    assert row[ORACLE_FRACTION][0] == pytest.approx(row["rank_ic"][0] / ref["rank_ic"][0])
    without = build_report(
        predictions.filter(pl.col("model") != "oracle"), tmp_path / "b", "r", None
    )
    assert ORACLE_FRACTION not in without.table.columns


def test_report_refuses_empty_predictions(predictions: pl.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        build_report(predictions.clear(), tmp_path, "r", None)
    assert not (tmp_path / "report.md").exists()


def test_report_refuses_nan_predictions_naming_the_model(
    predictions: pl.DataFrame, tmp_path: Path
) -> None:
    broken = predictions.with_columns(
        pl.when((pl.col("model") == "lightgbm") & (pl.col("code") == "10050"))
        .then(float("nan"))
        .otherwise(pl.col("prediction"))
        .alias("prediction")
    )
    with pytest.raises(ValueError, match=r"column 'prediction' of model\(s\) \['lightgbm'\]"):
        build_report(broken, tmp_path, "r", None)
    with pytest.raises(ValueError, match=r"column 'q95' of model\(s\) \['rule'\]"):
        build_report(
            predictions.with_columns(
                pl.when(pl.col("model") == "rule")
                .then(float("inf"))
                .otherwise(pl.col("q95"))
                .alias("q95")
            ),
            tmp_path,
            "r",
            None,
        )
    with pytest.raises(
        ValueError, match=r"model\(s\) \['rule'\] have no non-null value in column 'prediction'"
    ):
        build_report(
            predictions.with_columns(
                pl.when(pl.col("model") == "rule")
                .then(None)
                .otherwise(pl.col("prediction"))
                .alias("prediction")
            ),
            tmp_path,
            "r",
            None,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("first", "last"),
    [("2023-08-01", "2023-12-29"), ("2023-11-01", "2023-12-29"), ("2021-01-04", "2023-12-29")],
)
def test_date_axis_labels_name_the_data_years_only(first: str, last: str) -> None:
    """A 2023 window once read "2024-Jan" under its axis (offset text from a tick past the data)."""
    import datetime as dt

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from atft_pipeline.evaluation.report import _date_axis

    days = pl.date_range(dt.date.fromisoformat(first), dt.date.fromisoformat(last), eager=True)
    fig = Figure()
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(days.to_list(), range(days.len()))
    _date_axis(ax)
    canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    years = {str(y) for y in range(days[0].year, days[-1].year + 1)}
    assert labels and all(label[:4] in years for label in labels), labels
    assert ax.xaxis.get_major_formatter().get_offset() == ""


def test_report_markdown_for_the_ui_carries_its_images_inline(tmp_path: Path) -> None:
    """report.md links its plots relatively (they sit beside it); the UI's copy has no files
    beside it, so every image there is a data URI of the very PNG written to disk."""
    import base64
    import re

    from atft_pipeline.evaluation.report import inline_images

    plots = {}
    for name in ("daily_rank_ic", "decile_returns"):
        plots[name] = tmp_path / f"{name}.png"
        plots[name].write_bytes(PNG_SIGNATURE + name.encode())
    markdown = "# Report\n\n" + "\n".join(f"![{n}]({p.name})" for n, p in plots.items()) + "\n"
    inlined = inline_images(markdown, plots)
    links = re.findall(r"!\[(\w+)\]\(([^)]*)\)", inlined)
    assert [name for name, _ in links] == list(plots)
    for name, target in links:
        assert target.startswith("data:image/png;base64,"), target
        assert base64.b64decode(target.split(",", 1)[1]) == plots[name].read_bytes()
    assert inlined.startswith("# Report\n\n")
