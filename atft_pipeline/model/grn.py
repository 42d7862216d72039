"""Gating blocks of the Temporal Fusion Transformer (Lim et al., 2021).

All blocks act on the last dimension, so they accept ``[B, d]`` and ``[B, T, d]`` alike.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class GatedLinearUnit(nn.Module):
    """GLU(x) = (W₁x + b₁) ⊙ σ(W₂x + b₂), after dropout on the input.

    Shapes: ``x [..., input_size] -> [..., output_size]``. The sigmoid gate lets a block
    switch its own contribution off, which is what makes TFT's skips adaptive.
    """

    def __init__(self, input_size: int, output_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(input_size, 2 * output_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(self.linear(self.dropout(x)), dim=-1)


class GateAddNorm(nn.Module):
    """LayerNorm(skip + GLU(x)). Shapes: ``x [..., input_size]``, ``skip [..., output_size]``."""

    def __init__(self, input_size: int, output_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.glu = GatedLinearUnit(input_size, output_size, dropout)
        self.norm = nn.LayerNorm(output_size)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.norm(skip + self.glu(x))


class GatedResidualNetwork(nn.Module):
    """GRN(x, c) = LayerNorm(skip(x) + GLU(W₂ ELU(W₁x + W_c c + b₁) + b₂)).

    Shapes: ``x [..., input_size]``, optional context ``c [B, context_size]`` (broadcast over
    the time axis when ``x`` is ``[B, T, input_size]``) ``-> [..., output_size]``. ``skip`` is
    the identity when input and output sizes agree, else a linear projection.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        dropout: float = 0.0,
        context_size: int | None = None,
    ) -> None:
        super().__init__()
        self.skip = (
            nn.Identity() if input_size == output_size else nn.Linear(input_size, output_size)
        )
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.context = (
            None if context_size is None else nn.Linear(context_size, hidden_size, bias=False)
        )
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.gate = GateAddNorm(hidden_size, output_size, dropout)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        a = self.fc1(x)
        if self.context is not None:
            if context is None:
                raise ValueError(
                    "this GatedResidualNetwork was built with a context input; pass one"
                )
            c = self.context(context)
            a = a + (c.unsqueeze(-2) if x.dim() == c.dim() + 1 else c)
        elif context is not None:
            raise ValueError("this GatedResidualNetwork takes no context input")
        a = self.fc2(F.elu(a))
        return self.gate(a, self.skip(x))
