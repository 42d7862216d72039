"""Temporal processing of TFT: LSTM encoder, static enrichment, interpretable attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from atft_pipeline.model.grn import GateAddNorm, GatedResidualNetwork
from atft_pipeline.model.static import StaticContexts


def causal_mask(steps: int, device: torch.device | None = None) -> Tensor:
    """``[T, T]`` bool, True where the key step lies after the query step (not attendable)."""
    return torch.ones(steps, steps, dtype=torch.bool, device=device).triu(diagonal=1)


class LSTMEncoder(nn.Module):
    """LSTM over the window, started from static state, with a gated skip.

    Shapes: ``x [B, T, hidden]``, ``h0, c0 [B, hidden]`` (used for every layer)
    ``-> [B, T, hidden]`` = LayerNorm(x + GLU(LSTM(x))).
    """

    def __init__(self, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = layers
        self.lstm = nn.LSTM(
            hidden,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.gate = GateAddNorm(hidden, hidden, dropout)

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> Tensor:
        state = tuple(s.unsqueeze(0).expand(self.layers, -1, -1).contiguous() for s in (h0, c0))
        out, _ = self.lstm(x, state)
        return self.gate(out, x)


class InterpretableMultiHeadAttention(nn.Module):
    """TFT's interpretable self-attention with a causal mask.

    Each head has its own query/key projection of size ``hidden // heads`` but all heads share
    ONE value projection, and the head outputs are averaged (not concatenated). The output is
    therefore ``W_o · (mean_h A_h) · V``: the mean attention matrix alone explains which past
    steps were used. Step t only attends to steps ≤ t.

    Shapes: ``x [B, T, hidden] -> (out [B, Q, hidden], weights [B, heads, Q, T])`` for the
    last ``Q = n_queries`` steps as queries (all ``T`` by default); keys and values are always
    every step.
    """

    def __init__(self, hidden: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
        self.heads = heads
        self.head_size = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, self.head_size)
        self.out = nn.Linear(self.head_size, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, n_queries: int | None = None) -> tuple[Tensor, Tensor]:
        batch, steps, _ = x.shape
        n_queries = steps if n_queries is None else n_queries
        if not 1 <= n_queries <= steps:
            raise ValueError(f"n_queries must be in [1, {steps}], got {n_queries}")
        q = self.query(x[:, steps - n_queries :])
        q = q.view(batch, n_queries, self.heads, self.head_size).transpose(1, 2)
        k = self.key(x).view(batch, steps, self.heads, self.head_size).transpose(1, 2)
        v = self.value(x).unsqueeze(1)  # [B, 1, T, d]: shared by every head
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_size)  # [B, heads, Q, T]
        mask = causal_mask(steps, x.device)[steps - n_queries :]
        scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        heads = self.dropout(weights) @ v  # [B, heads, Q, d]
        return self.out(heads.mean(dim=1)), weights


class TemporalFusionBlock(nn.Module):
    """LSTM encoder -> static enrichment -> attention -> position-wise GRN (TFT's decoder),
    evaluated for the forecast step only.

    Shapes: ``x [B, T, hidden]`` + :class:`StaticContexts`
    ``-> (state [B, hidden], attention weights [B, heads, T])``: the decoder output at the
    window's last step (where the forecast is made) and that step's attention over the
    window. Everything after the attention's keys and values is position-wise, so the other
    steps' outputs would feed nothing; they are not computed.
    """

    def __init__(self, hidden: int, lstm_layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = LSTMEncoder(hidden, lstm_layers, dropout)
        self.enrichment = GatedResidualNetwork(hidden, hidden, hidden, dropout, context_size=hidden)
        self.attention = InterpretableMultiHeadAttention(hidden, heads, dropout)
        self.attention_gate = GateAddNorm(hidden, hidden, dropout)
        self.positionwise = GatedResidualNetwork(hidden, hidden, hidden, dropout)
        self.output_gate = GateAddNorm(hidden, hidden, dropout)

    def forward(self, x: Tensor, contexts: StaticContexts) -> tuple[Tensor, Tensor]:
        encoded = self.encoder(x, contexts.state_h, contexts.state_c)
        enriched = self.enrichment(encoded, contexts.enrichment)
        attended, weights = self.attention(enriched, n_queries=1)
        fused = self.positionwise(self.attention_gate(attended[:, 0], enriched[:, -1]))
        # The outer gate lets the model fall back to the LSTM features if attention is useless.
        return self.output_gate(fused, encoded[:, -1]), weights[:, :, 0]
