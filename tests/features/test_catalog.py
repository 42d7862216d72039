"""The catalog is the single declaration of every dataset column, and docs/features.md is its output."""

from __future__ import annotations

import polars as pl
import pytest

from atft_pipeline.features.catalog import CatalogError, FeatureCatalog, FeatureFamily, FeatureSpec
from atft_pipeline.features.docs import catalog_markdown
from atft_pipeline.features.registry import default_catalog, enabled_families, entitled_families
from atft_pipeline.jquants.endpoints import Plan
from tests.helpers import REPO_ROOT



def test_every_family_on_gives_at_least_300_feature_columns():
    catalog = default_catalog()
    columns = catalog.feature_columns()
    assert len(columns) >= 300
    assert len(columns) == len(set(columns))
    assert catalog.expected_columns()[:5] == ["date", "code", "sector33", "market_segment", "universe"]
    assert catalog.expected_columns()[-4:] == ["target_1d", "target_5d", "target_10d", "target_20d"]


def test_docs_features_md_equals_the_catalog():
    assert (REPO_ROOT / "docs" / "features.md").read_text() == catalog_markdown(default_catalog()), (
        "regenerate with: atft catalog --markdown > docs/features.md"
    )


def test_expected_columns_are_a_pure_function_of_the_enabled_families():
    catalog = default_catalog()
    light = enabled_families(catalog, Plan.LIGHT, None, [])
    assert "statements" in light and "margin_weekly" not in light and "short_selling" not in light
    cols = catalog.expected_columns(light)
    assert cols == catalog.expected_columns(list(reversed(light)))  # catalog order, not input order
    assert not any(c.startswith("mrgw_") for c in cols)
    assert set(entitled_families(catalog, Plan.PREMIUM)) == set(catalog.families)


def test_a_column_declared_twice_is_rejected():
    def compute(_):
        return pl.LazyFrame()

    a = FeatureFamily("a", (), 0, (FeatureSpec("x", "x"),), compute)
    b = FeatureFamily("b", (), 0, (FeatureSpec("x", "x again"),), compute)
    with pytest.raises(CatalogError, match="'x' declared by 'a' and 'b'"):
        FeatureCatalog([a, b])


def test_naming_a_family_the_plan_does_not_entitle_is_an_error():
    with pytest.raises(Exception, match="margin_weekly"):
        enabled_families(default_catalog(), Plan.FREE, ["price", "margin_weekly"], [])


def test_docs_raw_sources_md_equals_the_source_table():
    from atft_pipeline.jquants.docs import raw_sources_markdown

    assert (REPO_ROOT / "docs" / "raw_sources.md").read_text() == raw_sources_markdown()
