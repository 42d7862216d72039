from tests.reliability.cases import CATEGORIES, DOC, render


def test_committed_figure_table_matches_the_suite():
    assert DOC.read_text() == render(), "regenerate with: python -m tests.reliability.cases"


def test_suite_covers_the_required_case_counts():
    total = sum(len(v) for v in CATEGORIES.values())
    bad = len(next(v for k, v in CATEGORIES.items() if k.startswith("Bad inputs")))
    assert total >= 40 and bad >= 20
