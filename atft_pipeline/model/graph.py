"""Cross-sectional message passing: GATv2 over the per-date stock graph, behind a learned gate.

The graph of a batch is the disjoint union of one graph per date (edges only between stocks
of the same date, edge attribute ρ = trailing return correlation). GATv2 (Brody et al., 2021)
scores neighbours dynamically, e_ij = aᵀ LeakyReLU(W [h_i ‖ h_j ‖ ρ_ij]).

The branch is mixed in through ``out = α·base + (1 − α)·gat`` with α = σ(g), g = 0 at init
(α = 0.5). An earlier design diluted the GAT output in a wide projection and its gradients
vanished; a scalar gate keeps the branch's share explicit and its gradient direct.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import dropout_edge


class GraphAttentionBlock(nn.Module):
    """Stacked GATv2 layers (ELU + dropout between them) with a learned residual gate.

    Shapes: ``base [N, hidden]``, ``edge_index [2, E]`` (long, source row 0 -> target row 1),
    ``edge_attr [E, 1]`` (ρ) ``-> (out [N, hidden], alpha [])``.

    Every layer but the last concatenates its heads (``hidden // heads`` channels each); the
    last averages them. Self loops are added inside each layer with ρ = 1. In training each
    edge is dropped with probability ``edge_dropout``. A stock with no incoming edge (after
    that drop) has no neighbour information, so it gets ``base`` unchanged.
    """

    def __init__(
        self,
        hidden: int,
        heads: tuple[int, ...] = (4, 2),
        dropout: float = 0.0,
        edge_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.edge_dropout = edge_dropout
        self.convs = nn.ModuleList()
        for i, n_heads in enumerate(heads):
            last = i == len(heads) - 1
            self.convs.append(
                GATv2Conv(
                    hidden,
                    hidden if last else hidden // n_heads,
                    heads=n_heads,
                    concat=not last,
                    dropout=dropout,
                    edge_dim=1,
                    add_self_loops=True,
                    fill_value=1.0,  # a stock's correlation with itself
                )
            )
        self.gate_logit = nn.Parameter(torch.zeros(()))

    @property
    def alpha(self) -> Tensor:
        return torch.sigmoid(self.gate_logit)

    def forward(self, base: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        n_nodes = base.shape[0]
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(edge_index.shape)}")
        if edge_attr.shape != (edge_index.shape[1], 1):
            expected = (edge_index.shape[1], 1)
            raise ValueError(f"edge_attr must be [E, 1] = {expected}, got {tuple(edge_attr.shape)}")
        edge_index, kept = dropout_edge(edge_index, p=self.edge_dropout, training=self.training)
        edge_attr = edge_attr[kept].to(base.dtype)
        h = base
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index, edge_attr)
            if i < len(self.convs) - 1:
                h = F.dropout(F.elu(h), p=self.dropout, training=self.training)
        alpha = self.alpha
        fused = alpha * base + (1.0 - alpha) * h
        source, target = edge_index
        has_neighbour = torch.zeros(n_nodes, dtype=torch.bool, device=base.device)
        has_neighbour[target[source != target]] = True
        return torch.where(has_neighbour.unsqueeze(-1), fused, base), alpha
