"""Sector family: point-in-time membership (a code that changes sector, a code whose master
row appears late), sector means / leave-one-out relative returns / ranks / z-scores against a
per-date brute force, sector vol and turnover, and real data.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.features import common, sector
from atft_pipeline.jquants.reference import SECTOR33
from tests.helpers import (
    BARS,
    MASTER,
    Panel,
    asof_master,
    assert_contract,
    real_tables,
    run,
    sandbox_tables,
    sessions_of,
)

FAMILY = sector.FAMILY
ANN = math.sqrt(252)
SECTORS = ("3650", "3700", "6050", "7050")  # four sectors, so each has ~10 members


@pytest.fixture(scope="module")
def case():
    """Sandbox market with its 40 codes put in four S33 sectors; one code moves from its
    sector to another on a master snapshot mid-sample, another has no master row before a
    later snapshot, and one is a 9999 (non-sector) issue."""
    tables = dict(sandbox_tables())
    days = sessions_of(tables)
    master = tables[MASTER]
    codes = sorted(master["Code"].unique())
    snapshots = sorted(master["Date"].unique())
    move_on = snapshots[len(snapshots) // 2]
    late_from = snapshots[5]
    assignment = {code: SECTORS[i % len(SECTORS)] for i, code in enumerate(codes)}
    mover, late, other = codes[0], codes[1], codes[2]
    new_sector = SECTORS[1]
    s33 = (
        pl.when((pl.col("Code") == mover) & (pl.col("Date") >= move_on))
        .then(pl.lit(new_sector))
        .when(pl.col("Code") == other)
        .then(pl.lit("9999"))
        .otherwise(pl.col("Code").replace_strict(assignment))
    )
    master = (
        master.with_columns(s33.alias("S33"))
        .with_columns(
            pl.col("S33")
            .replace_strict({k: v[2] for k, v in SECTOR33.items()}, default="99")
            .alias("S17")
        )
        .filter(~((pl.col("Code") == late) & (pl.col("Date") < late_from)))
    )
    tables[MASTER] = master
    out = run(FAMILY, tables, days, days)
    info = {"mover": mover, "late": late, "other": other, "move_on": move_on,
            "late_from": late_from, "old": assignment[mover], "new": new_sector}
    return tables, days, out, Panel(tables[BARS], days), info


_MEMBERSHIP: dict = {}


def membership(master: pl.DataFrame, codes, day):
    """code -> (S33, S17, tier) in force on ``day`` (None when no sector)."""
    key = (id(master), tuple(codes), day)
    if key not in _MEMBERSHIP:
        _MEMBERSHIP[key] = _membership(master, codes, day)
    return _MEMBERSHIP[key]


def _membership(master: pl.DataFrame, codes, day):
    tiers = sector.SEGMENT_TIERS
    out = {}
    for code in codes:
        row = asof_master(master, code, day)
        if row is None or row["S33"] in ("9999", ""):
            out[code] = (None, None, tiers.get(row["Mkt"]) if row else None)
        else:
            out[code] = (row["S33"], row["S17"], tiers.get(row["Mkt"]))
    return out


def pct_rank(values: np.ndarray) -> np.ndarray:
    ranks = stats.rankdata(values, method="average")
    return (ranks - 1) / (len(values) - 1)


def expected_row(tables, panel: Panel, days, t: int, code: str) -> dict[str, float | None]:
    master = tables[MASTER]

    def members_at(i):
        return membership(master, panel.codes, days[i])

    now = members_at(t)
    s33, s17, tier = now[code]
    j = panel.code(code)
    listed = panel.listed[t]
    idx = {c: panel.code(c) for c in panel.codes}

    def group(key_pos, key, when=t, members=None):
        members = members or now
        return [
            idx[c] for c, m in members.items() if m[key_pos] == key and panel.listed[when, idx[c]]
        ]

    want: dict[str, float | None] = {}
    if s33 is None:
        return {name: None for name in FAMILY.columns if not name.startswith("sec_seg")}
    peers = group(0, s33)
    for n in (1, 5, 20, 60):
        r = panel.ret(n)[t]
        vals = r[peers]
        finite = vals[np.isfinite(vals)]
        want[f"sec_ret_{n}d"] = finite.mean() if finite.size else None
        others = [r[k] for k in peers if k != j and np.isfinite(r[k])]
        want[f"sec_rel_ret_{n}d"] = r[j] - np.mean(others) if np.isfinite(r[j]) and others else None
    volume_ratio = np.full(len(panel.codes), np.nan)
    vol20 = np.full(len(panel.codes), np.nan)
    for k in peers:
        prev = panel.volume[max(0, t - 20) : t, k]
        if np.isfinite(prev).sum() >= 14 and np.nanmean(prev) > 0:
            volume_ratio[k] = panel.volume[t, k] / np.nanmean(prev)
        rets = panel.ret1[max(0, t - 19) : t + 1, k]
        if np.isfinite(rets).sum() >= 14:
            vol20[k] = np.nanstd(rets, ddof=1) * ANN
    series = {"ret_1d": panel.ret(1)[t], "ret_5d": panel.ret(5)[t], "ret_20d": panel.ret(20)[t],
              "ret_60d": panel.ret(60)[t], "volume_ratio": volume_ratio, "vol_20d": vol20}
    for name, (rank_col, z_col, _, _) in sector._RANKED.items():
        vals = series[name][peers]
        ok = np.isfinite(vals)
        mine = series[name][j]
        if not np.isfinite(mine) or ok.sum() < 2:
            want[rank_col] = None
        else:
            want[rank_col] = pct_rank(vals[ok])[list(np.array(peers)[ok]).index(j)]
        if not np.isfinite(mine) or ok.sum() < 3 or np.std(vals[ok], ddof=1) == 0:
            want[z_col] = None
        else:
            want[z_col] = (mine - vals[ok].mean()) / np.std(vals[ok], ddof=1)
    r1 = panel.ret1[t, peers]
    want["sec_breadth_up"] = (r1[np.isfinite(r1)] > 0).mean()
    flags = panel.sma_flag(20, 14)[t, peers]
    want["sec_breadth_sma20"] = np.nanmean(flags) if np.isfinite(flags).any() else None
    want["sec_size"] = float(len(peers))
    sector_turnover = np.nansum(panel.turnover[t, peers])
    want["sec_turnover_share"] = panel.turnover[t, j] / sector_turnover
    # sector daily equal-weight return series, membership as of each session
    daily, shares = [], []
    for i in range(max(0, t - 20), t + 1):
        members_i = members_at(i)
        peers_i = group(0, s33, i, members_i)
        r = panel.ret1[i, peers_i]
        daily.append(np.nanmean(r) if np.isfinite(r).any() else np.nan)
        market_turnover = np.nansum(panel.turnover[i, panel.listed[i]])
        sector_turnover = np.nansum(panel.turnover[i, peers_i]) if peers_i else np.nan
        shares.append(sector_turnover / market_turnover)
    last20 = np.array(daily[-20:])
    enough = np.isfinite(last20).sum() >= 14
    want["sec_vol_20d"] = np.nanstd(last20, ddof=1) * ANN if enough else None
    prev_shares = np.array(shares[:-1])
    want["sec_rel_turnover"] = (
        shares[-1] / np.nanmean(prev_shares) if np.isfinite(prev_shares).sum() >= 14 else None
    )
    for n in (20, 60):
        sector_rets = {}
        for key in {m[0] for m in now.values() if m[0]}:
            vals = panel.ret(n)[t, group(0, key)]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                sector_rets[key] = vals.mean()
        keys = sorted(sector_rets)
        want[f"sec_mom_rank_{n}d"] = (
            pct_rank(np.array([sector_rets[k] for k in keys]))[keys.index(s33)]
            if s33 in sector_rets and len(keys) >= 2 else None
        )
    for n in (5, 20):
        vals = panel.ret(n)[t, group(1, s17)]
        want[f"sec_s17_ret_{n}d"] = np.nanmean(vals) if np.isfinite(vals).any() else None
        if tier is not None:
            vals = panel.ret(n)[t, group(2, tier)]
            want[f"sec_seg_ret_{n}d"] = np.nanmean(vals) if np.isfinite(vals).any() else None
    assert listed[j]
    return want


@pytest.mark.slow
def test_values_match_per_date_brute_force(case):
    tables, days, out, panel, info = case
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for t in (3, 21, 64, 130, 200, 280, len(days) - 1):
            for code in panel.codes[::2] + [info["mover"], info["late"]]:
                if not panel.listed[t, panel.code(code)]:
                    continue
                at_t = (pl.col("date") == days[t]) & (pl.col("code") == code)
                row = out.filter(at_t).row(0, named=True)
                for column, want in expected_row(tables, panel, days, t, code).items():
                    got = row[column]
                    if want is None or not np.isfinite(want):
                        assert got is None, (column, days[t], code, got)
                    else:
                        assert got is not None, (column, days[t], code)
                        where = (column, days[t], code)
                        assert got == pytest.approx(want, rel=2e-5, abs=2e-6), where
                        checked += 1
    assert checked > 1000


def test_sector_change_applies_from_its_snapshot_only(case):
    tables, days, out, panel, info = case
    mover, move_on = info["mover"], info["move_on"]
    before = max(d for d in days if d < move_on)
    after = min(d for d in days if d >= move_on)

    def sector_of(day):  # the sector whose equal-weight return the mover reports
        row = out.filter((pl.col("date") == day) & (pl.col("code") == mover))
        size = row["sec_size"].item()
        sizes = {
            s: sum(1 for c, m in membership(tables[MASTER], panel.codes, day).items()
                   if m[0] == s and panel.listed[panel.session(day), panel.code(c)])
            for s in (info["old"], info["new"])
        }
        return size, sizes

    size_before, sizes_before = sector_of(before)
    size_after, sizes_after = sector_of(after)
    assert size_before == sizes_before[info["old"]]
    assert size_after == sizes_after[info["new"]]
    # the mover's peers change on that day: its sector return equals the new sector's mean
    t = panel.session(after)
    peers_new = [panel.code(c) for c, m in membership(tables[MASTER], panel.codes, after).items()
                 if m[0] == info["new"] and panel.listed[t, panel.code(c)]]
    assert panel.code(mover) in peers_new
    got = out.filter((pl.col("date") == after) & (pl.col("code") == mover))["sec_ret_1d"].item()
    assert got == pytest.approx(np.nanmean(panel.ret1[t, peers_new]), rel=1e-5)


def test_no_master_row_yet_means_no_sector(case):
    tables, days, out, _, info = case
    late = out.filter(pl.col("code") == info["late"])
    early = late.filter(pl.col("date") < info["late_from"])
    assert early.height > 0 and early["sec_ret_1d"].null_count() == early.height
    assert early["sec_seg_prime"].null_count() == early.height
    assert late.filter(pl.col("date") >= info["late_from"])["sec_ret_1d"].null_count() == 0
    other = out.filter(pl.col("code") == info["other"])  # S33 9999: listed, no sector
    assert other["sec_size"].null_count() == other.height
    assert other["sec_seg_prime"].null_count() == 0


def test_segment_tiers_follow_the_2022_reorganisation(case):
    tables, days, out, _, _ = case
    # sandbox codes move from 1st Section (0101) to Prime (0111): one tier throughout
    prime = out.filter(pl.col("sec_seg_prime").is_not_null())
    assert (prime["sec_seg_prime"] + prime["sec_seg_standard"] + prime["sec_seg_growth"] == 1).all()


@pytest.mark.realdata
def test_real_data(realdata_dir):
    tables = real_tables(realdata_dir, n_codes=300, n_days=200)
    days = sessions_of(tables)
    out = run(FAMILY, tables, days, days)
    assert_contract(out, FAMILY, tables, days)
    last = out.filter(pl.col("date") == days[-1])
    panel = Panel(tables[BARS], days)
    t = len(days) - 1
    members = membership(tables[MASTER], panel.codes, days[t])
    n_sectors = len({m[0] for c, m in members.items() if m[0] and panel.listed[t, panel.code(c)]})
    assert (1.0 / last["sec_size"]).sum() == pytest.approx(n_sectors)  # each sector sums to 1
    # leave-one-out relative returns average ~0 within a sector; ranks span [0, 1]
    assert abs(last["sec_rel_ret_20d"].mean()) < 0.02
    assert last["sec_rank_ret_20d"].min() == 0.0 and last["sec_rank_ret_20d"].max() == 1.0
    for s33 in sorted({m[0] for m in members.values() if m[0]})[:5]:
        peers = [
            panel.code(c) for c, m in members.items()
            if m[0] == s33 and panel.listed[t, panel.code(c)]
        ]
        got = last.filter(pl.col("code") == panel.codes[peers[0]])["sec_ret_5d"].item()
        assert got == pytest.approx(np.nanmean(panel.ret(5)[t, peers]), rel=1e-5)


def test_rank_keeps_ties_that_rounding_noise_splits():
    """Two returns equal on paper, computed from prices adjusted to different window ends
    (a nightly run, a backfill), may differ in the last bit: they still tie."""
    frame = pl.DataFrame({"x": [0.0, 1e-17, 0.5, 0.1 + 0.2, 0.3, None]})
    got = frame.select(common.rank_average(pl.col("x")))["x"].to_list()
    assert got == [1.5, 1.5, 5.0, 3.5, 3.5, None]
    assert frame.select(pl.col("x").rank("average"))["x"].to_list() != got  # raw floats split them
