"""``equities/master``: the point-in-time history of the listed-issue master.

One row per listed code on the first session of every month, plus a row whenever a code lists
or one of its attributes changes (sector reclassification, the 2022-04-04 segment migration,
the yearly ScaleCat review). The API's ``date=D`` snapshot is each code's latest row dated
<= D.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from atft_pipeline.jquants.reference import MARKET_SEGMENTS, SECTOR17, SECTOR33
from atft_pipeline.sandbox.market.arrays import forward_fill
from atft_pipeline.sandbox.market.timeline import Timeline
from atft_pipeline.sandbox.market.universe import SECTOR_CODES, TOPIX_SEGMENTS, Universe

MARGIN_NAMES = {"1": "信用", "2": "貸借", "3": "その他"}
# ProdCat (2026-09 spec): the product category of a listed issue. The synthetic market lists
# domestic common stocks only, so every row has this one category.
PRODUCT_CATEGORY_STOCK = "011"

# TOPIX New Index Series: share of TOPIX members (by market cap) in each size bucket.
_SCALE_BUCKETS = (
    ("TOPIX Core30", 0.014),
    ("TOPIX Large70", 0.033),
    ("TOPIX Mid400", 0.186),
    ("TOPIX Small 1", 0.23),
    ("TOPIX Small 2", 1.0),
)


def scale_categories(
    segments: np.ndarray, market_cap: np.ndarray, listed: np.ndarray
) -> np.ndarray:
    """``ScaleCat`` of every stock from its market-cap rank among TOPIX members ("-" otherwise)."""
    out = np.full(len(segments), "-", dtype=object)
    members = np.flatnonzero(
        listed & np.isin(segments, list(TOPIX_SEGMENTS)) & np.isfinite(market_cap)
    )
    if len(members) == 0:
        return out
    ranked = members[np.argsort(-market_cap[members], kind="stable")]
    share = (np.arange(len(ranked)) + 1) / len(ranked)
    bounds = np.cumsum([w for _, w in _SCALE_BUCKETS[:-1]])
    bucket = np.searchsorted(bounds, share, side="left")
    names = np.array([name for name, _ in _SCALE_BUCKETS], dtype=object)
    out[ranked] = names[np.minimum(bucket, len(names) - 1)]
    return out


def master_table(universe: Universe, timeline: Timeline, market_cap: np.ndarray) -> pl.DataFrame:
    """``equities/master`` history (one row per code per month start, plus rows on change).

    ``market_cap`` is the [T, N] close x shares matrix (NaN when not trading). ScaleCat is set
    from market caps at the start and re-ranked every year on the last session of September,
    effective from the first session of November (the TOPIX periodic review).
    """
    t = len(timeline)
    review_days = [
        i for i in range(1, t) if timeline.days[i].month == 11 and timeline.days[i - 1].month == 10
    ]
    cap_ffill = forward_fill(market_cap)
    scale = scale_categories(
        universe.segments_at(0), universe.shares * universe.price, universe.listing_day == 0
    )
    scale_by_day: dict[int, np.ndarray] = {0: scale}
    for day in review_days:
        september = [i for i in range(day) if timeline.days[i].month == 9]
        ref = september[-1] if september else day - 1
        scale_by_day[day] = scale_categories(
            universe.segments_at(ref), cap_ffill[ref], universe.listed_at(ref)
        )

    change_days = {
        0,
        universe.migration_day,
        *scale_by_day,
        *timeline.month_starts.tolist(),
        *universe.listing_day.tolist(),
        *(r.day for r in universe.reclassifications),
    }
    frames = []
    previous: dict[str, np.ndarray] | None = None
    current_scale = scale
    for day in sorted(d for d in change_days if 0 <= d < t):
        current_scale = scale_by_day.get(day, current_scale)
        # An issue not listed at the latest review (an IPO) has ScaleCat "-" until the next.
        listed = universe.listed_at(day)
        state = {
            "S33": np.array(SECTOR_CODES, dtype=object)[universe.sectors_at(day)],
            "Mkt": universe.segments_at(day),
            "ScaleCat": current_scale,
        }
        if previous is None or day in timeline.month_starts:
            rows = listed
        else:
            changed = np.zeros(universe.n, dtype=bool)
            for key, values in state.items():
                changed |= values != previous[key]
            rows = listed & (changed | (universe.listing_day == day))
        previous = state
        idx = np.flatnonzero(rows)
        if len(idx) == 0:
            continue
        s33 = state["S33"][idx]
        mkt = state["Mkt"][idx]
        frames.append(
            pl.DataFrame(
                {
                    "Date": [timeline.days[day]] * len(idx),
                    "Code": universe.codes[idx].tolist(),
                    "CoName": universe.name_ja[idx].tolist(),
                    "CoNameEn": universe.name_en[idx].tolist(),
                    "S17": [SECTOR33[s][2] for s in s33],
                    "S17Nm": [SECTOR17[SECTOR33[s][2]] for s in s33],
                    "S33": s33.tolist(),
                    "S33Nm": [SECTOR33[s][0] for s in s33],
                    "ScaleCat": state["ScaleCat"][idx].tolist(),
                    "Mkt": mkt.tolist(),
                    "MktNm": [MARKET_SEGMENTS[m][0] for m in mkt],
                    "Mrgn": universe.margin_code[idx].tolist(),
                    "MrgnNm": [MARGIN_NAMES[m] for m in universe.margin_code[idx]],
                    "ProdCat": [PRODUCT_CATEGORY_STOCK] * len(idx),
                }
            )
        )
    return pl.concat(frames)
