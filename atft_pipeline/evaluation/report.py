"""The evaluation report: health first, then one metrics table comparing every model,
markdown and PNG plots.

The report opens with what decides whether the numbers can be trusted: per model, split and
horizon the dates scored over the dates of the split (coverage), the dates on which the model's
predictions were all equal (scored 0) and whether that passes the health check, the number of
stocks per date, and — when given — the codes left out of the universe and the targets that
exit at a last traded close. Every metric then carries its standard error.

The table is exactly ``metrics.evaluate`` plus, when the sandbox reports the oracle's RankIC or
the predictions hold an ``oracle`` model, each row's fraction of that RankIC; the plots show the book's cumulative return, the daily RankIC and the
decile returns of the test split (the validation split when there is no test data) at the
shortest horizon. Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, so
nothing touches pyplot's global state. Every file is written to a temporary sibling and
renamed into place; ``report.md`` is written last, so a report that exists is complete.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from atft_pipeline.evaluation import metrics
from atft_pipeline.evaluation.health import MAX_CONSTANT_SHARE, prediction_health

ORACLE_MODEL = "oracle"
MODEL_ORDER = ("atft_gat_fan", "lightgbm", "ridge", "rule", ORACLE_MODEL)
SPLIT_ORDER = ("val", "test", "live")
ROLLING_IC_WINDOW = 20
REPORT_FILE = "report.md"
ORACLE_FRACTION = "rank_ic_vs_oracle"
PLOT_FILES = {
    "cumulative_long_short": "cumulative_long_short.png",
    "daily_rank_ic": "daily_rank_ic.png",
    "decile_returns": "decile_returns.png",
}
# Metric columns of the markdown table; "value ± se" where the metric has a standard error.
_TABLE_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("coverage", "coverage", None),
    ("constant_dates", "const. dates", None),
    ("ic", "IC ± SE", "ic_se"),
    ("rank_ic", "RankIC ± SE", "rank_ic_se"),
    ("rank_icir", "RankICIR", None),
    ("long_short", "long-short ± SE", "long_short_se"),
    ("sharpe_gross", "Sharpe gross", None),
    ("sharpe_net", "Sharpe net", None),
    ("jpx_score", "JPX score (1d)", None),
    ("jpx_scaled_score", "JPX scaled", None),
    ("hit_rate", "hit rate", None),
    ("top_decile_precision", "top-decile prec.", None),
    ("n_rows", "rows", None),
    (ORACLE_FRACTION, "RankIC / oracle", None),
)
_TWO_DECIMALS = {"icir", "rank_icir", "sharpe_gross", "sharpe_net", "jpx_score", "jpx_scaled_score",
                 "coverage", ORACLE_FRACTION}


@dataclass(frozen=True)
class ReportResult:
    markdown: str
    table: pl.DataFrame
    plots: dict[str, Path]
    path: Path  # report.md


def _ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    known = [v for v in order if v in values]
    return known + sorted(v for v in values if v not in order)


def _check(predictions: pl.DataFrame) -> None:
    """Refuse what must not become a report: no rows, NaN/inf values, a model without output."""
    if predictions.height == 0:
        raise ValueError("predictions are empty: there is nothing to report on")
    for column in ("model", "split"):
        if column not in predictions.columns:
            raise ValueError(f"predictions lack column {column!r}; have {predictions.columns}")
    metrics.validate_predictions(predictions)
    counts = predictions.group_by("model").agg(pl.col("prediction").is_not_null().sum().alias("n"))
    empty = sorted(counts.filter(pl.col("n") == 0)["model"].to_list())
    if empty:
        raise ValueError(f"model(s) {empty} have no non-null value in column 'prediction'")


def _plot_slice(predictions: pl.DataFrame) -> tuple[str, int, pl.DataFrame]:
    """The split (test, else the first with known targets) and shortest horizon to plot."""
    known = predictions.filter(pl.col("target").is_not_null() & pl.col("prediction").is_not_null())
    if known.height == 0:
        raise ValueError("predictions have no row with both a prediction and a known target")
    splits = _ordered(known["split"].unique().to_list(), ("test", "val"))
    split = splits[0]
    horizon = known.filter(pl.col("split") == split)["horizon"].min()
    return split, horizon, known.filter((pl.col("split") == split) & (pl.col("horizon") == horizon))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _write_atomic(path, buffer.getvalue())
    return path


def _image_link(name: str, target: str) -> str:
    return f"![{name}]({target})"


def inline_images(markdown: str, plots: dict[str, Path]) -> str:
    """``markdown`` with each plot's relative link (right beside report.md on disk) replaced by
    a data URI: the UI renders metadata markdown without the files next to it."""
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode()
        markdown = markdown.replace(
            _image_link(name, path.name), _image_link(name, f"data:image/png;base64,{data}")
        )
    return markdown


def _colors(models: Sequence[str]) -> dict[str, str]:
    return {m: f"C{i % 10}" for i, m in enumerate(models)}


# Every tick names its year: the concise formatter's offset text is taken from the last tick,
# which can lie past the data (a 2023 window read "2024-Jan" under its axis).
_TICK_FORMATS = ["%Y", "%Y-%m", "%Y-%m-%d", "%m-%d %H:%M", "%H:%M", "%H:%M:%S"]


def _date_axis(ax) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        ConciseDateFormatter(
            locator, formats=_TICK_FORMATS, zero_formats=_TICK_FORMATS, show_offset=False
        )
    )
    ax.margins(x=0)


def _plot_cumulative(book: pl.DataFrame, models: Sequence[str], cost_bp: float, label: str, path: Path) -> Path:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    colors = _colors(models)
    for model in models:
        rows = book.filter(pl.col("model") == model).sort("date")
        if rows.height == 0:
            continue
        net = metrics.net_returns(pl.col("spread"), pl.col("turnover"), cost_bp)
        curves = rows.select("date", pl.col("spread").cum_sum().alias("gross"), net.cum_sum().alias("net"))
        ax.plot(curves["date"].to_list(), curves["gross"].to_list(), color=colors[model], label=f"{model} gross")
        ax.plot(curves["date"].to_list(), curves["net"].to_list(), color=colors[model], linestyle="--",
                label=f"{model} net {cost_bp:g} bp")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(f"Cumulative top-minus-bottom decile return ({label})")
    ax.set_ylabel("cumulative return (sum of daily spreads)")
    ax.legend(fontsize=8, ncol=2)
    _date_axis(ax)
    return _save(fig, path)


def _plot_rank_ic(daily: pl.DataFrame, models: Sequence[str], label: str, path: Path) -> Path:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    colors = _colors(models)
    for model in models:
        rows = daily.filter(pl.col("model") == model).sort("date")
        if rows.height == 0:
            continue
        rolling = rows["ic"].rolling_mean(ROLLING_IC_WINDOW, min_samples=max(1, ROLLING_IC_WINDOW // 2))
        dates = rows["date"].to_list()
        ax.plot(dates, rows["ic"].to_list(), color=colors[model], alpha=0.25, linewidth=0.8)
        ax.plot(dates, rolling.to_list(), color=colors[model], linewidth=1.8,
                label=f"{model} ({ROLLING_IC_WINDOW}-day mean)")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(f"Daily RankIC ({label}); thin: each date, thick: rolling mean")
    ax.set_ylabel("Spearman(prediction, target) per date")
    ax.legend(fontsize=8)
    _date_axis(ax)
    return _save(fig, path)


def _plot_deciles(deciles: pl.DataFrame, models: Sequence[str], label: str, path: Path) -> Path:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    colors = _colors(models)
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        rows = deciles.filter(pl.col("model") == model).sort("decile")
        x = [d + (i - (len(models) - 1) / 2) * width for d in rows["decile"].to_list()]
        ax.bar(x, rows["mean_return"].to_list(), width=width, color=colors[model], label=model)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(sorted(deciles["decile"].unique().to_list()))
    ax.set_xlabel("prediction decile (1 = lowest)")
    ax.set_ylabel("mean target (per date, then over dates)")
    ax.set_title(f"Mean return by prediction decile ({label})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _with_oracle_fraction(table: pl.DataFrame, oracle_rank_ic: Mapping[int, float] | None) -> pl.DataFrame:
    """Add each row's RankIC as a share of the oracle's at the same horizon.

    The oracle's RankIC is the sandbox's reported value per horizon when given; otherwise,
    when the predictions hold an ``oracle`` model, its RankIC on the same split and horizon.
    """
    if oracle_rank_ic is not None:
        achievable = pl.col("horizon").replace_strict(
            {int(h): float(v) for h, v in oracle_rank_ic.items()}, default=None, return_dtype=pl.Float64
        )
    elif ORACLE_MODEL in table["model"].to_list():
        oracle = table.filter(pl.col("model") == ORACLE_MODEL).select(
            "split", "horizon", pl.col("rank_ic").alias("_oracle")
        )
        table = table.join(oracle, on=["split", "horizon"], how="left", maintain_order="left")
        achievable = pl.col("_oracle")
    else:
        return table
    return table.with_columns(
        pl.when(achievable != 0).then(pl.col("rank_ic") / achievable).alias(ORACLE_FRACTION)
    ).drop("_oracle", strict=False)


def _cell(column: str, value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}" if column in _TWO_DECIMALS else f"{value:.4f}"
    return str(value)


def _markdown_table(rows: pl.DataFrame) -> list[str]:
    columns = [c for c in _TABLE_COLUMNS if c[0] in rows.columns]
    lines = [
        "| model | h | " + " | ".join(header for _, header, _ in columns) + " |",
        "|---|---:|" + "|".join("---:" for _ in columns) + "|",
    ]
    for row in rows.iter_rows(named=True):
        cells = []
        for column, _, se in columns:
            cell = _cell(column, row[column])
            if se is not None and row[column] is not None and row[se] is not None:
                cell += f" ± {row[se]:.4f}"
            cells.append(cell)
        lines.append(f"| {row['model']} | {row['horizon']} | " + " | ".join(cells) + " |")
    return lines


def _health_lines(predictions: pl.DataFrame, models: Sequence[str]) -> list[str]:
    """Coverage and constant-prediction dates per model / split / horizon, and stocks per date."""
    health = prediction_health(predictions)
    table = health.table.sort(
        pl.col("split").replace_strict({s: i for i, s in enumerate(SPLIT_ORDER)}, default=len(SPLIT_ORDER)),
        pl.col("model").replace_strict({m: i for i, m in enumerate(models)}),
        "horizon",
    )
    lines = [
        "## Health",
        "",
        "Dates scored / dates of the split with a measurable target (coverage), and dates on "
        "which the model's predictions were all equal — scored 0, never dropped. A model fails "
        f"when that share exceeds {MAX_CONSTANT_SHARE:.0%} of its scored dates.",
        "",
        "| split | model | h | dates scored | coverage | constant dates | status |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in table.iter_rows(named=True):
        share = row["constant_share"]
        constant = f"{row['constant_dates']} ({share:.1%})" if share is not None else "—"
        coverage = f"{row['coverage']:.1%}" if row["coverage"] is not None else "—"
        status = "ok" if row["healthy"] else "**FAILS**"
        lines.append(
            f"| {row['split']} | {row['model']} | {row['horizon']} | "
            f"{row['n_dates']} / {row['n_split_dates']} | {coverage} | {constant} | {status} |"
        )
    lines.append("")
    if health.failing:
        lines += [
            "**Failing the constant-prediction check: "
            + ", ".join(f"`{m}`" for m in health.failing)
            + ".** Their metrics below count every constant date as 0; compare with care.",
            "",
        ]
    stocks = (
        predictions.filter(pl.col("target").is_not_null())
        .group_by("split", "date")
        .agg(pl.col("code").n_unique().alias("n"))
        .group_by("split")
        .agg(
            pl.len().alias("dates"),
            pl.col("n").min().alias("min"),
            pl.col("n").median().alias("median"),
            pl.col("n").max().alias("max"),
            pl.col("n").sort_by("date").first().alias("first"),
            pl.col("n").sort_by("date").last().alias("last"),
        )
    )
    lines += ["Stocks with a known target per date (universe size over time):", ""]
    for split in _ordered(stocks["split"].to_list(), SPLIT_ORDER):
        r = stocks.filter(pl.col("split") == split).row(0, named=True)
        lines.append(
            f"- `{split}`: {r['dates']} dates; first {r['first']}, last {r['last']}, "
            f"min {r['min']}, median {r['median']:.0f}, max {r['max']}."
        )
    lines.append("")
    return lines


def _data_lines(
    universe_exclusions: Mapping[str, Mapping[str, int]] | None,
    last_traded_exits: Mapping[str, int] | None,
) -> list[str]:
    lines = []
    if universe_exclusions is not None:
        lines.append(
            "- Left out of the universe (not a common stock as of the date): "
            + "; ".join(
                f"{reason.replace('_', ' ')}: {c['codes']} codes, {c['rows']:,} rows"
                for reason, c in universe_exclusions.items()
            )
            + "."
        )
    if last_traded_exits is not None:
        lines.append(
            "- Targets exiting at the last traded close (stock stopped trading inside the "
            "horizon): " + ", ".join(f"{k} {v:,}" for k, v in last_traded_exits.items()) + " rows."
        )
    return [*lines, ""] if lines else []


def _markdown(
    title: str,
    predictions: pl.DataFrame,
    table: pl.DataFrame,
    models: Sequence[str],
    oracle_rank_ic: Mapping[int, float] | None,
    cost_bp: float,
    plot_label: str,
    plots: Mapping[str, Path],
    data_notes: Sequence[str],
) -> str:
    first, last = predictions["date"].min(), predictions["date"].max()
    coverage = predictions.group_by("model").agg(
        pl.len().alias("rows"), pl.col("prediction").null_count().alias("missing")
    )
    lines = [
        f"# {title}",
        "",
        f"{predictions.height:,} prediction rows from {first} to {last}; models: "
        + ", ".join(f"`{m}`" for m in models)
        + "; horizons: " + ", ".join(f"{h}d" for h in sorted(predictions["horizon"].unique().to_list()))
        + ".",
        "",
        *_health_lines(predictions, models),
        *data_notes,
    ]
    missing = coverage.filter(pl.col("missing") > 0)
    for model, rows, n_missing in missing.select("model", "rows", "missing").iter_rows():
        lines.append(f"- `{model}`: {n_missing:,} of {rows:,} rows have no prediction (left out of its metrics).")
    if missing.height:
        lines.append("")
    for split in _ordered(table["split"].unique().to_list(), SPLIT_ORDER):
        rows = table.filter(pl.col("split") == split).sort(
            pl.col("model").replace_strict({m: i for i, m in enumerate(models)}), "horizon"
        )
        lines += [f"## Metrics — split `{split}`", "", *_markdown_table(rows), ""]
    if oracle_rank_ic is not None:
        lines += [
            "## Oracle",
            "",
            "RankIC of the sandbox's oracle (the planted signal's expected return) per horizon: "
            + ", ".join(f"{h}d {v:.4f}" for h, v in sorted(oracle_rank_ic.items()))
            + ". `RankIC / oracle` is the share of that achievable RankIC each model reaches.",
            "",
        ]
    elif ORACLE_FRACTION in table.columns:
        lines += [
            "## Oracle",
            "",
            f"`RankIC / oracle` is each model's RankIC as a share of the `{ORACLE_MODEL}` model's "
            "on the same split and horizon (the achievable RankIC).",
            "",
        ]
    lines += [f"## Plots ({plot_label})", ""]
    lines += [_image_link(name, path.name) for name, path in plots.items()]
    lines += [
        "",
        "## Definitions (docs/evaluation.md)",
        "",
        "- IC / RankIC: Pearson / Spearman of prediction and target within each date, averaged "
        "over the scored dates; a date whose predictions are all equal scores 0. ± SE: "
        "Newey–West standard error of that mean with h − 1 lags (Bartlett weights; consecutive "
        "h-day targets overlap). RankICIR = mean / std (ddof=1) of the daily values.",
        "- Coverage: dates scored / dates of the split and horizon with ≥ 3 known, "
        "not all equal targets.",
        "- Long-short: each date long the top decile and short the bottom decile by prediction, "
        "equal weight; the mean h-day spread ± its Newey–West SE. Sharpe: mean / std of the "
        "same spreads × √(252 / h), a point estimate (its significance is the mean / SE, not "
        f"Sharpe × √years). Net subtracts {cost_bp:g} bp per unit of one-way traded notional. "
        "A constant-prediction date holds no book (spread 0).",
        "- JPX score (1d): the Tokyo Stock Exchange Prediction competition metric — next-day "
        "returns, top / bottom 200 by prediction with weights 2 → 1, mean / std of the daily "
        "weighted spread, not annualized; empty unless every date has ≥ 400 stocks. JPX scaled: "
        "not the competition's metric — legs of min(200, n / 10) names at every horizon.",
        "- Hit rate: share of (date, stock) with sign(prediction) = sign(target), zeros excluded; "
        "top-decile precision: share of the long leg whose target beats the date's median.",
        "",
    ]
    return "\n".join(lines)


def build_report(
    predictions: pl.DataFrame,
    out_dir: Path,
    title: str,
    oracle_rank_ic: Mapping[int, float] | None = None,
    cost_bp: float = 10.0,
    universe_exclusions: Mapping[str, Mapping[str, int]] | None = None,
    last_traded_exits: Mapping[str, int] | None = None,
) -> ReportResult:
    """Evaluate every (model, split, horizon) of ``predictions`` and write the report.

    ``universe_exclusions`` (``dataset.assemble.universe_exclusions``) and
    ``last_traded_exits`` (``dataset.targets.last_traded_counts``) are shown in the health
    section when given.

    Raises ValueError, naming the model / column, for empty predictions, NaN/inf values, or a
    model without a single prediction: such a set must never produce a report.
    """
    _check(predictions)
    models = _ordered(predictions["model"].unique().to_list(), MODEL_ORDER)
    table = _with_oracle_fraction(metrics.evaluate(predictions, cost_bp=cost_bp), oracle_rank_ic)
    split, horizon, sample = _plot_slice(predictions)
    label = f"split {split}, {horizon}-day target"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "cumulative_long_short": _plot_cumulative(
            metrics.long_short_returns(sample, by=["model"]), models, cost_bp, label,
            out_dir / PLOT_FILES["cumulative_long_short"],
        ),
        "daily_rank_ic": _plot_rank_ic(
            metrics.daily_ic(sample, "spearman", by=["model"]), models, label,
            out_dir / PLOT_FILES["daily_rank_ic"],
        ),
        "decile_returns": _plot_deciles(
            metrics.decile_returns(sample, by=["model"]), models, label,
            out_dir / PLOT_FILES["decile_returns"],
        ),
    }
    notes = _data_lines(universe_exclusions, last_traded_exits)
    markdown = _markdown(title, predictions, table, models, oracle_rank_ic, cost_bp, label, plots, notes)
    path = out_dir / REPORT_FILE
    _write_atomic(path, markdown.encode("utf-8"))
    return ReportResult(markdown=markdown, table=table, plots=plots, path=path)
