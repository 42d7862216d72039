"""Earnings statements (``fins/summary``) and the earnings calendar.

Each issue reports 1Q/2Q/3Q/FY results 30-55 days after each quarter end of its fiscal year
(March year-ends dominate), at a habitual time of day (most at or after the 15:00 close).
Figures are cumulative year-to-date. Operating-profit guidance drives everything: a quarter's
YTD operating profit is ``progress x guidance x (1 + SURPRISE_SCALE x u)`` with a fat-tailed
standardized surprise ``u``, the guidance is then (sometimes) revised toward the surprise,
an FY report sets next year's guidance (``NxF*`` fields), and between reports a few
``EarnForecastRevision`` / ``DividendForecastRevision`` documents and rare restatements (a
second disclosure of the same period with different numbers) appear. The surprise that the
planted post-earnings drift uses is recovered from the published rows by
``signals.earnings_surprises``; nothing here feeds the drift directly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from atft_pipeline.jquants.endpoints import ENDPOINTS
from atft_pipeline.jquants.reference import SECTOR33
from atft_pipeline.sandbox.market.actions import CorporateActions
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.rng import stream, student_t
from atft_pipeline.sandbox.market.signals import SURPRISE_SCALE
from atft_pipeline.sandbox.market.timeline import Timeline, close_time
from atft_pipeline.sandbox.market.universe import SECTOR_CODES, Universe

_EPOCH = dt.date(1970, 1, 1).toordinal()
_PERIOD = {1: "1Q", 2: "2Q", 3: "3Q", 4: "FY"}
_FQ_JA = {"1Q": "第1四半期", "2Q": "第2四半期", "3Q": "第3四半期", "FY": "本決算"}
_SECTION_JA = {
    "0101": "市場第一部",
    "0102": "市場第二部",
    "0104": "マザーズ",
    "0106": "JASDAQ",
    "0107": "JASDAQ",
    "0111": "プライム",
    "0112": "スタンダード",
    "0113": "グロース",
}
_CALENDAR_FYE = frozenset({3, 9})  # the earnings calendar covers March/September year-ends
_SIG_CHG_FIELD_FROM = dt.date(2024, 7, 22)  # SigChgInC exists from this date
REVISION_RATE, DIVIDEND_REVISION_RATE, RESTATEMENT_RATE = 0.07, 0.015, 0.004  # per quarter
# Shareholders' equity (ShEq) is equity less non-controlling interests, which only
# consolidated groups have; a fixed share keeps the random streams of the market unchanged.
_SHAREHOLDERS_SHARE_CONSOLIDATED = 0.96
_KEEP_GUIDANCE = 0.6  # share of quarterly reports that leave the full-year guidance unchanged
KIND_REPORT, KIND_REVISION, KIND_DIVIDEND_REVISION, KIND_RESTATEMENT = 0, 1, 2, 3
_REVISION_TIMES = np.array(["15:00:00", "15:30:00", "16:00:00", "17:00:00"], dtype=object)


@dataclass(frozen=True)
class Statements:
    summary: pl.DataFrame  # fins/summary
    earnings_calendar: pl.DataFrame  # equities/earnings-calendar
    # DiscNo -> the document's latent standardized news (surprise u of a report, v of a
    # forecast revision, 0 for other documents). It sets the announcement-day price move;
    # being symmetric and independent of everything earlier, that move is unpredictable.
    news: pl.DataFrame


def _month_end(month_index: np.ndarray) -> np.ndarray:
    """Last day (ordinal) of the month ``year * 12 + month - 1``."""
    months = (month_index - 1970 * 12).astype("datetime64[M]")
    return ((months + 1).astype("datetime64[D]") - 1).astype(np.int64) + _EPOCH


def _month_start(month_index: np.ndarray) -> np.ndarray:
    months = (month_index - 1970 * 12).astype("datetime64[M]")
    return months.astype("datetime64[D]").astype(np.int64) + _EPOCH


def _money(x: np.ndarray) -> np.ndarray:
    """Statement amounts are in yen, rounded to millions."""
    return np.round(x / 1e6) * 1e6


def _roe(net_income: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Return on shareholders' equity in percent (two decimals), null without positive equity."""
    positive = equity > 0
    ratio = 100 * net_income / np.where(positive, equity, 1.0)
    return np.where(positive, np.round(ratio, 2), np.nan)


