"""Variable selection over hundreds of inputs at the cost of two matrix products.

TFT's variable selection network gives every variable its own GRN; with ~300 variables that
is ~50 M multiply-adds per sample and would make CPU training take hours (MODEL_NOTES,
"Compute budget"). Here instead:

* every variable f is embedded by its own linear map, e_f = x_f·W_f + b_f with
  ``W, b: [F, hidden]`` (a grouped linear layer, one weight row per variable);
* the selection weights come from ONE GRN over the flattened step input ``x_t [F]``
  (conditioned on the static context), softmax over the F variables;
* the selected representation Σ_f w_f·e_f is computed as ``(w ⊙ x) @ W + w @ b``, which is
  the same sum without ever materialising the ``[B, T, F, hidden]`` embedding tensor;
* one position-wise GRN then adds the non-linearity the per-variable GRNs would have.

Selection runs at every step (not only on the last one), so the weights ``[B, T, F]`` show
which inputs the model used when.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atft_pipeline.model.grn import GatedResidualNetwork


class VariableSelectionNetwork(nn.Module):
    """Shapes: ``x [B, T, F]``, ``context [B, context_size]`` ->
    ``(selected [B, T, hidden], weights [B, T, F])`` with weights summing to 1 over F."""

    def __init__(
        self, n_features: int, hidden: int, dropout: float = 0.0, context_size: int | None = None
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.embed_weight = nn.Parameter(torch.empty(n_features, hidden))
        self.embed_bias = nn.Parameter(torch.empty(n_features, hidden))
        self.selection = GatedResidualNetwork(n_features, hidden, n_features, dropout, context_size)
        self.transform = GatedResidualNetwork(hidden, hidden, hidden, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each per-variable map is a Linear(1, hidden): PyTorch's default for fan_in = 1.
        nn.init.uniform_(self.embed_weight, -1.0, 1.0)
        nn.init.uniform_(self.embed_bias, -1.0, 1.0)

    def embed(self, x: Tensor) -> Tensor:
        """The per-variable embeddings ``[B, T, F, hidden]`` (for inspection; forward avoids it)."""
        return x.unsqueeze(-1) * self.embed_weight + self.embed_bias

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.n_features:
            raise ValueError(f"expected {self.n_features} input variables, got {x.shape[-1]}")
        weights = torch.softmax(self.selection(x, context), dim=-1)
        selected = (weights * x) @ self.embed_weight + weights @ self.embed_bias
        return self.transform(selected), weights
