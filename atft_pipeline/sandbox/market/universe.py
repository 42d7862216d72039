"""The issues of the synthetic market and everything fixed about them.

Codes look like real ones (4 digits + "0", drawn from the code block each 33-sector used
historically), companies have synthetic names, a 33/17 sector (a few are reclassified
mid-period), a market segment before and after the 2022-04-04 restructuring, a margin code,
listing/delisting days, shares outstanding, a risk profile (beta, sector loading, idiosyncratic
vol) and a fiscal-year end. The hidden peer graph of the lead-lag signal lives here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atft_pipeline.jquants.reference import SECTOR33
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.rng import stream
from atft_pipeline.sandbox.market.timeline import Timeline

SECTOR_CODES: tuple[str, ...] = tuple(SECTOR33)

# Approximate number of TSE issues per 33-sector: the sector mix of the universe.
_SECTOR_WEIGHTS = {
    "0050": 12,
    "1050": 6,
    "2050": 160,
    "3050": 125,
    "3100": 50,
    "3150": 25,
    "3200": 210,
    "3250": 75,
    "3300": 10,
    "3350": 20,
    "3400": 55,
    "3450": 45,
    "3500": 35,
    "3550": 90,
    "3600": 230,
    "3650": 240,
    "3700": 90,
    "3750": 50,
    "3800": 110,
    "4050": 25,
    "5050": 65,
    "5100": 15,
    "5150": 5,
    "5200": 40,
    "5250": 560,
    "6050": 320,
    "6100": 350,
    "7050": 80,
    "7100": 40,
    "7150": 12,
    "7200": 35,
    "8050": 150,
    "9050": 520,
}
# 4-digit code blocks each sector historically used (first digits of real codes).
_CODE_BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    "0050": ((1300, 1399),),
    "1050": ((1500, 1699),),
    "2050": ((1700, 1999),),
    "3050": ((2200, 2299), (2500, 2999)),
    "3100": ((3000, 3199),),
    "3150": ((3850, 3899),),
    "3200": ((4000, 4299), (4900, 4999)),
    "3250": ((4500, 4599),),
    "3300": ((5000, 5099),),
    "3350": ((5100, 5199),),
    "3400": ((5200, 5399),),
    "3450": ((5400, 5499),),
    "3500": ((5600, 5799),),
    "3550": ((5800, 5999),),
    "3600": ((6100, 6499),),
    "3650": ((6500, 6999),),
    "3700": ((7000, 7299),),
    "3750": ((7700, 7799),),
    "3800": ((7800, 7999),),
    "4050": ((9500, 9599),),
    "5050": ((9000, 9099),),
    "5100": ((9100, 9199),),
    "5150": ((9200, 9299),),
    "5200": ((9300, 9399),),
    "5250": ((3600, 3849), (3900, 3999), (4800, 4899), (9400, 9499)),
    "6050": ((8000, 8199),),
    "6100": ((7400, 7699), (8200, 8299)),
    "7050": ((8300, 8399),),
    "7100": ((8600, 8699),),
    "7150": ((8700, 8799),),
    "7200": ((8400, 8599),),
    "8050": ((3200, 3299), (8800, 8999)),
    "9050": ((2100, 2199), (2300, 2499), (4300, 4499), (4600, 4799), (6000, 6099), (9600, 9799)),
}
# Words that make a company name sound like its sector: (Japanese, English).
_SECTOR_WORDS = {
    "0050": ("水産", "MARINE PRODUCTS"),
    "1050": ("資源開発", "RESOURCES"),
    "2050": ("建設", "CONSTRUCTION"),
    "3050": ("食品", "FOODS"),
    "3100": ("繊維", "TEXTILE"),
    "3150": ("製紙", "PAPER"),
    "3200": ("化学", "CHEMICAL"),
    "3250": ("製薬", "PHARMACEUTICAL"),
    "3300": ("石油", "OIL"),
    "3350": ("ゴム", "RUBBER"),
    "3400": ("窯業", "CERAMICS"),
    "3450": ("製鋼", "STEEL"),
    "3500": ("金属", "METALS"),
    "3550": ("金属工業", "METAL WORKS"),
    "3600": ("機械", "MACHINERY"),
    "3650": ("電機", "ELECTRIC"),
    "3700": ("自動車", "MOTOR"),
    "3750": ("精機", "PRECISION"),
    "3800": ("工芸", "CRAFTS"),
    "4050": ("電力", "ELECTRIC POWER"),
    "5050": ("鉄道", "RAILWAY"),
    "5100": ("海運", "LINES"),
    "5150": ("航空", "AIRLINES"),
    "5200": ("倉庫", "LOGISTICS"),
    "5250": ("システムズ", "SYSTEMS"),
    "6050": ("商事", "TRADING"),
    "6100": ("ストアーズ", "STORES"),
    "7050": ("銀行", "BANK"),
    "7100": ("証券", "SECURITIES"),
    "7150": ("損害保険", "INSURANCE"),
    "7200": ("リース", "LEASING"),
    "8050": ("不動産", "REAL ESTATE"),
    "9050": ("サービス", "SERVICES"),
}
_SYLLABLES = (
    ("ア", "A"),
    ("カ", "KA"),
    ("サ", "SA"),
    ("タ", "TA"),
    ("ナ", "NA"),
    ("マ", "MA"),
    ("ヤ", "YA"),
    ("ラ", "RA"),
    ("ワ", "WA"),
    ("ミ", "MI"),
    ("リ", "RI"),
    ("ト", "TO"),
    ("コ", "KO"),
    ("ホ", "HO"),
    ("セ", "SE"),
    ("ノ", "NO"),
    ("キ", "KI"),
    ("シ", "SHI"),
    ("ツ", "TSU"),
    ("ネ", "NE"),
)
TOPIX_SEGMENTS = frozenset({"0101", "0111"})  # 1st Section before 2022-04-04, Prime after

# Corporate-event rates per stock-year (at least a couple of each happen in any market).
IPO_RATE, DELISTING_RATE, RECLASSIFICATION_RATE = 0.025, 0.015, 0.006
_FYE_MONTHS = (
    (3, 0.70),
    (12, 0.14),
    (9, 0.06),
    (6, 0.04),
    (2, 0.015),
    (5, 0.02),
    (8, 0.015),
    (11, 0.01),
)
_ACCOUNTING = (
    ("Consolidated_JP", 0.78),
    ("NonConsolidated_JP", 0.09),
    ("Consolidated_IFRS", 0.11),
    ("Consolidated_US", 0.02),
)
# Habitual disclosure time (most Japanese results come at or after the 15:00 close).
_DISC_TIMES = (
    ("15:00:00", 0.35),
    ("15:30:00", 0.22),
    ("16:00:00", 0.10),
    ("15:15:00", 0.05),
    ("13:00:00", 0.08),
    ("14:00:00", 0.08),
    ("11:30:00", 0.06),
    ("12:00:00", 0.06),
)


@dataclass(frozen=True)
class Reclassification:
    stock: int
    day: int  # first session on the new sector
    sector: int  # index into SECTOR_CODES


@dataclass(frozen=True)
class Universe:
    """Per-stock arrays are aligned with ``codes`` (ascending)."""

    codes: np.ndarray
    name_ja: np.ndarray
    name_en: np.ndarray
    sector: np.ndarray  # initial sector index into SECTOR_CODES
    reclassifications: tuple[Reclassification, ...]
    segment_before: np.ndarray  # market code before the 2022-04-04 restructuring
    segment_after: np.ndarray
    migration_day: int
    listing_day: np.ndarray  # first session with a bar (0: listed before the period)
    delisting_day: np.ndarray  # last session with a bar (T - 1: still listed at the end)
    margin_code: np.ndarray
    shares: np.ndarray  # shares outstanding at the start / at listing (before any split)
    price: np.ndarray  # reference price before the first session / IPO price
    size_rank: np.ndarray  # 0 smallest .. 1 largest initial market cap
    beta: np.ndarray
    sector_loading: np.ndarray
    idio_vol: np.ndarray  # daily idiosyncratic vol level
    vol_scale: np.ndarray  # idio_vol / median: scales the planted drift (alpha ~ risk)
    turnover: np.ndarray  # typical daily volume as a fraction of shares outstanding
    fye_month: np.ndarray
    accounting: np.ndarray  # DocType suffix, e.g. "Consolidated_JP"
    disc_time: np.ndarray
    peers: np.ndarray  # [N, n_peers] hidden peer indices
    peer_weights: np.ndarray  # [N, n_peers], rows sum to 1

    @property
    def n(self) -> int:
        return len(self.codes)

    def sectors_at(self, day: int) -> np.ndarray:
        """Sector index of every stock on session ``day`` (reclassifications applied)."""
        out = self.sector.copy()
        for r in self.reclassifications:
            if r.day <= day:
                out[r.stock] = r.sector
        return out

    def sector_of(self, stock: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Sector index of (stock, session) pairs, vectorized."""
        out = self.sector[stock]
        for r in self.reclassifications:
            out = np.where((stock == r.stock) & (day >= r.day), r.sector, out)
        return out

    def sector_matrix(self, n_days: int) -> np.ndarray:
        """[T, N] sector index of every stock on every session."""
        out = np.repeat(self.sector[None, :], n_days, axis=0)
        for r in self.reclassifications:
            out[r.day :, r.stock] = r.sector
        return out

    def segment_of(self, stock: np.ndarray, day: np.ndarray) -> np.ndarray:
        return np.where(
            day < self.migration_day, self.segment_before[stock], self.segment_after[stock]
        )

    def segments_at(self, day: int) -> np.ndarray:
        return self.segment_before if day < self.migration_day else self.segment_after

    def listed_at(self, day: int) -> np.ndarray:
        return (self.listing_day <= day) & (day <= self.delisting_day)

    def listed_matrix(self, n_days: int) -> np.ndarray:
        """[T, N] True where the issue has a bar row (listed that session)."""
        days = np.arange(n_days)[:, None]
        return (days >= self.listing_day[None, :]) & (days <= self.delisting_day[None, :])


