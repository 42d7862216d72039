"""Build a whole synthetic market: every endpoint table plus the oracle."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.jquants.endpoints import ENDPOINTS
from atft_pipeline.sandbox.market.actions import CorporateActions, schedule_actions
from atft_pipeline.sandbox.market.bars import build_bars, topix_table
from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.flows import investor_types_table
from atft_pipeline.sandbox.market.fundamentals import generate_statements
from atft_pipeline.sandbox.market.master import master_table
from atft_pipeline.sandbox.market.options import index_options_table
from atft_pipeline.sandbox.market.oracle import (
    HORIZONS,
    mean_rank_ic,
    oracle_frame,
    realized_targets,
    replay_oracle,
)
from atft_pipeline.sandbox.market.positioning import (
    margin_alert_table,
    margin_interest_table,
    short_ratio_table,
    short_sale_report_table,
)
from atft_pipeline.sandbox.market.prices import EarningsInputs, simulate_prices
from atft_pipeline.sandbox.market.signals import SIGNALS, SignalParams
from atft_pipeline.sandbox.market.timeline import Timeline
from atft_pipeline.sandbox.market.universe import Universe, build_universe

# Deterministic row order of every table (the registry key, date first).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "equities/master": ("Date", "Code"),
    "equities/bars/daily": ("Date", "Code"),
    "indices/bars/daily/topix": ("Date",),
    "markets/calendar": ("Date",),
    "fins/summary": ("DiscDate", "DiscNo"),
    "equities/earnings-calendar": ("Date", "Code"),
    "markets/margin-interest": ("Date", "Code"),
    "markets/margin-alert": ("PubDate", "Code", "AppDate"),
    "markets/short-ratio": ("Date", "S33"),
    "markets/short-sale-report": ("DiscDate", "CalcDate", "Code", "SSName"),
    "equities/investor-types": ("PubDate", "Section", "StDate", "EnDate"),
    "derivatives/bars/daily/options/225": ("Date", "Code", "EmMrgnTrgDiv"),
}


def conform(path: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Exactly the registry columns and dtypes of ``path`` (Premium), in deterministic order."""
    schema = ENDPOINTS[path].schema()
    missing = sorted(set(schema) - set(frame.columns))
    extra = sorted(set(frame.columns) - set(schema))
    if missing or extra:
        raise ValueError(f"sandbox table {path!r}: missing columns {missing}, unexpected {extra}")
    return frame.select(
        pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items()
    ).sort(SORT_KEYS[path], nulls_last=True, maintain_order=True)


@dataclass(frozen=True)
class HiddenStructure:
    """What the oracle knows beyond the tables: the universe's hidden parameters."""

    universe: Universe
    timeline: Timeline
    actions: CorporateActions
    params: SignalParams


@dataclass(frozen=True)
class SyntheticMarket:
    """A generated market: ``tables`` (V2 path -> registry-typed frame) and the ``oracle``."""

    config: MarketConfig
    tables: dict[str, pl.DataFrame]
    oracle: pl.DataFrame
    hidden: HiddenStructure = field(repr=False)

    @cached_property
    def targets(self) -> pl.DataFrame:
        """Realized targets (date, code, target_1d, ...) from the adjusted closes."""
        return realized_targets(self.tables["equities/bars/daily"])

    def oracle_rankic(self) -> dict[int, float]:
        """Mean over dates of the per-date Spearman(oracle_h, target_h), per horizon."""
        joined = self.oracle.join(self.targets, on=["date", "code"], how="left")
        return {h: mean_rank_ic(joined, f"oracle_{h}d", f"target_{h}d") for h in HORIZONS}

    def replay_oracle(
        self, tables: dict[str, pl.DataFrame] | None = None, through: dt.date | None = None
    ) -> pl.DataFrame:
        """The oracle recomputed from (possibly altered or truncated) published tables."""
        return replay_oracle(
            self.tables if tables is None else tables,
            self.hidden.params,
            self.hidden.universe.codes,
            self.hidden.timeline,
            through,
        )

    def summary(self) -> dict:
        """JSON-ready overview: sizes, corporate events, signal settings, oracle RankIC."""
        universe, timeline = self.hidden.universe, self.hidden.timeline
        return {
            "seed": self.config.seed,
            "n_stocks": self.config.n_stocks,
            "start": timeline.days[0].isoformat(),
            "end": timeline.days[-1].isoformat(),
            "trading_days": len(timeline),
            "rows": {path: frame.height for path, frame in self.tables.items()},
            "listings": int((universe.listing_day > 0).sum()),
            "delistings": int((universe.delisting_day < len(timeline) - 1).sum()),
            "splits": len(self.hidden.actions.splits),
            "halted_bars": int(self.hidden.actions.halted.sum()),
            "sector_reclassifications": len(universe.reclassifications),
            "signals": {
                name: {
                    "strength": getattr(self.config, f"{name}_strength"),
                    "half_life": getattr(self.config, f"{name}_half_life"),
                }
                for name in SIGNALS
            },
            "oracle_rankic": {f"{h}d": round(v, 4) for h, v in self.oracle_rankic().items()},
        }


def generate_market(config: MarketConfig) -> SyntheticMarket:
    """Generate every endpoint table and the oracle (deterministic in ``config``)."""
    timeline = Timeline.between(config.start, config.end)
    universe = build_universe(config, timeline)
    actions = schedule_actions(config, universe, timeline)
    statements = generate_statements(config, universe, timeline, actions)
    params = SignalParams.from_config(
        config, universe.peers, universe.peer_weights, universe.vol_scale
    )
    earnings = EarningsInputs.from_statements(
        statements.summary, statements.news, universe.codes, timeline
    )
    paths = simulate_prices(config, universe, timeline, actions, earnings, params)
    bars = build_bars(config, universe, timeline, actions, paths)
    topix = topix_table(universe, timeline, actions, paths, bars)
    topix_close = topix["C"].to_numpy()
    market_cap = paths.close * universe.shares[None, :] / actions.cumulative_factor

    calendar_end = dt.date(config.end.year + 1, 12, 31)
    tables = {
        "equities/master": master_table(universe, timeline, market_cap),
        "equities/bars/daily": bars.table,
        "indices/bars/daily/topix": topix,
        "markets/calendar": calendar.calendar_frame(config.start, calendar_end),
        "fins/summary": statements.summary,
        "equities/earnings-calendar": statements.earnings_calendar,
        "markets/margin-interest": margin_interest_table(config, universe, timeline, paths),
        "markets/margin-alert": margin_alert_table(config, universe, timeline, paths, actions),
        "markets/short-ratio": short_ratio_table(config, universe, timeline, paths, bars.turnover),
        "markets/short-sale-report": short_sale_report_table(config, universe, timeline, actions),
        "equities/investor-types": investor_types_table(
            config, universe, timeline, bars.turnover, topix_close
        ),
        "derivatives/bars/daily/options/225": index_options_table(
            config, timeline, topix_close, paths.market_var
        ),
    }
    tables = {path: conform(path, frame) for path, frame in tables.items()}
    oracle = oracle_frame(
        paths.oracle, universe.listed_matrix(len(timeline)), timeline, universe.codes
    )
    hidden = HiddenStructure(universe, timeline, actions, params)
    return SyntheticMarket(config, tables, oracle, hidden)
