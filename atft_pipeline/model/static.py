"""Static covariate encoder: sector and market-segment embeddings -> four TFT contexts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from atft_pipeline.model.grn import GatedResidualNetwork


@dataclass(frozen=True)
class StaticContexts:
    """Each ``[B, hidden]``: variable selection, enrichment, LSTM initial h and c."""

    selection: Tensor
    enrichment: Tensor
    state_h: Tensor
    state_c: Tensor


class StaticCovariateEncoder(nn.Module):
    """Embeds the static ids of each stock and derives the contexts that condition the model.

    Shapes: ``static_ids [B, 2]`` (long: sector id, segment id) ``-> StaticContexts``, plus the
    selection weights over the two static variables ``[B, 2]``. As in TFT, the embeddings are
    combined by a softmax selection (one GRN over their concatenation) and four GRNs turn
    the result into the contexts.
    """

    def __init__(self, n_sectors: int, n_segments: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.vocab_sizes = (n_sectors, n_segments)
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden) for n in self.vocab_sizes)
        n_vars = len(self.vocab_sizes)
        self.selection = GatedResidualNetwork(n_vars * hidden, hidden, n_vars, dropout)
        self.contexts = nn.ModuleList(
            GatedResidualNetwork(hidden, hidden, hidden, dropout) for _ in range(4)
        )

    def forward(self, static_ids: Tensor) -> tuple[StaticContexts, Tensor]:
        if static_ids.dim() != 2 or static_ids.shape[1] != len(self.vocab_sizes):
            raise ValueError(
                f"static_ids must be [B, {len(self.vocab_sizes)}] (sector, segment), "
                f"got {tuple(static_ids.shape)}"
            )
        for column, (name, size) in enumerate(
            zip(("sector", "segment"), self.vocab_sizes, strict=True)
        ):
            ids = static_ids[:, column]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise ValueError(
                    f"{name} ids must lie in [0, {size}), got [{int(ids.min())}, {int(ids.max())}]"
                )
        embedded = torch.stack(
            [emb(static_ids[:, i]) for i, emb in enumerate(self.embeddings)], dim=1
        )  # [B, 2, hidden]
        weights = torch.softmax(self.selection(embedded.flatten(1)), dim=-1)  # [B, 2]
        combined = (weights.unsqueeze(-1) * embedded).sum(dim=1)  # [B, hidden]
        selection, enrichment, state_h, state_c = (grn(combined) for grn in self.contexts)
        return StaticContexts(selection, enrichment, state_h, state_c), weights