def _series(name: str, values: np.ndarray) -> pl.Series:
    if values.dtype.kind == "f":
        return pl.Series(name, values, nan_to_null=True)
    if values.dtype.kind == "O":
        return pl.Series(name, values.tolist(), dtype=pl.String)
    return pl.Series(name, values)


class _Rows:
    """Column-wise accumulator of statement rows (numpy arrays per batch)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, np.ndarray]] = []

    def add(self, columns: dict[str, np.ndarray]) -> None:
        n = len(next(iter(columns.values())))
        if n:
            self.batches.append(columns)

    def frame(self) -> pl.DataFrame:
        frames = [pl.DataFrame([_series(k, v) for k, v in b.items()]) for b in self.batches]
        return pl.concat(frames, how="diagonal_relaxed")


def generate_statements(
    config: MarketConfig, universe: Universe, timeline: Timeline, actions: CorporateActions
) -> Statements:
    rng = stream(config.seed, "fundamentals")
    n, t = universe.n, len(timeline)
    first_year, last_year = config.start.year - 1, config.end.year + 1
    n_slots = 4 * (last_year - first_year + 1)

    # Fixed company economics.
    cap0 = universe.shares * universe.price
    sales = cap0 * np.exp(rng.normal(np.log(0.9), 0.6, n))
    op_margin = np.clip(np.exp(rng.normal(np.log(0.065), 0.5, n)), 0.01, 0.35)
    growth = rng.normal(0.03, 0.04, n)
    payout = rng.uniform(0.2, 0.45, n)
    treasury = rng.uniform(0.005, 0.06, n)
    assets_to_sales = rng.uniform(0.8, 2.0, n)
    equity_ratio = rng.uniform(0.25, 0.7, n)
    cash_ratio = rng.uniform(0.05, 0.25, n)
    parent_share = rng.uniform(0.4, 0.8, n)
    dilutive = rng.random(n) < 0.3
    base_lag = rng.integers(30, 45, n)
    ifrs_like = np.isin(universe.accounting, ["Consolidated_IFRS", "Consolidated_US"])

    # Quarter grid: slot k is quarter q = k % 4 + 1 of the fiscal year ending in
    # (first_year + k // 4, fye_month).
    k = np.arange(n_slots)
    q = k % 4 + 1
    fy_end_year = first_year + k // 4
    fye = universe.fye_month[:, None]
    fy_start_month = (fy_end_year[None, :] - 1) * 12 + fye  # month index of the FY start
    period_end = _month_end(fy_start_month - 1 + 3 * q[None, :])
    fy_start = _month_start(fy_start_month)
    fy_end = _month_end(fy_start_month + 11)
    next_fy_start, next_fy_end = _month_start(fy_start_month + 12), _month_end(fy_start_month + 23)
    lag = (
        base_lag[:, None]
        + rng.integers(-3, 4, (n, n_slots))
        + np.where(q[None, :] == 4, rng.integers(6, 11, (n, n_slots)), 0)
    )
    disc_ordinal = period_end + lag
    disc_day = np.searchsorted(timeline.ordinals, disc_ordinal, side="left")
    start_ordinal = config.start.toordinal()
    published = (disc_ordinal >= start_ordinal) & (disc_day < t)
    published &= (disc_day >= universe.listing_day[:, None]) & (
        disc_day <= universe.delisting_day[:, None]
    )
    # Sessions available until the next report (for revisions / restatements in between).
    next_day = np.c_[disc_day[:, 1:], np.full(n, t + 40)]

    rows = _Rows()
    guidance = sales * op_margin  # operating-profit guidance of the current fiscal year
    guidance_sales = sales.copy()
    stock_idx = np.arange(n)
    for slot in range(n_slots):
        qq = int(q[slot])
        progress = qq / 4
        u = np.clip(student_t(rng, 5.0, n), -4, 4)
        eps_noise = rng.standard_normal((6, n))
        op_ytd = progress * guidance * (1 + SURPRISE_SCALE * u)
        sales_ytd = progress * guidance_sales * (1 + 0.3 * SURPRISE_SCALE * u + 0.01 * eps_noise[0])
        ordinary = op_ytd * (1 + 0.03 + 0.02 * eps_noise[1])
        net = np.where(ifrs_like, op_ytd * 0.70, ordinary * 0.68) * (1 + 0.03 * eps_noise[2])
        if qq < 4:
            keep = rng.random(n) < _KEEP_GUIDANCE
            new_guidance = np.where(
                keep, guidance, guidance * (1 + 0.5 * SURPRISE_SCALE * u + 0.02 * eps_noise[3])
            )
            new_sales = np.where(
                keep,
                guidance_sales,
                guidance_sales * (1 + 0.15 * SURPRISE_SCALE * u + 0.01 * eps_noise[4]),
            )
        else:
            new_guidance = op_ytd * np.exp(rng.normal(growth, 0.06))
            new_sales = sales_ytd * np.exp(rng.normal(growth, 0.03))

        sel = published[:, slot]
        idx = stock_idx[sel]
        day = disc_day[sel, slot]
        shares_out = actions.shares_on(universe, idx, day)
        treasury_shares = np.round(shares_out * treasury[idx], -2)
        avg_shares = shares_out - treasury_shares
        is_fy = qq == 4
        fy_st, fy_en = fy_start[sel, slot], fy_end[sel, slot]
        ta = _money(assets_to_sales[idx] * guidance_sales[idx] * (1 + 0.01 * eps_noise[5][idx]))
        eq = _money(ta * equity_ratio[idx])
        fop, fsales = new_guidance[idx], new_sales[idx]
        f_ordinary = np.where(ifrs_like[idx], np.nan, fop * 1.03)
        f_net = np.where(ifrs_like[idx], fop * 0.70, fop * 1.03 * 0.68)
        f_eps = np.round(f_net / avg_shares, 2)
        eps = np.round(net[idx] / avg_shares, 2)
        div_ann_forecast = np.maximum(np.round(payout[idx] * f_eps), 0.0)
        div_ann = np.maximum(np.round(payout[idx] * eps), 0.0)
        nan = np.full(len(idx), np.nan)
        cf = qq in (2, 4)
        consolidated = np.char.startswith(universe.accounting[idx].astype(str), "Consolidated")
        sh_eq = np.where(consolidated, _money(eq * _SHAREHOLDERS_SHARE_CONSOLIDATED), eq)
        columns: dict[str, np.ndarray] = {
            "DiscDate": day,
            "DiscTime": universe.disc_time[idx],
            "_stock": idx,
            "_kind": np.full(len(idx), KIND_REPORT),
            "_news": np.clip(u[idx], -3, 3),
            "DocType": np.array(
                [f"{_PERIOD[qq]}FinancialStatements_{a}" for a in universe.accounting[idx]],
                dtype=object,
            ),
            "CurPerType": np.full(len(idx), _PERIOD[qq], dtype=object),
            "CurPerSt": fy_st,
            "CurPerEn": period_end[sel, slot],
            "CurFYSt": fy_st,
            "CurFYEn": fy_en,
            "NxtFYSt": next_fy_start[sel, slot] if is_fy else nan,
            "NxtFYEn": next_fy_end[sel, slot] if is_fy else nan,
            "Sales": _money(sales_ytd[idx]),
            "OP": _money(op_ytd[idx]),
            "OdP": np.where(ifrs_like[idx], np.nan, _money(ordinary[idx])),
            "NP": _money(net[idx]),
            "EPS": eps,
            "DEPS": np.where(dilutive[idx], np.round(eps * 0.99, 2), np.nan),
            "TA": ta,
            "Eq": eq,
            "EqAR": np.round(eq / ta, 3),
            "ShEq": sh_eq,
            "ROE": _roe(net[idx], sh_eq) if is_fy else nan,
            "BPS": np.round(eq / avg_shares, 2) if is_fy else nan,
            "CFO": _money(net[idx] * 1.3) if cf else nan,
            "CFI": _money(-net[idx] * 0.8) if cf else nan,
            "CFF": _money(-net[idx] * 0.3) if cf else nan,
            "CashEq": _money(ta * cash_ratio[idx]) if cf else nan,
            "Div2Q": np.floor(div_ann / 2)
            if is_fy
            else (np.floor(div_ann_forecast / 2) if qq >= 2 else nan),
            "DivFY": div_ann - np.floor(div_ann / 2) if is_fy else nan,
            "DivAnn": div_ann if is_fy else nan,
            "DivTotalAnn": _money(div_ann * avg_shares) if is_fy else nan,
            "PayoutRatioAnn": np.where(
                eps > 0, np.round(100 * div_ann / np.where(eps > 0, eps, 1), 1), np.nan
            )
            if is_fy
            else nan,
            "ShOutFY": shares_out,
            "TrShFY": treasury_shares,
            "AvgSh": avg_shares,
            "MatChgSub": np.zeros(len(idx), dtype=bool),
            "ChgByASRev": np.zeros(len(idx), dtype=bool),
            "ChgNoASRev": np.zeros(len(idx), dtype=bool),
            "ChgAcEst": rng.random(len(idx)) < 0.02,
            "RetroRst": np.zeros(len(idx), dtype=bool),
        }
        prefix = "Nx" if is_fy else ""
        half = {
            f"{prefix}FSales2Q": _money(fsales / 2),
            f"{prefix}FOP2Q": _money(fop / 2),
            f"{prefix}FOdP2Q": _money(f_ordinary / 2),
            ("NxFNp2Q" if is_fy else "FNP2Q"): _money(f_net / 2),
            f"{prefix}FEPS2Q": np.round(f_eps / 2, 2),
        }
        full = {
            f"{prefix}FSales": _money(fsales),
            f"{prefix}FOP": _money(fop),
            f"{prefix}FOdP": _money(f_ordinary),
            ("NxFNp" if is_fy else "FNP"): _money(f_net),
            f"{prefix}FEPS": f_eps,
            f"{prefix}FDivFY": div_ann_forecast - np.floor(div_ann_forecast / 2),
            f"{prefix}FDivAnn": div_ann_forecast,
            f"{prefix}FPayoutRatioAnn": np.where(
                f_eps > 0,
                np.round(100 * div_ann_forecast / np.where(f_eps > 0, f_eps, 1), 1),
                np.nan,
            ),
        }
        if qq in (1, 4):  # half-year guidance is given at the year's first report
            columns.update(half)
            columns[f"{prefix}FDiv2Q"] = np.floor(div_ann_forecast / 2)
        columns.update(full)
        if is_fy:
            parent = universe.accounting[idx] == "Consolidated_JP"
            share = parent_share[idx]
            for name, value in (
                ("NCSales", sales_ytd),
                ("NCOP", op_ytd),
                ("NCOdP", ordinary),
                ("NCNP", net),
            ):
                columns[name] = np.where(parent, _money(value[idx] * share), np.nan)
            columns["NCEPS"] = np.where(parent, np.round(columns["NCNP"] / avg_shares, 2), np.nan)
            columns["NCTA"] = np.where(parent, _money(ta * share), np.nan)
            columns["NCEq"] = np.where(parent, _money(eq * share), np.nan)
            columns["NCEqAR"] = np.where(
                parent, np.round(columns["NCEq"] / columns["NCTA"], 3), np.nan
            )
            columns["NCBPS"] = np.where(parent, np.round(columns["NCEq"] / avg_shares, 2), np.nan)
            # A parent company alone has no non-controlling interests: NCShEq = NCEq.
            columns["NCShEq"] = columns["NCEq"]
            columns["NCROE"] = np.where(parent, _roe(columns["NCNP"], columns["NCEq"]), np.nan)
        rows.add(columns)

        # Documents between this report and the next one.
        gap_first = disc_day[:, slot] + 2
        gap_last = next_day[:, slot] - 2
        room = published[:, slot] & (gap_last > gap_first)
        revised = room & (rng.random(n) < REVISION_RATE)
        v = np.clip(rng.standard_normal(n), -3, 3)
        new_guidance = np.where(revised, new_guidance * (1 + SURPRISE_SCALE * v), new_guidance)
        new_sales = np.where(revised, new_sales * (1 + 0.3 * SURPRISE_SCALE * v), new_sales)
        # After an FY report the guidance is for the next fiscal year.
        guided_st = next_fy_start[:, slot] if is_fy else fy_start[:, slot]
        guided_en = next_fy_end[:, slot] if is_fy else fy_end[:, slot]
        _add_revision(
            rows,
            rng,
            universe,
            actions,
            revised,
            gap_first,
            gap_last,
            t,
            guided_st,
            guided_en,
            new_guidance,
            new_sales,
            v,
            ifrs_like,
            treasury,
            payout,
        )
        div_revised = room & ~revised & (rng.random(n) < DIVIDEND_REVISION_RATE)
        _add_dividend_revision(
            rows, rng, universe, div_revised, gap_first, gap_last, t, guided_st, guided_en
        )
        restated = room & (rng.random(n) < RESTATEMENT_RATE)
        if restated.any():
            _add_restatement(rows, rng, columns, sel, restated, gap_first, gap_last, t)
        guidance, guidance_sales = new_guidance, new_sales

    raw = rows.frame()
    if config.event_window_start is not None:
        raw = _plant_window_events(raw, config, timeline)
    summary, meta = _finish_summary(raw, universe, timeline)
    news = meta.select("DiscNo", pl.col("_news").alias("news"))
    return Statements(summary, _earnings_calendar(summary, meta, universe), news)


def _gap_day(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    return first + np.floor(rng.random(len(first)) * (last - first)).astype(np.int64)


def _add_revision(
    rows: _Rows,
    rng: np.random.Generator,
    universe: Universe,
    actions: CorporateActions,
    mask: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    t: int,
    fy_st: np.ndarray,
    fy_en: np.ndarray,
    guidance: np.ndarray,
    guidance_sales: np.ndarray,
    news: np.ndarray,
    ifrs_like: np.ndarray,
    treasury: np.ndarray,
    payout: np.ndarray,
) -> None:
    idx = np.flatnonzero(mask)
    day = _gap_day(rng, first[idx], last[idx])
    keep = (day < t) & (day <= universe.delisting_day[idx])
    idx, day = idx[keep], day[keep]
    avg_shares = actions.shares_on(universe, idx, day) * (1 - treasury[idx])
    f_net = np.where(ifrs_like[idx], guidance[idx] * 0.70, guidance[idx] * 1.03 * 0.68)
    rows.add(
        {
            "DiscDate": day,
            "DiscTime": _REVISION_TIMES[rng.integers(0, 4, len(idx))],
            "_stock": idx,
            "_kind": np.full(len(idx), KIND_REVISION),
            "_news": news[idx],
            "DocType": np.full(len(idx), "EarnForecastRevision", dtype=object),
            "CurPerType": np.full(len(idx), "FY", dtype=object),
            "CurPerSt": fy_st[idx],
            "CurPerEn": fy_en[idx],
            "CurFYSt": fy_st[idx],
            "CurFYEn": fy_en[idx],
            "FSales": _money(guidance_sales[idx]),
            "FOP": _money(guidance[idx]),
            "FOdP": np.where(ifrs_like[idx], np.nan, _money(guidance[idx] * 1.03)),
            "FNP": _money(f_net),
            "FEPS": np.round(f_net / avg_shares, 2),
            "FDivAnn": np.maximum(np.round(payout[idx] * f_net / avg_shares), 0.0),
        }
    )


def _add_dividend_revision(
    rows: _Rows,
    rng: np.random.Generator,
    universe: Universe,
    mask: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    t: int,
    fy_st: np.ndarray,
    fy_en: np.ndarray,
) -> None:
    idx = np.flatnonzero(mask)
    day = _gap_day(rng, first[idx], last[idx])
    keep = (day < t) & (day <= universe.delisting_day[idx])
    idx, day = idx[keep], day[keep]
    dps = np.round(rng.uniform(5, 80, len(idx)))
    rows.add(
        {
            "DiscDate": day,
            "DiscTime": _REVISION_TIMES[rng.integers(0, 4, len(idx))],
            "_stock": idx,
            "_kind": np.full(len(idx), KIND_DIVIDEND_REVISION),
            "_news": np.zeros(len(idx)),
            "DocType": np.full(len(idx), "DividendForecastRevision", dtype=object),
            "CurPerType": np.full(len(idx), "FY", dtype=object),
            "CurPerSt": fy_st[idx],
            "CurPerEn": fy_en[idx],
            "CurFYSt": fy_st[idx],
            "CurFYEn": fy_en[idx],
            "FDivFY": dps - np.floor(dps / 2),
            "FDivAnn": dps,
        }
    )


def _add_restatement(
    rows: _Rows,
    rng: np.random.Generator,
    original: dict[str, np.ndarray],
    sel: np.ndarray,
    mask: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    t: int,
) -> None:
    """Re-disclose the same period with corrected results (forecasts unchanged)."""
    position = np.cumsum(sel) - 1  # stock -> row of ``original``
    idx = np.flatnonzero(mask)
    day = _gap_day(rng, np.minimum(first[idx] + 3, last[idx]), last[idx])
    keep = day < t
    idx, day = idx[keep], day[keep]
    if len(idx) == 0:
        return
    pick = position[idx]
    rows.add(_restated({name: values[pick] for name, values in original.items()}, day, rng))


def _restated(
    original: dict[str, np.ndarray], day: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The rows of ``original`` re-disclosed on ``day`` with corrected results."""
    restated = dict(original)
    restated["DiscDate"] = day
    restated["_kind"] = np.full(len(day), KIND_RESTATEMENT)
    restated["_news"] = np.zeros(len(day))
    factor = 1 + 0.02 * rng.standard_normal(len(day))
    for name in ("Sales", "OP", "OdP", "NP"):
        restated[name] = _money(restated[name] * factor)
    restated["EPS"] = np.round(restated["EPS"] * factor, 2)
    return restated


