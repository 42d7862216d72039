"""``equities/investor-types``: weekly trading by investor type and market section.

Each calendar week's turnover of a section (sum of the issues' ``Va``, in thousand yen) is
split between proprietary trading (~18 %) and brokerage clients (foreigners ~70 %,
individuals ~21 %, the rest small). Foreigners buy into rising markets and individuals lean
against them, so net balances follow the week's TOPIX move. Exact invariants per investor:
``Tot = Sell + Buy`` and ``Bal = Buy - Sell``; ``Brk`` is the sum of the client types and
``Tot*`` = ``Prop`` + ``Brk``. Sections follow the 2022-04-04 restructuring (TSE1st / TSE2nd /
TSEMothers / TSEJASDAQ, then TSEPrime / TSEStandard / TSEGrowth; TokyoNagoya throughout).
A week is published on the 4th session of the following week; from 2023-04-03 a few weeks get
a correction (same Section/StDate/EnDate, later PubDate).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.rng import stream
from atft_pipeline.sandbox.market.timeline import Timeline
from atft_pipeline.sandbox.market.universe import Universe

PUBLICATION_LAG = 4  # sessions after the week's last session (the following week's 4th)
CORRECTIONS_FROM = dt.date(2023, 4, 3)
CORRECTION_RATE, CORRECTION_LAG = 0.03, 5
PROPRIETARY_SHARE = 0.18
# Client types and their share of brokerage turnover (Brk = the sum of these).
CLIENT_SHARES = {
    "Ind": 0.21,
    "Frgn": 0.70,
    "SecCo": 0.004,
    "InvTr": 0.018,
    "BusCo": 0.012,
    "OthCo": 0.006,
    "InsCo": 0.003,
    "Bank": 0.002,
    "TrstBnk": 0.025,
    "OthFin": 0.005,
}
_SECTIONS_BEFORE = {
    "TSE1st": ("0101",),
    "TSE2nd": ("0102",),
    "TSEMothers": ("0104",),
    "TSEJASDAQ": ("0106", "0107"),
}
_SECTIONS_AFTER = {"TSEPrime": ("0111",), "TSEStandard": ("0112",), "TSEGrowth": ("0113",)}
_NAGOYA_EXTRA = 0.02  # TokyoNagoya adds the Nagoya exchange's small turnover


def _section_turnover(
    universe: Universe, timeline: Timeline, turnover: np.ndarray
) -> list[tuple[int, int, str, float]]:
    """(first, last, section, thousand yen) for every week and section with trading."""
    value = np.nan_to_num(turnover)
    out = []
    for first, last in timeline.weeks:
        sections = _SECTIONS_BEFORE if first < universe.migration_day else _SECTIONS_AFTER
        segments = universe.segments_at(first)
        weekly = value[first : last + 1].sum(axis=0) / 1000.0
        for name, codes in sections.items():
            total = weekly[np.isin(segments, codes)].sum()
            if total > 0:
                out.append((first, last, name, float(total)))
        out.append((first, last, "TokyoNagoya", float(weekly.sum() * (1 + _NAGOYA_EXTRA))))
    return out


def _flows(rng: np.random.Generator, volume: float, market_move: float) -> dict[str, float]:
    """Sell/Buy/Tot/Bal per investor type for one section-week (thousand yen, integers)."""
    clients = {k: s * (1 + 0.05 * rng.standard_normal()) for k, s in CLIENT_SHARES.items()}
    scale = (1 - PROPRIETARY_SHARE) / sum(clients.values())
    foreign_tilt = 0.04 * np.tanh(market_move / 0.02) + 0.01 * rng.standard_normal()
    tilt = {k: 0.03 * rng.standard_normal() for k in clients}
    tilt["Frgn"] = foreign_tilt
    tilt["Ind"] = (
        -0.6 * foreign_tilt * CLIENT_SHARES["Frgn"] / CLIENT_SHARES["Ind"]
        + 0.01 * rng.standard_normal()
    )
    out: dict[str, float] = {}

    def put(name: str, sell: float, buy: float) -> None:
        out.update(
            {
                f"{name}Sell": sell,
                f"{name}Buy": buy,
                f"{name}Tot": sell + buy,
                f"{name}Bal": buy - sell,
            }
        )

    for k, share in clients.items():
        one_side = volume * share * scale
        put(k, float(np.round(one_side * (1 - tilt[k]))), float(np.round(one_side * (1 + tilt[k]))))
    prop_tilt = 0.01 * rng.standard_normal()
    put(
        "Prop",
        float(np.round(volume * PROPRIETARY_SHARE * (1 - prop_tilt))),
        float(np.round(volume * PROPRIETARY_SHARE * (1 + prop_tilt))),
    )
    put("Brk", sum(out[f"{k}Sell"] for k in clients), sum(out[f"{k}Buy"] for k in clients))
    put("Tot", out["PropSell"] + out["BrkSell"], out["PropBuy"] + out["BrkBuy"])
    return out


def investor_types_table(
    config: MarketConfig,
    universe: Universe,
    timeline: Timeline,
    turnover: np.ndarray,
    topix_close: np.ndarray,
) -> pl.DataFrame:
    rng = stream(config.seed, "investor-types")
    t = len(timeline)
    rows = []
    for first, last, section, volume in _section_turnover(universe, timeline, turnover):
        pub = last + PUBLICATION_LAG
        before = topix_close[first - 1] if first else topix_close[0]
        flows = _flows(rng, volume, topix_close[last] / before - 1)
        if pub >= t:
            continue
        header = {
            "PubDate": timeline.days[pub],
            "StDate": timeline.days[first],
            "EnDate": timeline.days[last],
            "Section": section,
        }
        rows.append(header | flows)
        if (
            timeline.days[pub] >= CORRECTIONS_FROM
            and pub + CORRECTION_LAG < t
            and rng.random() < CORRECTION_RATE
        ):
            revised = _flows(
                rng, volume * (1 + 0.002 * rng.standard_normal()), topix_close[last] / before - 1
            )
            rows.append(header | {"PubDate": timeline.days[pub + CORRECTION_LAG]} | revised)
    return pl.DataFrame(rows)
