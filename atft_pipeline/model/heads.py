"""Per-horizon quantile heads whose quantiles can never cross."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from atft_pipeline.model.grn import GatedResidualNetwork


def non_crossing_quantiles(raw: Tensor, median_index: int) -> Tensor:
    """Map unconstrained ``raw [..., Q]`` to increasing quantiles ``[..., Q]``.

    ``raw[..., median_index]`` is the median itself; every other entry is the softplus gap to
    the neighbouring quantile on the median's side, accumulated outwards:
    q_j = m + Σ_{m<i≤j} softplus(raw_i) above the median, q_j = m − Σ_{j≤i<m} softplus(raw_i)
    below it. Gaps are positive, so quantiles never cross (a gap can round to 0 in float32
    only when its raw value is below about −88).
    """
    median = raw[..., median_index : median_index + 1]
    above = torch.cumsum(F.softplus(raw[..., median_index + 1 :]), dim=-1)
    below = torch.cumsum(F.softplus(raw[..., :median_index]).flip(-1), dim=-1).flip(-1)
    return torch.cat([median - below, median, median + above], dim=-1)


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class QuantileHeads(nn.Module):
    """Shared GRN, then one linear map per horizon to that horizon's quantiles.

    Shapes: ``x [B, hidden] -> quantiles [B, H, Q]`` (increasing along Q); the point forecast
    is ``quantiles[..., median_index]``. The per-horizon maps are the row blocks of one
    ``Linear(hidden, H·Q)`` (block h belongs to horizon h alone), computed in one product.

    Initialisation puts the outputs on the targets' scale: horizon h starts with predictions
    of spread ≈ σ_h = ``target_std[h]`` and quantile gaps of a N(0, σ_h²)
    (``ModelConfig.initial_target_std``: daily std·√h for returns, 1 for per-date scores).
    Without it the heads would start some 30× too wide for daily returns (unit-scale outputs)
    and spend many optimiser steps shrinking.
    """

    def __init__(
        self,
        hidden: int,
        horizons: Sequence[int],
        quantiles: Sequence[float],
        target_std: Sequence[float],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_horizons = len(horizons)
        self.n_quantiles = len(quantiles)
        self.median_index = list(quantiles).index(0.5)
        self.shared = GatedResidualNetwork(hidden, hidden, hidden, dropout)
        self.projection = nn.Linear(hidden, self.n_horizons * self.n_quantiles)
        if len(target_std) != self.n_horizons or any(s <= 0 for s in target_std):
            raise ValueError(f"need one positive target_std per horizon, got {target_std}")
        self._initialise(hidden, quantiles, target_std)

    @torch.no_grad()
    def _initialise(
        self, hidden: int, quantiles: Sequence[float], target_std: Sequence[float]
    ) -> None:
        sigma = torch.tensor(target_std, dtype=torch.float32)  # [H]
        z = torch.special.ndtri(torch.tensor(quantiles, dtype=torch.float64)).float()  # [Q]
        gaps = torch.zeros(self.n_quantiles)
        m = self.median_index
        gaps[m + 1 :] = z[m + 1 :] - z[m:-1]  # gap to the next quantile towards the median
        gaps[:m] = z[1 : m + 1] - z[:m]
        bias = _inverse_softplus(sigma.unsqueeze(-1) * gaps.clamp_min(1e-6))  # [H, Q]
        bias[:, m] = 0.0
        # The GRN output is layer-normalised (unit variance per channel): this bound gives
        # each horizon's outputs a standard deviation of σ_h.
        bound = (sigma * math.sqrt(3.0 / hidden)).repeat_interleave(self.n_quantiles)
        self.projection.weight.uniform_(-1.0, 1.0).mul_(bound.unsqueeze(-1))
        self.projection.bias.copy_(bias.flatten())

    def forward(self, x: Tensor) -> Tensor:
        raw = self.projection(self.shared(x)).unflatten(-1, (self.n_horizons, self.n_quantiles))
        return non_crossing_quantiles(raw, self.median_index)
