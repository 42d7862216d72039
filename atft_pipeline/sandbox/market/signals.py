"""The planted signals: a known function of what is public at the close of each session.

Five signals ``z_k(t)`` are computed from published data only (bars, published weekly margin,
statements) and the hidden peer graph; each feeds a geometric kernel

    G_k(t) = rho_k * G_k(t-1) + c_k * z_k(t)

and the planted drift of stock i on session s is ``vol_scale_i * sum_k G_k(s-2)``: the alpha
formed at the close of t moves returns from session t+2 on (the target window of DESIGN section
6 starts at the close of t+1). The same ``SignalEngine`` runs inside the simulation and, from
the published tables alone, in ``oracle.replay_oracle``, so "the oracle uses only public
information" is checked by construction, not by convention.

Signals (all cross-sectionally standardized over listed stocks and clipped to +/-3):

- ``reversal``: minus the sum of the last 5 sessions' de-meaned returns.
- ``momentum``: the sum of de-meaned returns from t-64 to t-5.
- ``margin``: minus the change of log(LongVol / ShrtVol) between a stock's last two published
  weekly margin reports, on the publication day only (weekly impulse).
- ``earnings``: the profit surprise of a statement (or the guidance change of a forecast
  revision) on its disclosure date, ``clip(surprise / SURPRISE_SCALE, -3, 3)`` (impulse).
- ``peer``: the weighted sum of the hidden peers' last 3 sessions' de-meaned returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from atft_pipeline.sandbox.market.config import MarketConfig, decay

SIGNALS = ("reversal", "momentum", "margin", "earnings", "peer")
REVERSAL_DAYS = 5
MOMENTUM_SKIP, MOMENTUM_DAYS = 5, 60
PEER_DAYS = 3
Z_CLIP = 3.0
# Profit surprises are reported relative to guidance; one sigma of surprise is 10 %.
SURPRISE_SCALE = 0.10
PROGRESS = {"1Q": 0.25, "2Q": 0.5, "3Q": 0.75, "FY": 1.0}
_HISTORY = MOMENTUM_SKIP + MOMENTUM_DAYS


@dataclass(frozen=True)
class SignalParams:
    """The oracle's structural knowledge: kernels, hidden peer graph and drift scale."""

    impulse: np.ndarray  # c_k
    decay: np.ndarray  # rho_k
    peers: np.ndarray  # [N, n_peers]
    peer_weights: np.ndarray  # [N, n_peers]
    vol_scale: np.ndarray  # [N]

    @classmethod
    def from_config(
        cls,
        config: MarketConfig,
        peers: np.ndarray,
        peer_weights: np.ndarray,
        vol_scale: np.ndarray,
    ) -> SignalParams:
        strength = np.array([getattr(config, f"{s}_strength") for s in SIGNALS])
        rho = np.array([decay(getattr(config, f"{s}_half_life")) for s in SIGNALS])
        return cls(strength * (1.0 - rho), rho, peers, peer_weights, vol_scale)


def cross_sectional_z(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - mean) / std over ``mask``, clipped to +/-3; zero outside the mask or if degenerate."""
    out = np.zeros_like(x)
    if mask.sum() < 3:
        return out
    values = x[mask]
    sd = values.std()
    if not sd > 0:
        return out
    out[mask] = np.clip((values - values.mean()) / sd, -Z_CLIP, Z_CLIP)
    return out


class SignalEngine:
    """Causal signal state, advanced one session at a time from that session's public data."""

    def __init__(self, params: SignalParams) -> None:
        n = len(params.vol_scale)
        self.params = params
        self._returns = np.zeros((_HISTORY, n))  # ring buffer of de-meaned returns
        self._pos = -1
        self._last_close = np.full(n, np.nan)
        self._pending_factor = np.ones(n)
        self._last_log_ratio = np.full(n, np.nan)
        self.state = np.zeros((len(SIGNALS), n))  # G_k

    def _lagged_sum(self, first: int, count: int) -> np.ndarray:
        rows = (self._pos - np.arange(first, first + count)) % _HISTORY
        return self._returns[rows].sum(axis=0)

    def step(
        self,
        close: np.ndarray,
        adj_factor: np.ndarray,
        listed: np.ndarray,
        margin_long: np.ndarray,
        margin_short: np.ndarray,
        earnings_z: np.ndarray,
    ) -> np.ndarray:
        """Advance to the close of the next session and return its signals ``z`` [K, N].

        ``close``: raw close (NaN if no trade or no bar); ``adj_factor``: the bar's AdjFactor
        (1 without a bar); ``listed``: a bar row exists; ``margin_*``: weekly margin values
        *published* this session (NaN otherwise); ``earnings_z``: statement surprises
        disclosed this session (0 otherwise).
        """
        # Split-consistent close-to-close return since the last traded close.
        factor = self._pending_factor * adj_factor
        ret = close / (self._last_close * factor) - 1.0
        traded = np.isfinite(close)
        self._last_close = np.where(traded, close, self._last_close)
        self._pending_factor = np.where(traded, 1.0, factor)
        valid = np.isfinite(ret)
        demeaned = np.zeros_like(ret)
        if valid.any():
            demeaned[valid] = ret[valid] - ret[valid].mean()
        self._pos = (self._pos + 1) % _HISTORY
        self._returns[self._pos] = demeaned

        recent = self._lagged_sum(0, REVERSAL_DAYS)
        momentum = self._lagged_sum(MOMENTUM_SKIP, MOMENTUM_DAYS)
        peer_move = self._lagged_sum(0, PEER_DAYS)
        lead = (self.params.peer_weights * peer_move[self.params.peers]).sum(axis=1)

        published = np.isfinite(margin_long) & np.isfinite(margin_short)
        log_ratio = np.full_like(ret, np.nan)
        log_ratio[published] = np.log(margin_long[published] / margin_short[published])
        change = log_ratio - self._last_log_ratio
        self._last_log_ratio = np.where(published, log_ratio, self._last_log_ratio)

        z = np.stack(
            [
                -cross_sectional_z(recent, listed),
                cross_sectional_z(momentum, listed),
                -cross_sectional_z(np.nan_to_num(change), published & np.isfinite(change) & listed),
                np.where(listed, earnings_z, 0.0),
                cross_sectional_z(lead, listed),
            ]
        )
        self.state = self.params.decay[:, None] * self.state + self.params.impulse[:, None] * z
        return z


