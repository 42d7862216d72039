"""The default catalog (every family) and which families a plan / configuration enables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import lru_cache

import polars as pl

from atft_pipeline.errors import UsageError
from atft_pipeline.features.catalog import FeatureCatalog, FeatureFamily, FeatureInputs
from atft_pipeline.jquants.adjustment import adjust_bars
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.jquants.sources import RAW_SOURCES

BARS_ASSET = "raw_daily_quotes"
FAMILY_MODULES = (
    "price",
    "technical",
    "volatility",
    "market",
    "sector",
    "statements",
    "earnings",
    "margin_weekly",
    "margin_daily",
    "short_selling",
    "flow",
    "options",
    "graph",
)


@lru_cache(maxsize=1)
def default_catalog() -> FeatureCatalog:
    import importlib

    families = [
        importlib.import_module(f"atft_pipeline.features.{name}").FAMILY for name in FAMILY_MODULES
    ]
    return FeatureCatalog(families)


class FeatureFamilyError(RuntimeError):
    """A family failed or broke its contract; the run fails with the family named."""


class FamilySelectionError(UsageError, ValueError):
    """The configuration names a family that does not exist or that the plan cannot feed."""


def missing_sources(family: FeatureFamily, plan: Plan) -> list[str]:
    """The family's raw sources ``plan`` does not include."""
    return [s for s in family.sources if s in RAW_SOURCES and not plan.covers(RAW_SOURCES[s].plan)]


def required_plan(family: FeatureFamily) -> Plan:
    """The smallest plan that includes every raw source of ``family``."""
    return max((RAW_SOURCES[s].plan for s in family.sources if s in RAW_SOURCES), key=lambda p: p.rank, default=Plan.FREE)


def entitled_families(catalog: FeatureCatalog, plan: Plan) -> list[str]:
    return [
        f.name
        for f in catalog.enabled()
        if all(plan.covers(RAW_SOURCES[s].plan) for s in f.sources if s in RAW_SOURCES)
    ]


def enabled_families(
    catalog: FeatureCatalog, plan: Plan, families: Sequence[str] | None, disabled: Sequence[str]
) -> list[str]:
    """The families that build the dataset: entitled by the plan, minus ``disabled``.

    Naming a family the plan does not entitle is an error, never a silently null family.
    """
    entitled = entitled_families(catalog, plan)
    unknown = [name for name in [*(families or []), *disabled] if name not in catalog.families]
    if unknown:
        raise FamilySelectionError(
            f"dataset.families / dataset.disabled name unknown famil(ies) {unknown}; "
            f"known: {', '.join(catalog.families)}"
        )
    if families is not None:
        not_entitled = [name for name in families if name not in entitled]
        if not_entitled:
            needs = {name: required_plan(catalog.family(name)) for name in not_entitled}
            listed = ", ".join(f"{name} (needs JQUANTS_PLAN={p.value} or above)" for name, p in needs.items())
            raise FamilySelectionError(
                f"dataset.families names famil(ies) plan '{plan.value}' cannot feed: {listed}; "
                "remove them from the configuration file or raise JQUANTS_PLAN"
            )
        chosen = list(families)
    else:
        chosen = entitled
    return [f.name for f in catalog.enabled(chosen) if f.name not in set(disabled)]


def compute_family(
    family: FeatureFamily,
    raw: Mapping[str, pl.LazyFrame],
    dates: Sequence[dt.date],
    calendar: Sequence[dt.date],
) -> pl.DataFrame:
    """Run one family and enforce its contract: exact columns and dtypes, no NaN/inf.

    Any exception inside the family is re-raised naming it: a broken family fails the run,
    it never yields a narrower dataset.
    """
    # Adjusted prices are always recomputed from raw prices and AdjFactor: stored Adj*
    # columns keep the scale of the day each partition was fetched.
    if BARS_ASSET in raw:
        raw = {**raw, BARS_ASSET: adjust_bars(raw[BARS_ASSET])}
    inputs = FeatureInputs(raw=raw, dates=tuple(dates), calendar=tuple(calendar))
    try:
        frame = family.compute(inputs).collect()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # polars panics surface as pyo3 PanicException (a BaseException)
        raise FeatureFamilyError(f"feature family {family.name!r} failed: {exc}") from exc
    expected = ["date", "code", *family.columns]
    if frame.columns != expected:
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        raise FeatureFamilyError(
            f"feature family {family.name!r} returned the wrong columns "
            f"(missing {missing[:10]}, unexpected {extra[:10]})"
        )
    for spec in family.features:
        if frame.schema[spec.name] != spec.dtype:
            raise FeatureFamilyError(
                f"feature family {family.name!r}: column {spec.name!r} is "
                f"{frame.schema[spec.name]}, catalog says {spec.dtype}"
            )
    floats = [s.name for s in family.features if s.dtype.is_float()]
    if floats:
        bad = frame.select(
            [(~pl.col(c).is_finite() & pl.col(c).is_not_null()).sum().alias(c) for c in floats]
        ).row(0, named=True)
        bad = {c: n for c, n in bad.items() if n}
        if bad:
            raise FeatureFamilyError(f"feature family {family.name!r} produced NaN/inf in {bad}")
    return frame
