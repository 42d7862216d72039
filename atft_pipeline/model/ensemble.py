"""Several independently trained ATFT-GAT-FAN models used as one.

On the 120 training dates of the demo, one model's forecast moves with its seed (initial
weights, date order, dropout) by about as much as any architecture change does; averaging
independently seeded members removes that variance (BENCHMARKS.md, "Three seeds and their
ensemble"). The members share one :class:`ModelConfig` but may sit in different phases (each
member's best checkpoint is its own), so a member without the graph ignores the batch's edges.

The forecast is the members' mean quantile vector: the mean of increasing vectors is
increasing, so it is still a valid set of quantiles, and its median is the point forecast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from atft_pipeline.model.atft_gat_fan import ATFTGATFAN, ModelOutput
from atft_pipeline.model.config import ModelConfig


class ATFTEnsemble(nn.Module):
    """``forward`` takes what :class:`ATFTGATFAN` takes and returns one :class:`ModelOutput`
    whose tensors are the members' means (``gate``: the mean over the members with a graph,
    None when no member has one)."""

    def __init__(self, members: Sequence[ATFTGATFAN]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        configs = {m.config.model_dump_json() for m in members}
        if len(configs) != 1:
            raise ValueError("ensemble members must share one ModelConfig")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> ModelConfig:
        return self.members[0].config

    @property
    def needs_graph(self) -> bool:
        """Whether a forward pass needs the batch graph (some member is in a GAT phase)."""
        return any(m.needs_graph for m in self.members)

    @property
    def member_phases(self) -> list[str]:
        return [m.phase.name for m in self.members]

    def parameter_count(self, trainable_only: bool = False) -> int:
        return sum(m.parameter_count(trainable_only) for m in self.members)

    def forward(
        self,
        x: Tensor,
        static_ids: Tensor,
        date_index: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> ModelOutput:
        outputs = [m(x, static_ids, date_index, edge_index, edge_attr) for m in self.members]

        def mean(field: str) -> Tensor:
            return torch.stack([getattr(o, field) for o in outputs]).mean(dim=0)

        quantiles = mean("quantiles")
        gates = [o.gate for o in outputs if o.gate is not None]
        return ModelOutput(
            quantiles=quantiles,
            point=quantiles[..., self.members[0].heads.median_index],
            selection_weights=mean("selection_weights"),
            static_weights=mean("static_weights"),
            attention_weights=mean("attention_weights"),
            gate=torch.stack(gates).mean(dim=0) if gates else None,
        )
