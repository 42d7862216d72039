"""The training panel: the whole ``ml_dataset`` as dense ``[dates, stocks, …]`` tensors.

A batch is a set of dates; each date brings every stock valid that day (row present and in
the universe) with its input window, its targets and the date's stock graph. Windows are
gathered by indexing the dense feature tensor, so feeding costs a few gather kernels on
whatever device the panel lives on — no DataLoader, no worker processes, no pickling
(DESIGN §7).

Conventions:

* ``features [D, N, F]`` float32: ``model_inputs`` of the dataset values with the model's
  ``input_normalization`` — by default robust-normalized with the training-window statistics
  (clip to median ± c·scale, then (x − median) / scale); per date over every row of that date
  for the cross-sectional methods. A null becomes 0, "a typical value". A NaN in the dataset
  is a contract violation and is refused. Training, validation and prediction all read their
  inputs from a panel, so this is the only place the transform happens.
* A (date, stock) without a row (not listed yet, delisted, no bar) has zero features, so the
  window step of a stock that had no row that day is the same "typical value" as a null; steps
  before the panel's first date are zero too. Rows outside the universe keep their real
  features: they are observed history for later windows, only never a sample themselves.
* ``targets [D, N, H]`` float32: NaN where unknown (null in the dataset or no row), never 0.
* ``returns [D, N]`` float32: the raw (un-normalized) 1-day return column the caller names,
  NaN where unknown; only the per-date correlation graphs use it.
* Static ids use the model's fixed vocabularies (``atft_pipeline.model.config``): the 33 S33
  codes then ``9999`` (which also takes a null or unknown code); the market codes then one
  id for a null or unknown segment.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor

from atft_pipeline.dataset.normalization import InputNormalization, model_inputs, stats_hash
from atft_pipeline.features.catalog import HORIZONS, META_COLUMNS, TARGET_COLUMNS
from atft_pipeline.features.graph_builder import GraphConfig, correlation_graph
from atft_pipeline.jquants.reference import SECTOR33_OTHER
from atft_pipeline.model.config import SECTOR_IDS, SEGMENT_IDS, UNKNOWN_SEGMENT_ID, ModelConfig

OTHER_SECTOR_ID = SECTOR_IDS[SECTOR33_OTHER]
_FEATURE_BLOCK = 64  # feature columns normalized and scattered per pass (bounds peak memory)


class PanelError(ValueError):
    """The dataset cannot be turned into a training panel (names the column / key)."""


def graph_config(model: ModelConfig) -> GraphConfig:
    """The per-date graph the model expects: its window, k and threshold; a stock (and a
    pair) needs two thirds of the window observed, as the graph features do (40 of 60)."""
    min_obs = max(2, math.ceil(2 * model.graph_window / 3))
    return GraphConfig(
        window=model.graph_window, k=model.graph_k, threshold=model.graph_threshold, min_obs=min_obs
    )


def history_sessions(model: ModelConfig) -> int:
    """Sessions before a date that its input window and its stock graph read."""
    return max(model.window, model.graph_window) - 1


def rows_for_span(
    frame: pl.DataFrame, span: tuple[dt.date, dt.date], history: int
) -> pl.DataFrame:
    """The rows of ``frame`` from ``history`` of its dates before ``span[0]`` through
    ``span[1]`` (every stock of each date: cross-sectional inputs need the whole date)."""
    start, end = span
    dates = frame["date"].unique().sort()
    position = max(0, dates.search_sorted(start) - history)
    lowest = dates[position] if position < dates.len() else start  # no date reaches the span
    return frame.filter(pl.col("date").is_between(lowest, end))


@dataclass(frozen=True)
class Batch:
    """The stocks of ``n_dates`` dates stacked on the first axis (M rows), date-major then in
    code order.

    ``edge_index``/``edge_attr`` are the disjoint union of the dates' graphs (row indices of
    this batch, never across dates), ``None`` when the batch was gathered without graphs.
    """

    x: Tensor  # [M, T, F] float32
    static_ids: Tensor  # [M, 2] long: sector id, segment id
    date_index: Tensor  # [M] long in [0, n_dates)
    targets: Tensor  # [M, H] float32, NaN where unknown
    target_mask: Tensor  # [M, H] bool: target known
    dates: Tensor  # [n_dates] long: the panel date index of each batch date
    stocks: Tensor  # [M] long: the panel stock index of each row
    edge_index: Tensor | None  # [2, E] long
    edge_attr: Tensor | None  # [E, 1] float32: ρ

    @property
    def n_dates(self) -> int:
        return int(self.dates.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])


class Panel:
    """Dense tensors of one ``ml_dataset`` frame; see the module docstring for conventions.

    Build with :meth:`from_dataset`. ``to(device)`` moves every tensor (and cached graph) in
    place and returns the panel; on CUDA the whole panel then lives on the GPU.
    """

    def __init__(
        self,
        *,
        features: Tensor,
        valid: Tensor,
        targets: Tensor,
        sector_ids: Tensor,
        segment_ids: Tensor,
        returns: Tensor,
        dates: Sequence[dt.date],
        codes: Sequence[str],
        feature_columns: Sequence[str],
        window: int,
        graph: GraphConfig,
        stats_hash: str,
        input_normalization: InputNormalization = "time_series",
    ) -> None:
        d, n, f = features.shape
        for name, tensor, shape in (
            ("valid", valid, (d, n)),
            ("targets", targets, (d, n, len(HORIZONS))),
            ("sector_ids", sector_ids, (d, n)),
            ("segment_ids", segment_ids, (d, n)),
            ("returns", returns, (d, n)),
        ):
            if tuple(tensor.shape) != shape:
                raise PanelError(f"panel {name} has shape {tuple(tensor.shape)}, expected {shape}")
        if len(dates) != d or len(codes) != n or len(feature_columns) != f:
            raise PanelError("panel dates / codes / feature_columns do not match the tensor shape")
        if window < 1:
            raise PanelError(f"window must be >= 1, got {window}")
        self.features = features
        self.valid = valid
        self.targets = targets
        self.sector_ids = sector_ids
        self.segment_ids = segment_ids
        self.returns = returns
        self.dates = tuple(dates)
        self.codes = tuple(codes)
        self.feature_columns = tuple(feature_columns)
        self.horizons = HORIZONS
        self.window = window
        self.graph = graph
        self.stats_hash = stats_hash
        self.input_normalization = input_normalization
        # Graphs are built on the host from these copies (numpy), once per date, then cached
        # on the panel's device.
        self._host_valid = valid.cpu().numpy()
        self._host_returns = returns.cpu().numpy().astype(np.float64)
        self._graphs: dict[int, tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_model(
        cls,
        frame: pl.DataFrame,
        stats: pl.DataFrame,
        model: ModelConfig,
        *,
        return_column: str,
        span: tuple[dt.date, dt.date] | None = None,
    ) -> Panel:
        """``from_dataset`` with the window, graph and input normalization ``model`` expects
        (what training, prediction and serving build a panel with).

        ``span`` (first, last date the panel will be asked about) keeps only the dates the
        model reads for it: those, and the sessions before the first that its input window and
        stock graph reach back to (``history_sessions``). The panel's tensors for the span are
        then the same as a panel of the whole frame; building it costs its span, not the
        frame's whole history.
        """
        if span is not None:
            frame = rows_for_span(frame, span, history_sessions(model))
        return cls.from_dataset(
            frame,
            stats,
            return_column=return_column,
            window=model.window,
            graph=graph_config(model),
            input_normalization=model.input_normalization,
        )

    @classmethod
    def from_dataset(
        cls,
        frame: pl.DataFrame,
        stats: pl.DataFrame,
        *,
        return_column: str,
        window: int,
        graph: GraphConfig,
        input_normalization: InputNormalization = "time_series",
    ) -> Panel:
        """Pivot an ``ml_dataset`` frame (meta, catalog features, targets) into a panel.

        Feature columns are every column that is neither meta nor target, in frame order;
        ``stats`` (``compute_normalization_stats`` over the training window) must cover each.
        ``return_column`` names the raw 1-day return feature behind the stock graphs.
        ``input_normalization`` must be the model's (``check_model_fits_panel`` refuses a
        mismatch); the cross-sectional methods take each date's cross-section from the rows
        of ``frame``, so it must hold every stock of a date, in the universe or not.
        """
        missing = [c for c in (*META_COLUMNS, *TARGET_COLUMNS) if c not in frame.columns]
        if missing:
            raise PanelError(f"ml_dataset frame lacks column(s) {missing}")
        reserved = set(META_COLUMNS) | set(TARGET_COLUMNS)
        feature_columns = [c for c in frame.columns if c not in reserved]
        if not feature_columns:
            raise PanelError("ml_dataset frame has no feature columns")
        if return_column not in feature_columns:
            raise PanelError(
                f"return column {return_column!r} is not a feature column of the dataset"
            )
        uncovered = sorted(set(feature_columns) - set(stats["feature"].to_list()))
        if uncovered:
            raise PanelError(
                f"normalization stats lack {len(uncovered)} feature column(s) of the dataset: "
                f"{uncovered[:8]}"
            )
        if frame.height == 0:
            raise PanelError("ml_dataset frame is empty")
        if frame["date"].null_count() or frame["code"].null_count():
            raise PanelError("ml_dataset frame has null date or code keys")
        duplicated = frame.select("date", "code").is_duplicated()
        if duplicated.any():
            first = frame.filter(duplicated).row(0, named=True)
            raise PanelError(
                f"ml_dataset has {int(duplicated.sum())} duplicated (date, code) rows, "
                f"e.g. {first['date']} {first['code']}"
            )

        dates = frame["date"].unique().sort()
        codes = frame["code"].unique().sort()
        # each row's (date, stock) cell: positions in the sorted axes (no copy of the frame)
        d_idx = dates.search_sorted(frame["date"]).to_numpy().astype(np.int64)
        n_idx = codes.search_sorted(frame["code"]).to_numpy().astype(np.int64)
        shape = (dates.len(), codes.len())

        valid = np.zeros(shape, dtype=bool)
        valid[d_idx, n_idx] = frame["universe"].fill_null(False).to_numpy()
        ids = frame.select(
            pl.col("sector33")
            .replace_strict(SECTOR_IDS, default=OTHER_SECTOR_ID, return_dtype=pl.Int64)
            .alias("sector"),
            pl.col("market_segment")
            .replace_strict(SEGMENT_IDS, default=UNKNOWN_SEGMENT_ID, return_dtype=pl.Int64)
            .alias("segment"),
        )
        sector_ids = np.full(shape, OTHER_SECTOR_ID, dtype=np.int64)
        segment_ids = np.full(shape, UNKNOWN_SEGMENT_ID, dtype=np.int64)
        sector_ids[d_idx, n_idx] = ids["sector"].to_numpy()
        segment_ids[d_idx, n_idx] = ids["segment"].to_numpy()

        targets = np.full((*shape, len(TARGET_COLUMNS)), np.nan, dtype=np.float32)
        targets[d_idx, n_idx] = frame.select(pl.col(TARGET_COLUMNS).cast(pl.Float32)).to_numpy()
        returns = np.full(shape, np.nan, dtype=np.float32)
        returns[d_idx, n_idx] = frame[return_column].cast(pl.Float32).to_numpy()

        features = np.zeros((*shape, len(feature_columns)), dtype=np.float32)
        stats = stats.filter(pl.col("feature").is_in(feature_columns))
        for start in range(0, len(feature_columns), _FEATURE_BLOCK):
            block = feature_columns[start : start + _FEATURE_BLOCK]
            has_nan = frame.select(pl.col(block).cast(pl.Float64).is_nan().any()).row(0)
            if any(has_nan):
                bad = [c for c, nan in zip(block, has_nan, strict=True) if nan]
                raise PanelError(
                    f"ml_dataset feature column(s) {bad} hold NaN (only null is allowed)"
                )
            normalized = model_inputs(
                frame.lazy().select("date", *block), block, stats, input_normalization
            ).collect()
            features[d_idx, n_idx, start : start + len(block)] = normalized.to_numpy()

        return cls(
            features=torch.from_numpy(features),
            valid=torch.from_numpy(valid),
            targets=torch.from_numpy(targets),
            sector_ids=torch.from_numpy(sector_ids),
            segment_ids=torch.from_numpy(segment_ids),
            returns=torch.from_numpy(returns),
            dates=dates.to_list(),
            codes=codes.to_list(),
            feature_columns=feature_columns,
            window=window,
            graph=graph,
            stats_hash=stats_hash(stats),
            input_normalization=input_normalization,
        )

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def n_dates(self) -> int:
        return len(self.dates)

    @property
    def n_stocks(self) -> int:
        return len(self.codes)

    @property
    def n_features(self) -> int:
        return len(self.feature_columns)

    def to(self, device: torch.device | str) -> Panel:
        device = torch.device(device)
        for name in ("features", "valid", "targets", "sector_ids", "segment_ids", "returns"):
            setattr(self, name, getattr(self, name).to(device))
        self._graphs = {t: (e.to(device), w.to(device)) for t, (e, w) in self._graphs.items()}
        return self

    def date_indices(self, start: dt.date, end: dt.date) -> np.ndarray:
        """Panel indices of the dates in ``[start, end]`` that have at least one valid stock."""
        days = np.array(self.dates, dtype="datetime64[D]")
        inside = (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))
        return np.flatnonzero(inside & self._host_valid.any(axis=1))

    # ------------------------------------------------------------------ batches

    def gather(
        self, date_idx: Tensor | Sequence[int] | np.ndarray, with_graph: bool = True
    ) -> Batch:
        """The batch of the given panel dates (see :class:`Batch`).

        Index checks and graph offsets use a host copy of the indices, so the only device→host
        synchronisation is the one ``nonzero`` needs to size the batch.
        """
        host = (
            date_idx.cpu().numpy() if isinstance(date_idx, Tensor) else np.asarray(date_idx)
        ).astype(np.int64)
        if host.ndim != 1 or host.size == 0:
            raise ValueError(f"date_idx must be a non-empty 1-D index, got shape {host.shape}")
        if host.min() < 0 or host.max() >= self.n_dates:
            raise IndexError(f"date indices must lie in [0, {self.n_dates})")
        dates = torch.from_numpy(host).to(self.device)
        local_date, stock = self.valid[dates].nonzero(as_tuple=True)  # date-major, codes ascending
        t = dates[local_date]
        steps = t.unsqueeze(1) - torch.arange(self.window - 1, -1, -1, device=self.device)  # [M, T]
        x = self.features[steps.clamp_min(0), stock.unsqueeze(1)]  # [M, T, F]
        if host.min() < self.window - 1:  # some window starts before the panel's first date
            x = x.masked_fill((steps < 0).unsqueeze(-1), 0.0)
        targets = self.targets[t, stock]
        edge_index = edge_attr = None
        if with_graph:
            edge_index, edge_attr = self._batch_graph(host.tolist())
        return Batch(
            x=x,
            static_ids=torch.stack([self.sector_ids[t, stock], self.segment_ids[t, stock]], dim=1),
            date_index=local_date,
            targets=targets,
            target_mask=torch.isfinite(targets),
            dates=dates,
            stocks=stock,
            edge_index=edge_index,
            edge_attr=edge_attr,
        )

    def date_graph(self, t: int) -> tuple[Tensor, Tensor]:
        """Graph of date ``t`` over its valid stocks (node i = i-th valid stock in code order):
        ``(edge_index [2, E] long, edge_weight [E] float32)``, from ``returns[t−W+1 … t]``."""
        cached = self._graphs.get(t)
        if cached is None:
            columns = np.flatnonzero(self._host_valid[t])
            window = self._host_returns[max(0, t - self.graph.window + 1) : t + 1, columns]
            edge_index, weight = correlation_graph(
                window, k=self.graph.k, threshold=self.graph.threshold, min_obs=self.graph.min_obs
            )
            cached = (
                torch.from_numpy(edge_index).to(self.device),
                torch.from_numpy(weight.astype(np.float32)).to(self.device),
            )
            self._graphs[t] = cached
        return cached

    def _batch_graph(self, dates: list[int]) -> tuple[Tensor, Tensor]:
        counts = self._host_valid[dates].sum(axis=1)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        parts = [self.date_graph(t) for t in dates]
        edge_index = torch.cat(
            [e + int(o) for (e, _), o in zip(parts, offsets, strict=True)], dim=1
        )
        edge_attr = torch.cat([w for _, w in parts]).unsqueeze(1)
        return edge_index, edge_attr
