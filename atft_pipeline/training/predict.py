"""Model predictions in the long contract (DESIGN §5).

One row per (date, valid stock, horizon): ``date, code, horizon, prediction, q05 … q95,
target, split, model``, with ``prediction`` the median quantile and ``target`` null where it is
not known yet. The model runs in eval mode (no dropout, no edge dropout) without gradients,
in whatever phase it is in (the graph is gathered only when that phase uses it); an
:class:`ATFTEnsemble` predicts its members' mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from atft_pipeline.evaluation.metrics import PREDICTION_COLUMNS, QUANTILE_COLUMNS, QUANTILE_LEVELS
from atft_pipeline.model.atft_gat_fan import ATFTGATFAN
from atft_pipeline.model.ensemble import ATFTEnsemble
from atft_pipeline.progress import Counter
from atft_pipeline.training.device import autocast, is_out_of_memory, release_memory
from atft_pipeline.training.host_memory import reuse_freed_memory
from atft_pipeline.training.panel import Panel

log = logging.getLogger(__name__)

MODEL_NAME = "atft_gat_fan"
PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "code": pl.String(),
    "horizon": pl.Int32(),
    "prediction": pl.Float64(),
    **{q: pl.Float64() for q in QUANTILE_COLUMNS},
    "target": pl.Float64(),
    "split": pl.String(),
    "model": pl.String(),
}


def check_model_fits_panel(model: ATFTGATFAN | ATFTEnsemble, panel: Panel) -> None:
    """Raise unless the model was configured for this panel's inputs and outputs."""
    c = model.config
    problems = []
    if c.n_features != panel.n_features:
        problems.append(f"n_features {c.n_features} != panel's {panel.n_features} feature columns")
    if c.window != panel.window:
        problems.append(f"window {c.window} != panel window {panel.window}")
    if tuple(c.horizons) != tuple(panel.horizons):
        problems.append(f"horizons {c.horizons} != dataset horizons {panel.horizons}")
    if c.input_normalization != panel.input_normalization:
        problems.append(
            f"input_normalization {c.input_normalization!r} != the panel's "
            f"{panel.input_normalization!r}"
        )
    device = next(model.parameters()).device
    if device != panel.device:
        problems.append(f"model is on {device}, panel on {panel.device}")
    if problems:
        raise ValueError("model does not fit the panel: " + "; ".join(problems))


def predict(
    model: ATFTGATFAN | ATFTEnsemble,
    panel: Panel,
    date_indices: Sequence[int] | np.ndarray,
    split_name: str,
    model_name: str = MODEL_NAME,
    *,
    dates_per_batch: int = 32,
    bf16: bool = False,
) -> pl.DataFrame:
    """Predictions for every valid stock of the panel dates ``date_indices``.

    Raises if the model outputs a NaN/inf (naming the first date and code) or if the dates
    hold no valid stock at all. On an out-of-memory error the number of dates per forward
    pass is halved and the same dates are retried.
    """
    check_model_fits_panel(model, panel)
    if tuple(model.config.quantiles) != QUANTILE_LEVELS:
        raise ValueError(
            f"the predictions contract has quantiles {QUANTILE_LEVELS}; the model has "
            f"{model.config.quantiles}"
        )
    dates = np.asarray(date_indices, dtype=np.int64)
    if dates.size == 0:
        return pl.DataFrame(schema=PREDICTION_SCHEMA)
    was_training = model.training
    model.eval()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    counter = Counter(f"{split_name} dates predicted", int(dates.size))
    # on the host, each pass's large activations reuse the previous pass's heap memory
    try:
        with torch.no_grad(), reuse_freed_memory():
            cursor, size = 0, dates_per_batch
            while cursor < dates.size:
                chunk = dates[cursor : cursor + size]
                try:
                    parts.append(_forward(model, panel, chunk, bf16))
                except RuntimeError as error:
                    if not is_out_of_memory(error) or chunk.size == 1:
                        raise
                    failed = chunk.size
                else:
                    cursor += chunk.size
                    counter.advance(int(chunk.size))
                    continue
                release_memory(panel.device)
                size = max(1, failed // 2)
                log.warning("out of memory predicting %d dates; retrying with %d", failed, size)
    finally:
        model.train(was_training)
    return _long_frame(panel, parts, split_name, model_name)


def _forward(
    model: ATFTGATFAN | ATFTEnsemble, panel: Panel, chunk: np.ndarray, bf16: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    batch = panel.gather(chunk, with_graph=model.needs_graph)
    with autocast(panel.device, bf16):
        out = model(batch.x, batch.static_ids, batch.date_index, batch.edge_index, batch.edge_attr)
    return (
        batch.dates[batch.date_index].cpu().numpy(),
        batch.stocks.cpu().numpy(),
        out.quantiles.float().cpu().numpy(),
        batch.targets.cpu().numpy(),
    )


def _long_frame(
    panel: Panel,
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    split_name: str,
    model_name: str,
) -> pl.DataFrame:
    date_idx = np.concatenate([p[0] for p in parts])
    stock_idx = np.concatenate([p[1] for p in parts])
    quantiles = np.concatenate([p[2] for p in parts])  # [M, H, Q]
    targets = np.concatenate([p[3] for p in parts])  # [M, H]
    rows, n_horizons, n_quantiles = quantiles.shape
    if rows == 0:
        raise ValueError(
            f"no valid stock on any of the {split_name!r} dates asked for; nothing to predict"
        )
    finite = np.isfinite(quantiles).all(axis=(1, 2))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise FloatingPointError(
            f"model {model_name!r} produced NaN/inf for {int((~finite).sum())} of {rows} "
            f"{split_name!r} rows (first: date {panel.dates[date_idx[first]]}, code "
            f"{panel.codes[stock_idx[first]]})"
        )
    flat_q = quantiles.reshape(rows * n_horizons, n_quantiles).astype(np.float64)
    median = QUANTILE_LEVELS.index(0.5)
    frame = pl.DataFrame(
        {
            "date": pl.Series(panel.dates, dtype=pl.Date).gather(np.repeat(date_idx, n_horizons)),
            "code": pl.Series(panel.codes, dtype=pl.String).gather(
                np.repeat(stock_idx, n_horizons)
            ),
            "horizon": np.tile(np.asarray(panel.horizons, dtype=np.int32), rows),
            "prediction": flat_q[:, median],
            **{name: flat_q[:, j] for j, name in enumerate(QUANTILE_COLUMNS)},
            "target": pl.Series(targets.reshape(-1).astype(np.float64)).fill_nan(None),
        },
        schema_overrides={"horizon": pl.Int32},
    ).with_columns(pl.lit(split_name).alias("split"), pl.lit(model_name).alias("model"))
    return frame.select(PREDICTION_COLUMNS).cast(PREDICTION_SCHEMA).sort("date", "code", "horizon")