def earnings_surprises(fins: pl.DataFrame) -> pl.DataFrame:
    """Signal value ``z`` of every statement row that carries news about profit guidance.

    Guidance for a fiscal year is the latest earlier row's ``FOP`` (same ``CurFYSt``) or
    ``NxFOP`` (``NxtFYSt`` equal to it), earlier meaning a smaller ``DiscNo``. A financial
    statement's surprise is ``(OP - p * G) / (p * |G|)`` with p = 0.25/0.5/0.75/1 for
    1Q/2Q/3Q/FY (year-to-date progress against guidance); a forecast revision's is
    ``(FOP - G) / |G|``. ``z = clip(surprise / SURPRISE_SCALE, -3, 3)``; rows without earlier
    guidance get no value. Only rows of ``fins`` are used, each only with rows before it.
    """
    base = fins.select(
        "DiscDate",
        "DiscTime",
        "Code",
        "DiscNo",
        "DocType",
        "CurPerType",
        "CurFYSt",
        "NxtFYSt",
        "OP",
        "FOP",
        "NxFOP",
    ).with_columns(pl.col("DiscNo").cast(pl.Int64).alias("_order"))
    guidance = pl.concat(
        [
            base.filter(pl.col("FOP").is_not_null() & pl.col("CurFYSt").is_not_null()).select(
                "Code", pl.col("CurFYSt").alias("_fy"), "_order", pl.col("FOP").alias("_guidance")
            ),
            base.filter(pl.col("NxFOP").is_not_null() & pl.col("NxtFYSt").is_not_null()).select(
                "Code", pl.col("NxtFYSt").alias("_fy"), "_order", pl.col("NxFOP").alias("_guidance")
            ),
        ]
    ).sort("_order")
    rows = base.with_columns(pl.col("CurFYSt").alias("_fy")).sort("_order")
    joined = rows.join_asof(
        guidance,
        on="_order",
        by=["Code", "_fy"],
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    g = pl.col("_guidance")
    progress = pl.col("CurPerType").replace_strict(PROGRESS, default=None, return_dtype=pl.Float64)
    surprise = (
        pl.when(pl.col("DocType").str.contains("FinancialStatements"))
        .then((pl.col("OP") - progress * g) / (progress * g.abs()))
        .when(pl.col("DocType") == "EarnForecastRevision")
        .then((pl.col("FOP") - g) / g.abs())
    )
    return (
        joined.with_columns((surprise / SURPRISE_SCALE).clip(-Z_CLIP, Z_CLIP).alias("z"))
        .filter(pl.col("z").is_not_null() & pl.col("z").is_finite() & (g.abs() > 0))
        .select("DiscDate", "DiscTime", "Code", "DiscNo", "z")
        .sort("DiscNo")
    )


def earnings_events(fins: pl.DataFrame) -> pl.DataFrame:
    """One ``z`` per (DiscDate, Code): the latest disclosure of the day (largest DiscNo)."""
    return (
        earnings_surprises(fins)
        .sort("DiscNo")
        .group_by("DiscDate", "Code", maintain_order=True)
        .agg(pl.col("z").last(), pl.col("DiscTime").last())
        .sort("DiscDate", "Code")
    )
