"""FAN — Frequency Adaptive Normalization (Ye et al., NeurIPS 2024), input-side variant.

Per instance and per channel, the input window is transformed with a real FFT over time;
the top-K frequencies by amplitude are the window's dominant non-stationary components.
Their inverse FFT, ``x_non``, is removed from the input: the backbone (variable selection
onwards) sees the residual ``x − x_non``. The removed components are not thrown away — they
re-enter as extra features through a small gated projection added to the backbone's first
representation.

Choices (MODEL_NOTES leaves them open):

* Input side only. The paper also predicts the non-stationary part of the *output* and adds
  it back under a "prior" loss; with scalar return targets there is no output series to
  decompose, so the removed components are model inputs instead.
* The zero frequency (the window mean) is excluded from the top-K by default: features are
  already normalised, and a feature's level over the window is information the backbone
  should keep. ``include_dc=True`` lets it compete like any other bin.
* Bins are ranked by their amplitude in the time domain — interior bins count twice
  (they stand for ±f), the DC and Nyquist bins once — so ranking is by the size of the
  sinusoid each bin contributes, not by the raw rFFT magnitude.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from atft_pipeline.model.grn import GateAddNorm


def fan_decompose(x: Tensor, k: int, include_dc: bool = False) -> tuple[Tensor, Tensor]:
    """Split ``x [..., T, C]`` (time on dim −2) into its top-``k`` frequency part and the rest.

    Returns ``(x_non, x_residual)``, both shaped like ``x``, with ``x_non + x_residual == x``;
    ``x_non`` is the inverse real DFT of exactly the ``k`` largest-amplitude bins of each
    (instance, channel). The transforms run in float32 whatever the input dtype (reduced
    precision would blur the ranking); results come back in ``x.dtype``. Differentiable in
    ``x`` (the bin choice is piecewise constant).

    The DFT of a window this short (tens of steps) is two small matrix products rather than
    an FFT, and they keep the time axis where it is: the spectrum comes out ``[B, 2·bins, C]``
    and goes back to ``[B, T, C]`` without a transpose. Bins whose amplitudes tie exactly
    (e.g. an all-zero channel, where every choice gives ``x_non = 0``) go to the lower
    frequency.
    """
    steps, channels = x.shape[-2], x.shape[-1]
    n_bins = steps // 2 + 1
    first = 0 if include_dc else 1
    if not 1 <= k <= n_bins - first:
        raise ValueError(
            f"fan k={k} must be in [1, {n_bins - first}] for a {steps}-step window "
            f"({'with' if include_dc else 'without'} the DC bin)"
        )
    signal = x.float()
    analysis, synthesis, amplitude_scale = _real_dft(steps, x.device)
    flat = signal.reshape(-1, steps, channels)
    # [B, 2·bins, C]: real parts then imaginary parts of each channel's spectrum
    spectrum = torch.matmul(analysis.t(), flat)
    real, imag = spectrum.detach().split(n_bins, dim=1)
    # Time-domain amplitude of each bin's sinusoid: 2|X|/T inside, |X|/T at DC and Nyquist.
    amplitude = torch.sqrt(real * real + imag * imag) * amplitude_scale[:, None]
    keep = _largest_bins(amplitude, k, first)
    kept = spectrum * keep.repeat(1, 2, 1)
    x_non = torch.matmul(synthesis, kept).view_as(signal)  # [B, T, C]
    return x_non.to(x.dtype), (signal - x_non).to(x.dtype)


# Up to this many candidate bins, ranking by pairwise comparison beats repeated argmax.
_PAIRWISE_MAX_CANDIDATES = 10


def _largest_bins(amplitude: Tensor, k: int, first: int) -> Tensor:
    """``keep [B, bins, C]``: whether bin i is among the ``k`` largest of bins ``first…`` of
    its (instance, channel), ties to the lower bin (a strict order on (−amplitude, bin)).

    With few candidates (short windows) each bin counts the candidates ranked above it:
    c·(c − 1) comparisons of contiguous ``[B, C]`` slices, where an argmax over a tiny bin
    axis would run one short reduction per (instance, channel). With many, k passes of
    argmax along a contiguous bin axis are cheaper.
    """
    candidates = range(first, amplitude.shape[1])
    keep = torch.zeros_like(amplitude, dtype=torch.bool)
    if len(candidates) <= _PAIRWISE_MAX_CANDIDATES:
        rows = amplitude.unbind(1)
        for i in candidates:
            above = torch.zeros_like(rows[i], dtype=torch.uint8)
            for j in candidates:
                if j != i:
                    above += rows[j] >= rows[i] if j < i else rows[j] > rows[i]
            keep[:, i] = above < k
        return keep
    ranked = amplitude.transpose(1, 2).contiguous()  # [B, C, bins]
    ranked[..., :first] = -math.inf
    chosen = keep.transpose(1, 2)  # a view: scattering into it fills ``keep``
    for _ in range(k):
        best = ranked.argmax(dim=-1, keepdim=True)
        chosen.scatter_(-1, best, True)
        ranked.scatter_(-1, best, -math.inf)
    return keep


def _real_dft(steps: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``analysis [T, 2·bins]`` (x ↦ real and imaginary parts of the rFFT), ``synthesis
    [T, 2·bins]`` (its inverse, the irfft of a half spectrum) and the amplitude scale per
    bin ``[bins]``, in float32 (built in float64)."""
    n_bins = steps // 2 + 1
    angle = (
        2.0
        * math.pi
        * torch.outer(torch.arange(steps, dtype=torch.float64), torch.arange(n_bins))
        / steps
    )  # [T, bins]
    cos, sin = torch.cos(angle), torch.sin(angle)
    scale = torch.full((n_bins,), 2.0 / steps, dtype=torch.float64)
    scale[0] = 1.0 / steps
    if steps % 2 == 0:
        scale[-1] = 1.0 / steps
    analysis = torch.cat([cos, -sin], dim=1)
    # irfft weights each interior bin twice (it stands for ±f) and DC / Nyquist once; the
    # imaginary parts at DC and Nyquist meet sin = 0, so they are ignored as irfft does
    synthesis = torch.cat([cos * scale, -sin * scale], dim=1)
    return tuple(m.to(device=device, dtype=torch.float32) for m in (analysis, synthesis, scale))


class FrequencyAdaptiveNormalization(nn.Module):
    """FAN's two halves around the variable selection network.

    * :meth:`decompose`: ``x [B, T, F] -> (x_non, x_residual)``, each ``[B, T, F]``; the
      residual goes to variable selection.
    * :meth:`forward`: ``(selected [B, T, hidden], x_non [B, T, F]) -> [B, T, hidden]`` =
      LayerNorm(selected + GLU(x_non)): the removed components re-enter as features through a
      gate that can close when they carry nothing.

    No dropout on the F-wide input components: it would erase raw features at random, and at
    F ≈ 330 its mask costs about as much as the projection itself.
    """

    def __init__(self, n_features: int, hidden: int, top_k: int, include_dc: bool = False) -> None:
        super().__init__()
        self.top_k = top_k
        self.include_dc = include_dc
        self.merge = GateAddNorm(n_features, hidden)

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return fan_decompose(x, self.top_k, self.include_dc)

    def forward(self, selected: Tensor, x_non: Tensor) -> Tensor:
        return self.merge(x_non, selected)
