"""ATFT-GAT-FAN model: composable blocks, the full model, and its training losses."""

from atft_pipeline.model.atft_gat_fan import ATFTGATFAN, PHASES, ModelOutput, Phase
from atft_pipeline.model.config import LossConfig, ModelConfig
from atft_pipeline.model.ensemble import ATFTEnsemble
from atft_pipeline.model.fan import FrequencyAdaptiveNormalization, fan_decompose
from atft_pipeline.model.graph import GraphAttentionBlock
from atft_pipeline.model.grn import GateAddNorm, GatedLinearUnit, GatedResidualNetwork
from atft_pipeline.model.heads import QuantileHeads, non_crossing_quantiles
from atft_pipeline.model.losses import (
    CombinedLoss,
    group_pearson,
    long_short_sharpe,
    per_date_ic,
    per_date_rank_ic_surrogate,
    pinball_loss,
    rank_within_groups,
    transform_targets,
)
from atft_pipeline.model.static import StaticContexts, StaticCovariateEncoder
from atft_pipeline.model.temporal import (
    InterpretableMultiHeadAttention,
    LSTMEncoder,
    TemporalFusionBlock,
    causal_mask,
)
from atft_pipeline.model.variable_selection import VariableSelectionNetwork

__all__ = [
    "ATFTEnsemble",
    "ATFTGATFAN",
    "CombinedLoss",
    "FrequencyAdaptiveNormalization",
    "GateAddNorm",
    "GatedLinearUnit",
    "GatedResidualNetwork",
    "GraphAttentionBlock",
    "InterpretableMultiHeadAttention",
    "LSTMEncoder",
    "LossConfig",
    "ModelConfig",
    "ModelOutput",
    "PHASES",
    "Phase",
    "QuantileHeads",
    "StaticContexts",
    "StaticCovariateEncoder",
    "TemporalFusionBlock",
    "VariableSelectionNetwork",
    "causal_mask",
    "fan_decompose",
    "group_pearson",
    "long_short_sharpe",
    "non_crossing_quantiles",
    "per_date_ic",
    "per_date_rank_ic_surrogate",
    "pinball_loss",
    "rank_within_groups",
    "transform_targets",
]
