"""ATFT-GAT-FAN: TFT-style temporal model + frequency-adaptive inputs + per-date stock graph.

Forward path for one batch (a set of whole dates, their stocks stacked on the first axis)::

    static ids ──> StaticCovariateEncoder ──> contexts
    x ──[FAN.decompose]──> residual ──> VariableSelectionNetwork ──[FAN merge of x_non]──>
        TemporalFusionBlock (LSTM, enrichment, causal interpretable attention) ──> last step
        ──[GraphAttentionBlock on the per-date graph]──> QuantileHeads ──> [B, H, Q]

Bracketed stages depend on the training phase (DESIGN §7):

======== ===== ===== =================================================
phase    FAN   GAT   meaning
======== ===== ===== =================================================
baseline off   off   VSN → LSTM → attention → heads
fan      on    off   + frequency decomposition of the inputs
gat      on    on    + graph attention over same-date stocks
finetune on    on    same path as ``gat``; the trainer lowers the lr
======== ===== ===== =================================================

A bypassed stage is not evaluated at all, so its parameters get no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from atft_pipeline.model.config import ModelConfig
from atft_pipeline.model.fan import FrequencyAdaptiveNormalization
from atft_pipeline.model.graph import GraphAttentionBlock
from atft_pipeline.model.heads import QuantileHeads
from atft_pipeline.model.static import StaticCovariateEncoder
from atft_pipeline.model.temporal import TemporalFusionBlock
from atft_pipeline.model.variable_selection import VariableSelectionNetwork


@dataclass(frozen=True)
class Phase:
    name: str
    uses_fan: bool
    uses_gat: bool


PHASES: dict[str, Phase] = {
    p.name: p
    for p in (
        Phase("baseline", uses_fan=False, uses_gat=False),
        Phase("fan", uses_fan=True, uses_gat=False),
        Phase("gat", uses_fan=True, uses_gat=True),
        Phase("finetune", uses_fan=True, uses_gat=True),
    )
}


@dataclass(frozen=True)
class ModelOutput:
    """What one forward pass returns (B rows, H horizons, Q quantiles, T steps, F features)."""

    quantiles: Tensor  # [B, H, Q], increasing along Q
    point: Tensor  # [B, H], the median quantile
    selection_weights: Tensor  # [B, T, F], softmax over F per step
    static_weights: Tensor  # [B, 2], weight of sector vs segment embedding
    attention_weights: Tensor  # [B, attn_heads, T]: the forecast step's attention (causal)
    gate: Tensor | None  # α of the graph gate (scalar); None when the graph is bypassed


class ATFTGATFAN(nn.Module):
    """The full model; see the module docstring for the path and the phases.

    ``forward(x, static_ids, date_index, edge_index=None, edge_attr=None)``:

    * ``x [B, window, n_features]`` float, finite (missing inputs are filled upstream);
    * ``static_ids [B, 2]`` long: sector id in [0, n_sectors), segment id in [0, n_segments);
    * ``date_index [B]`` long: which date (0..D−1) each row belongs to;
    * ``edge_index [2, E]`` long, ``edge_attr [E, 1]`` float (ρ): the batch's graph, edges only
      between rows of the same date; required in the ``gat`` and ``finetune`` phases.
    """

    def __init__(self, config: ModelConfig, phase: str = "baseline") -> None:
        super().__init__()
        c = config
        self.config = c
        self.static = StaticCovariateEncoder(c.n_sectors, c.n_segments, c.hidden, c.dropout)
        self.fan = FrequencyAdaptiveNormalization(
            c.n_features, c.hidden, c.fan_top_k, c.fan_include_dc
        )
        self.selection = VariableSelectionNetwork(
            c.n_features, c.hidden, c.dropout, context_size=c.hidden
        )
        self.temporal = TemporalFusionBlock(c.hidden, c.lstm_layers, c.attn_heads, c.dropout)
        self.graph = GraphAttentionBlock(c.hidden, c.gat_heads, c.gat_dropout, c.edge_dropout)
        self.heads = QuantileHeads(
            c.hidden, c.horizons, c.quantiles, c.initial_target_std, c.dropout
        )
        self.phase = PHASES["baseline"]
        self.set_phase(phase)

    def set_phase(self, name: str) -> None:
        try:
            self.phase = PHASES[name]
        except KeyError:
            raise ValueError(f"unknown phase {name!r}; phases: {list(PHASES)}") from None

    @property
    def needs_graph(self) -> bool:
        """Whether a forward pass needs the batch graph (the phase runs the GAT)."""
        return self.phase.uses_gat

    def parameter_count(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(
        self,
        x: Tensor,
        static_ids: Tensor,
        date_index: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> ModelOutput:
        self._check_inputs(x, static_ids, date_index)
        contexts, static_weights = self.static(static_ids)
        if self.phase.uses_fan:
            x_non, x = self.fan.decompose(x)
        selected, selection_weights = self.selection(x, contexts.selection)
        if self.phase.uses_fan:
            selected = self.fan(selected, x_non)
        # [B, hidden]: the forecast is made at the window's last step
        state, attention_weights = self.temporal(selected, contexts)
        gate = None
        if self.phase.uses_gat:
            if edge_index is None or edge_attr is None:
                raise ValueError(
                    f"phase {self.phase.name!r} needs the batch graph (edge_index, edge_attr)"
                )
            self._check_edges(edge_index, date_index)
            state, gate = self.graph(state, edge_index, edge_attr)
        quantiles = self.heads(state)
        return ModelOutput(
            quantiles=quantiles,
            point=quantiles[..., self.heads.median_index],
            selection_weights=selection_weights,
            static_weights=static_weights,
            attention_weights=attention_weights,
            gate=gate,
        )

    def _check_inputs(self, x: Tensor, static_ids: Tensor, date_index: Tensor) -> None:
        c = self.config
        if x.dim() != 3 or x.shape[1:] != (c.window, c.n_features):
            raise ValueError(
                f"x must be [B, window={c.window}, n_features={c.n_features}], got {tuple(x.shape)}"
            )
        if static_ids.shape[0] != x.shape[0] or date_index.shape != (x.shape[0],):
            raise ValueError(
                f"static_ids [B, 2] and date_index [B] must match x's B={x.shape[0]}, got "
                f"{tuple(static_ids.shape)} and {tuple(date_index.shape)}"
            )

    @staticmethod
    def _check_edges(edge_index: Tensor, date_index: Tensor) -> None:
        if edge_index.numel() == 0:
            return
        n = date_index.shape[0]
        if int(edge_index.min()) < 0 or int(edge_index.max()) >= n:
            raise ValueError(f"edge_index refers to rows outside [0, {n})")
        crossing = date_index[edge_index[0]] != date_index[edge_index[1]]
        if bool(crossing.any()):
            raise ValueError(
                f"{int(crossing.sum())} edges join stocks of different dates; "
                "the graph must be built per date"
            )