def _choice(
    rng: np.random.Generator, table: tuple[tuple[object, float], ...], n: int
) -> np.ndarray:
    values = np.array([v for v, _ in table], dtype=object)
    p = np.array([w for _, w in table], dtype=float)
    return values[rng.choice(len(values), size=n, p=p / p.sum())]


def _assign_sectors(rng: np.random.Generator, n: int) -> np.ndarray:
    weights = np.array([_SECTOR_WEIGHTS[s] for s in SECTOR_CODES], dtype=float)
    if n >= len(SECTOR_CODES):  # every sector is present
        rest = rng.choice(len(SECTOR_CODES), size=n - len(SECTOR_CODES), p=weights / weights.sum())
        return np.r_[np.arange(len(SECTOR_CODES)), rest]
    return rng.choice(len(SECTOR_CODES), size=n, p=weights / weights.sum())


def _assign_codes(rng: np.random.Generator, sectors: np.ndarray) -> np.ndarray:
    """Distinct 4-digit codes from each sector's historical blocks (spilling over if full)."""
    taken: set[int] = set()
    codes = np.empty(len(sectors), dtype=np.int64)
    overflow: list[int] = []
    for s, sector in enumerate(SECTOR_CODES):
        members = np.flatnonzero(sectors == s)
        pool = np.concatenate([np.arange(lo, hi + 1) for lo, hi in _CODE_BLOCKS[sector]])
        pool = np.setdiff1d(pool, np.fromiter(taken, dtype=np.int64, count=len(taken)))
        k = min(len(members), len(pool))
        picked = rng.choice(pool, size=k, replace=False)
        codes[members[:k]] = picked
        taken.update(picked.tolist())
        overflow.extend(members[k:].tolist())
    if overflow:
        free = np.array([c for c in range(1300, 10000) if c not in taken])
        codes[overflow] = rng.choice(free, size=len(overflow), replace=False)
    return codes