# Disclosure times that miss the 18:00 update (None: no time given); published at 24:30.
_LATE_TIMES = np.array(["18:30:00", "19:00:00", "20:00:00", None], dtype=object)
_RESTATED_AFTER = 3  # sessions between a report and its restatement, at least


def _plant_window_events(raw: pl.DataFrame, config: MarketConfig, timeline: Timeline) -> pl.DataFrame:
    """Late filings and restatements inside ``config.event_window_start`` .. the end, drawn
    from their own random stream (the rest of the market is unchanged).

    Late filings: a share of the window's after-close disclosures move after 18:00 (or lose
    their time), so only the 24:30 update carries them; still after the close, so the
    announcement-day move keeps its session. Restatements: ``event_restatements`` reports of
    the window (or the 60 sessions before it) are re-disclosed with corrected results.
    """
    rng = stream(config.seed, "fundamentals-events")
    t = len(timeline)
    first = timeline.index_on_or_after(config.event_window_start)
    closes = np.array([close_time(day) for day in timeline.days], dtype=object)
    day = raw["DiscDate"].to_numpy()
    times = raw["DiscTime"].to_numpy()
    after_close = np.array(
        [tm is not None and tm >= closes[d] for tm, d in zip(times, day, strict=True)]
    )
    late = (day >= first) & after_close & (rng.random(len(day)) < config.event_late_filing_share)
    late_times = _LATE_TIMES[rng.integers(0, len(_LATE_TIMES), len(day))]
    raw = raw.with_columns(
        pl.Series("DiscTime", np.where(late, late_times, times).tolist(), dtype=pl.String)
    )

    reports = np.flatnonzero(
        (raw["_kind"].to_numpy() == KIND_REPORT)
        & (day >= first - 60)
        & (day < t - 1 - _RESTATED_AFTER)
    )
    pick = np.sort(rng.choice(reports, size=min(config.event_restatements, len(reports)), replace=False))
    if len(pick) == 0:
        return raw
    earliest = np.maximum(day[pick] + _RESTATED_AFTER, first)
    new_day = earliest + np.floor(rng.random(len(pick)) * (t - 1 - earliest)).astype(np.int64)
    picked = raw[pick]
    results = {c: picked[c].to_numpy() for c in ("Sales", "OP", "OdP", "NP", "EPS")}
    restated = _restated(results, new_day, rng)
    extra = picked.with_columns(
        _series(name, values).cast(raw.schema[name]) for name, values in restated.items()
    )
    return pl.concat([raw, extra])


