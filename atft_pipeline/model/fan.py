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

import torch
from torch import Tensor, nn

from atft_pipeline.model.grn import GateAddNorm


def fan_decompose(x: Tensor, k: int, include_dc: bool = False) -> tuple[Tensor, Tensor]:
    """Split ``x [..., T, C]`` (time on dim −2) into its top-``k`` frequency part and the rest.

    Returns ``(x_non, x_residual)``, both shaped like ``x``, with ``x_non + x_residual == x``;
    ``x_non`` is the inverse rFFT of exactly the ``k`` largest-amplitude bins of each
    (instance, channel). The FFT runs in float32 whatever the input dtype (reduced-precision
    FFTs are unsupported or inexact); results come back in ``x.dtype``. Differentiable in
    ``x`` (the bin choice is piecewise constant).
    """
    steps = x.shape[-2]
    n_bins = steps // 2 + 1
    candidates = n_bins - (0 if include_dc else 1)
    if not 1 <= k <= candidates:
        raise ValueError(
            f"fan k={k} must be in [1, {candidates}] for a {steps}-step window "
            f"({'with' if include_dc else 'without'} the DC bin)"
        )
    signal = x.float()
    spectrum = torch.fft.rfft(signal, dim=-2)  # [..., n_bins, C]
    # Time-domain amplitude of each bin's sinusoid: 2|X|/T inside, |X|/T at DC and Nyquist.
    scale = torch.full((n_bins, 1), 2.0 / steps, device=x.device)
    scale[0] = 1.0 / steps
    if steps % 2 == 0:
        scale[-1] = 1.0 / steps
    amplitude = spectrum.detach().abs() * scale
    if not include_dc:
        amplitude[..., 0, :] = -1.0
    top = amplitude.topk(k, dim=-2).indices
    keep = torch.zeros_like(amplitude, dtype=torch.bool).scatter_(-2, top, True)
    x_non = torch.fft.irfft(torch.where(keep, spectrum, 0), n=steps, dim=-2)
    return x_non.to(x.dtype), (signal - x_non).to(x.dtype)


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
