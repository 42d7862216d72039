"""Typed configuration of the ATFT-GAT-FAN model and of its training loss.

``n_features`` is not a free choice: it is the number of feature columns of the enabled
catalog families, ``len(catalog.feature_columns(enabled))`` (DESIGN §3, §7). The demo and
production presets differ only in sizes; both go through the same code.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atft_pipeline.dataset.normalization import InputNormalization
from atft_pipeline.features.catalog import HORIZONS
from atft_pipeline.jquants.reference import MARKET_SEGMENTS, SECTOR33, SECTOR33_OTHER

# Static categorical vocabularies (the ids ``static_ids`` carries). Sectors: every S33 code,
# then "9999" (other), which also takes any code the table does not know. Segments: every
# market segment code, then one id for an unknown segment.
SECTOR_IDS: dict[str, int] = {code: i for i, code in enumerate([*SECTOR33, SECTOR33_OTHER])}
SEGMENT_IDS: dict[str, int] = {code: i for i, code in enumerate(MARKET_SEGMENTS)}
UNKNOWN_SEGMENT_ID = len(SEGMENT_IDS)
N_SECTORS = len(SECTOR_IDS)
N_SEGMENTS = len(SEGMENT_IDS) + 1

# How the training loss sees each date's targets (LossConfig.target_transform): "raw" returns,
# "demean"-ed returns (the date's mean subtracted), or unit-scale scores: "zscore" (minus the
# mean, over the std) and "normal_score" (Φ⁻¹((rank − 0.5)/n), ties averaged).
TargetTransform = Literal["raw", "demean", "zscore", "normal_score"]
UNIT_SCALE_TRANSFORMS: frozenset[str] = frozenset({"zscore", "normal_score"})


class ModelConfig(BaseModel):
    """Sizes and switches of :class:`~atft_pipeline.model.atft_gat_fan.ATFTGATFAN`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_features: int = Field(ge=1, description="input variables per step (from the catalog)")
    input_normalization: InputNormalization = Field(
        "time_series",
        description="how dataset values become inputs (atft_pipeline.dataset.normalization): "
        "training-window robust statistics, or per date across stocks (z-score or rank normal "
        "score)",
    )
    window: int = Field(20, ge=2, description="time steps T of each input window")
    hidden: int = Field(64, ge=2, description="model width")
    lstm_layers: int = Field(1, ge=1)
    attn_heads: int = Field(4, ge=1, description="interpretable attention heads")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    fan_top_k: int = Field(3, ge=1, description="frequencies FAN removes per instance/channel")
    fan_include_dc: bool = Field(
        False, description="whether the zero frequency (window mean) may be among the top-K"
    )
    gat_heads: tuple[int, ...] = Field((4, 2), min_length=1, description="heads per GAT layer")
    gat_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="attention-coefficient dropout")
    edge_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="edge drop rate in training")
    graph_k: int = Field(10, ge=1, description="neighbours per stock in the per-date graph")
    graph_threshold: float = Field(0.3, ge=0.0, le=1.0, description="minimum |ρ| for an edge")
    graph_window: int = Field(60, ge=2, description="trailing return days behind ρ")
    horizons: tuple[int, ...] = Field(HORIZONS, min_length=1)
    quantiles: tuple[float, ...] = Field((0.05, 0.25, 0.5, 0.75, 0.95), min_length=1)
    n_sectors: int = Field(N_SECTORS, ge=1, description="sector id vocabulary (S33 + other)")
    n_segments: int = Field(N_SEGMENTS, ge=1, description="market segment id vocabulary")
    target_daily_std: float = Field(
        0.02,
        gt=0.0,
        description="typical cross-sectional std of a 1-day target; only used to initialise "
        "quantile spreads (horizon h starts at std·√h) when target_scale is 'returns'",
    )
    target_scale: Literal["returns", "unit"] = Field(
        "returns",
        description="the scale of the targets the loss sees: 'returns' (target_transform raw "
        "or demean; heads start at target_daily_std·√h) or 'unit' (zscore or normal_score: "
        "every horizon's targets have std 1 per date, so every head starts at spread 1)",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if self.hidden % self.attn_heads:
            raise ValueError(
                f"hidden={self.hidden} is not divisible by attn_heads={self.attn_heads}"
            )
        if self.hidden % self.gat_heads[0]:
            raise ValueError(
                f"hidden={self.hidden} is not divisible by the first GAT layer's "
                f"{self.gat_heads[0]} heads"
            )
        if any(h < 1 for h in self.gat_heads):
            raise ValueError(f"gat_heads must be positive, got {self.gat_heads}")
        n_bins = self.window // 2 + 1 - (0 if self.fan_include_dc else 1)
        if self.fan_top_k > n_bins:
            raise ValueError(
                f"fan_top_k={self.fan_top_k} exceeds the {n_bins} candidate frequencies of a "
                f"{self.window}-step window"
            )
        if any(h < 1 for h in self.horizons) or len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons must be distinct positive ints, got {self.horizons}")
        qs = self.quantiles
        if any(not 0.0 < q < 1.0 for q in qs) or any(a >= b for a, b in pairwise(qs)):
            raise ValueError(f"quantiles must be strictly increasing in (0, 1), got {qs}")
        if 0.5 not in qs:
            raise ValueError(f"quantiles must contain the median 0.5 (point forecast), got {qs}")
        return self

    @classmethod
    def demo(cls, n_features: int, **overrides: Any) -> ModelConfig:
        """Small enough to train, validate and predict on 2 CPU cores in minutes.

        A 10-step window: every step costs a variable selection over all inputs, and on the
        sandbox benchmark (three seeds, three folds) 10 steps train 1.8x faster than 20 with
        the same 1-day RankIC and a higher 5-day one (BENCHMARKS.md, "Input window").
        """
        values: dict[str, Any] = dict(
            n_features=n_features,
            window=10,
            hidden=32,
            lstm_layers=1,
            attn_heads=4,
            dropout=0.1,
            fan_top_k=3,
            gat_heads=(4, 2),
            gat_dropout=0.1,
            edge_dropout=0.1,
        )
        return cls(**(values | overrides))

    @classmethod
    def production(cls, n_features: int, **overrides: Any) -> ModelConfig:
        """The GPU configuration: 60-day windows, width 256."""
        values: dict[str, Any] = dict(
            n_features=n_features,
            window=60,
            hidden=256,
            lstm_layers=2,
            attn_heads=8,
            dropout=0.2,
            fan_top_k=4,
            gat_heads=(8, 4),
            gat_dropout=0.2,
            edge_dropout=0.1,
            graph_k=15,
        )
        return cls(**(values | overrides))

    @property
    def initial_target_std(self) -> tuple[float, ...]:
        """Per horizon, the spread the quantile heads start at: target_daily_std·√h for
        return targets (h-day returns add up roughly independent daily ones), 1 for unit-scale
        targets (standardized per date, whatever the horizon)."""
        if self.target_scale == "unit":
            return tuple(1.0 for _ in self.horizons)
        return tuple(self.target_daily_std * math.sqrt(h) for h in self.horizons)

    def parameter_count(self) -> int:
        """Parameters of the model this config builds (built on the meta device: no memory)."""
        import torch

        from atft_pipeline.model.atft_gat_fan import ATFTGATFAN

        with torch.device("meta"):
            return ATFTGATFAN(self).parameter_count()


class LossConfig(BaseModel):
    """Weights and settings of :class:`~atft_pipeline.model.losses.CombinedLoss`.

    total = quantile_weight·pinball − rank_ic_weight·RankIC~ − ic_weight·IC
    − sharpe_weight·S/√(1 + S²) with S the long-short Sharpe (the correlation and Sharpe
    terms are maximised; the Sharpe term is squashed, see ``CombinedLoss``).

    The defaults assume targets in raw return units (daily std ≈ 0.02). The ranking terms are
    scale-free, so their gradients grow as 1/(prediction spread) — for return-sized
    predictions ~50× the pinball gradient per unit weight — and optimiser steps on a
    scale-free objective inflate the prediction scale, which only the pinball term anchors.
    Hence small weights; tune them on validation RankIC.

    ``target_transform`` maps each date's targets before every term (per horizon, over the
    stocks with a known target; ``losses.transform_targets``). It changes only what training
    fits: validation metrics and written predictions are scored against the raw targets, and
    ranking metrics do not care about the predictions' scale. With ``zscore`` or
    ``normal_score`` the predictions and quantiles are in per-date score units (quantiles of
    the date's cross-section, not return quantiles), the model must start its heads at unit
    scale (``ModelConfig.target_scale = "unit"``; ``train`` refuses a mismatch), and since the
    predictions' spread is ~1 instead of ~0.02 the ranking terms pull ~50× less against the
    pinball term at the same weights.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantile_weight: float = Field(1.0, ge=0.0)
    rank_ic_weight: float = Field(0.02, ge=0.0)
    ic_weight: float = Field(0.01, ge=0.0)
    sharpe_weight: float = Field(0.005, ge=0.0)
    horizon_weights: tuple[float, ...] | None = Field(
        None, description="relative weight per horizon (None: equal)"
    )
    min_stocks_per_date: int = Field(
        10, ge=2, description="dates with fewer valid stocks are left out of correlations"
    )
    target_transform: TargetTransform = Field(
        "raw",
        description="per date and horizon, over the stocks with a known target, before every "
        "loss term (see TargetTransform); validation and predictions use the raw targets",
    )

    @model_validator(mode="after")
    def _check_weights(self) -> LossConfig:
        if self.horizon_weights is not None and (
            any(w < 0 for w in self.horizon_weights) or sum(self.horizon_weights) <= 0
        ):
            raise ValueError(
                f"horizon_weights must be ≥ 0 with a positive sum, got {self.horizon_weights}"
            )
        return self