def _finish_summary(
    raw: pl.DataFrame, universe: Universe, timeline: Timeline
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Registry-typed fins/summary (dates, codes, DiscNo) and per-row (DiscNo, stock, day, kind)."""
    frame = raw.sort("DiscDate", "DiscTime", "_stock", "_kind")
    day = frame["DiscDate"].cast(pl.Int64)
    frame = frame.with_columns(
        pl.Series("_day", day),
        pl.Series(timeline.days, dtype=pl.Date).gather(day).alias("DiscDate"),
        pl.Series(universe.codes.tolist(), dtype=pl.String).gather(frame["_stock"]).alias("Code"),
    )
    frame = frame.with_columns(
        (pl.col(c).cast(pl.Int64) - _EPOCH).cast(pl.Int32).cast(pl.Date)
        for c in ("CurPerSt", "CurPerEn", "CurFYSt", "CurFYEn", "NxtFYSt", "NxtFYEn")
    )
    # Disclosure numbers are unique and increase with time (date + running number).
    seq = pl.int_range(pl.len()).over("DiscDate") + 100001
    frame = frame.with_columns(
        (pl.col("DiscDate").dt.strftime("%Y%m%d") + seq.cast(pl.String).str.zfill(6)).alias(
            "DiscNo"
        ),
        pl.when(
            pl.col("DocType").str.contains("FinancialStatements")
            & (pl.col("DiscDate") >= _SIG_CHG_FIELD_FROM)
        )
        .then(False)
        .alias("SigChgInC"),
    )
    schema = ENDPOINTS["fins/summary"].schema()
    summary = frame.select(
        (pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype)).alias(name)
        for name, dtype in schema.items()
    )
    return summary, frame.select("DiscNo", "_stock", "_day", "_kind", "_news")


def _earnings_calendar(
    summary: pl.DataFrame, meta: pl.DataFrame, universe: Universe
) -> pl.DataFrame:
    """Announcements of March/September year-end issues (reports, not restatements)."""
    rows = (
        summary.select("DiscDate", "Code", "CurPerType", "CurFYEn")
        .with_columns(meta["_stock"], meta["_day"], meta["_kind"])
        .filter(
            (pl.col("_kind") == KIND_REPORT)
            & pl.col("_stock").is_in(
                np.flatnonzero(np.isin(universe.fye_month, list(_CALENDAR_FYE))).tolist()
            )
        )
    )
    stock, day = rows["_stock"].to_numpy(), rows["_day"].to_numpy()
    sector = np.array(SECTOR_CODES, dtype=object)[universe.sector_of(stock, day)]
    section = universe.segment_of(stock, day)
    return pl.DataFrame(
        {
            "Date": rows["DiscDate"],
            "Code": rows["Code"],
            "CoName": pl.Series(universe.name_ja[stock].tolist(), dtype=pl.String),
            "FY": rows["CurFYEn"].dt.strftime("%-m月%-d日"),
            "SectorNm": pl.Series([SECTOR33[s][0] for s in sector], dtype=pl.String),
            "FQ": rows["CurPerType"].replace_strict(_FQ_JA, return_dtype=pl.String),
            "Section": pl.Series([_SECTION_JA[m] for m in section], dtype=pl.String),
        }
    )