def _names(rng: np.random.Generator, sectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_syl = len(_SYLLABLES)
    combos = rng.choice(n_syl**3, size=len(sectors), replace=len(sectors) > n_syl**3)
    holdings = rng.random(len(sectors)) < 0.15
    ja, en = [], []
    for combo, sector, hd in zip(combos.tolist(), sectors.tolist(), holdings.tolist(), strict=True):
        parts = [
            _SYLLABLES[combo // n_syl**2],
            _SYLLABLES[(combo // n_syl) % n_syl],
            _SYLLABLES[combo % n_syl],
        ]
        word_ja, word_en = _SECTOR_WORDS[SECTOR_CODES[sector]]
        stem_ja, stem_en = "".join(p[0] for p in parts), "".join(p[1] for p in parts)
        if hd:
            ja.append(f"{stem_ja}{word_ja}ホールディングス")
            en.append(f"{stem_en} {word_en} HOLDINGS,INC.")
        else:
            ja.append(f"{stem_ja}{word_ja}")
            en.append(f"{stem_en} {word_en} CO.,LTD.")
    return np.array(ja, dtype=object), np.array(en, dtype=object)


def _segments(
    rng: np.random.Generator,
    size_rank: np.ndarray,
    ipo_before_migration: np.ndarray,
    ipo_after_migration: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    n = len(size_rank)
    u = rng.random(n)
    before = np.where(
        size_rank >= 2 / 3,
        "0101",
        np.where(
            size_rank >= 1 / 3,
            np.select([u < 0.70, u < 0.85], ["0101", "0102"], "0106"),
            np.select(
                [u < 0.25, u < 0.45, u < 0.70, u < 0.95], ["0101", "0102", "0104", "0106"], "0107"
            ),
        ),
    ).astype(object)
    before[ipo_before_migration] = np.select(
        [u[ipo_before_migration] < 0.7, u[ipo_before_migration] < 0.9], ["0104", "0106"], "0101"
    )
    v = rng.random(n)
    after = np.select(
        [
            (before == "0101") & ((size_rank >= 0.35) | (v < 0.4)),
            before == "0101",
            before == "0102",
            (before == "0104") & (v < 0.9),
            before == "0104",
            (before == "0106") & (v < 0.9),
            before == "0106",
        ],
        ["0111", "0112", "0112", "0113", "0112", "0112", "0111"],
        "0113",
    ).astype(object)
    after[ipo_after_migration] = np.select(
        [v[ipo_after_migration] < 0.75, v[ipo_after_migration] < 0.9], ["0113", "0112"], "0111"
    )
    # Issues listed after the restructuring never had an old segment: mirror the new one.
    before[ipo_after_migration] = after[ipo_after_migration]
    return before, after


def _peers(rng: np.random.Generator, sectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each stock gets ``k`` distinct hidden peers, ~70 % from its own sector."""
    n = len(sectors)
    k = min(k, n - 1)
    peers = np.empty((n, k), dtype=np.int64)
    by_sector = {s: np.flatnonzero(sectors == s) for s in np.unique(sectors)}
    for i in range(n):
        same = by_sector[sectors[i]]
        same = same[same != i]
        chosen: list[int] = []
        while len(chosen) < k:
            pool = same if (len(same) > 0 and rng.random() < 0.7) else np.arange(n)
            j = int(pool[rng.integers(len(pool))])
            if j != i and j not in chosen:
                chosen.append(j)
        peers[i] = chosen
    weights = rng.dirichlet(np.full(k, 2.0), size=n)
    return peers, weights


def build_universe(config: MarketConfig, timeline: Timeline) -> Universe:
    rng = stream(config.seed, "universe")
    n, t = config.n_stocks, len(timeline)
    sectors = _assign_sectors(rng, n)
    codes4 = _assign_codes(rng, sectors)
    order = np.argsort(codes4, kind="stable")
    sectors, codes4 = sectors[order], codes4[order]
    codes = np.array([f"{c:04d}0" for c in codes4], dtype=object)
    name_ja, name_en = _names(rng, sectors)

    # Size: log10 market cap (yen), median ~25 bn; IPOs are small.
    log_cap = np.clip(rng.normal(10.4, 0.65, n), 9.0, 13.6)
    n_ipo = min(n // 5, max(2, round(IPO_RATE * n * config.years)))
    n_delist = min(n // 5, max(2, round(DELISTING_RATE * n * config.years)))
    special = rng.choice(n, size=n_ipo + n_delist, replace=False)
    ipo, delisted = special[:n_ipo], special[n_ipo:]
    log_cap[ipo] -= 0.5
    listing_day = np.zeros(n, dtype=np.int64)
    delisting_day = np.full(n, t - 1, dtype=np.int64)
    listing_day[ipo] = rng.integers(5, max(6, t - 40), size=n_ipo)
    delisting_day[delisted] = rng.integers(40, max(41, t - 5), size=n_delist)
    size_rank = (np.argsort(np.argsort(log_cap)) + 0.5) / n
    size_z = (log_cap - log_cap.mean()) / log_cap.std()

    migration_day = timeline.migration_index
    is_ipo = np.zeros(n, dtype=bool)
    is_ipo[ipo] = True
    before, after = _segments(
        rng,
        size_rank,
        is_ipo & (listing_day < migration_day),
        is_ipo & (listing_day >= migration_day),
    )
    large = np.isin(after, ["0111"]) & (size_rank > 0.3)
    u = rng.random(n)
    margin_code = np.where(
        large, np.where(u < 0.85, "2", "1"), np.select([u < 0.65, u < 0.95], ["1", "2"], "3")
    ).astype(object)

    log_price = np.clip(rng.normal(3.0, 0.42, n) + 0.2 * size_z, 2.0, 4.6)
    price = np.round(10.0**log_price)
    shares = np.maximum(np.round(10.0**log_cap / price, -3), 1e5)

    beta = np.clip(rng.normal(1.0, 0.25, n), 0.3, 1.8)
    sector_loading = np.clip(rng.normal(1.0, 0.3, n), 0.2, 2.0)
    idio_vol = config.idio_vol * np.exp(
        config.idio_vol_dispersion * rng.standard_normal(n) - 0.25 * size_z
    )
    idio_vol = np.clip(idio_vol, 0.25 * config.idio_vol, 4.0 * config.idio_vol)
    vol_scale = idio_vol / np.median(idio_vol)
    turnover = np.clip(
        0.0035 * np.exp(0.5 * rng.standard_normal(n) + 0.3 * np.log(vol_scale) - 0.1 * size_z),
        3e-4,
        0.05,
    )

    fye_month = _choice(rng, _FYE_MONTHS, n).astype(np.int64)
    accounting = _choice(rng, _ACCOUNTING, n)
    disc_time = _choice(rng, _DISC_TIMES, n)

    n_reclass = min(n // 10, max(2, round(RECLASSIFICATION_RATE * n * config.years)))
    candidates = np.setdiff1d(np.arange(n), ipo)
    reclass: list[Reclassification] = []
    for stock in np.sort(rng.choice(candidates, size=n_reclass, replace=False)).tolist():
        old = int(sectors[stock])
        same17 = [
            s
            for s in range(len(SECTOR_CODES))
            if s != old and SECTOR33[SECTOR_CODES[s]][2] == SECTOR33[SECTOR_CODES[old]][2]
        ]
        pool = (
            same17
            if same17 and rng.random() < 0.6
            else [s for s in range(len(SECTOR_CODES)) if s != old]
        )
        first, last = int(listing_day[stock]) + 20, int(delisting_day[stock]) - 20
        if last <= first:
            continue
        reclass.append(
            Reclassification(
                stock, int(rng.integers(first, last)), int(pool[rng.integers(len(pool))])
            )
        )

    peers, peer_weights = _peers(rng, sectors, config.n_peers)
    return Universe(
        codes=codes,
        name_ja=name_ja,
        name_en=name_en,
        sector=sectors,
        reclassifications=tuple(reclass),
        segment_before=before,
        segment_after=after,
        migration_day=migration_day,
        listing_day=listing_day,
        delisting_day=delisting_day,
        margin_code=margin_code,
        shares=shares,
        price=price,
        size_rank=size_rank,
        beta=beta,
        sector_loading=sector_loading,
        idio_vol=idio_vol,
        vol_scale=vol_scale,
        turnover=turnover,
        fye_month=fye_month,
        accounting=accounting,
        disc_time=disc_time,
        peers=peers,
        peer_weights=peer_weights,
    )
