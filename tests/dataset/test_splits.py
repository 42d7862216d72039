from __future__ import annotations

import datetime as dt

import pytest

from atft_pipeline import calendar
from atft_pipeline.dataset.splits import MIN_GAP, DateWindow, SplitConfig, walk_forward
from tests.helpers import REPO_ROOT

DAYS = calendar.trading_days("2021-01-04", "2023-12-29")


def _gap(a_end: dt.date, b_start: dt.date) -> int:
    return DAYS.index(b_start) - DAYS.index(a_end) - 1


def test_chronological_split_keeps_an_embargo_of_the_longest_horizon():
    split = SplitConfig.from_dates(DAYS, 0.15, 0.15)
    assert split.train.start == DAYS[0] and split.test.end == DAYS[-1]
    assert _gap(split.train.end, split.val.start) == MIN_GAP == 21
    assert _gap(split.val.end, split.test.start) == MIN_GAP
    # targets of the last train row (t+1+20) end before the first validation day
    last_target_day = DAYS[DAYS.index(split.train.end) + MIN_GAP]
    assert last_target_day < split.val.start
    assert split.split_of(split.val.start) == "val"
    assert split.split_of(DAYS[DAYS.index(split.train.end) + 1]) is None


def test_a_too_small_gap_is_rejected_with_the_windows_named():
    with pytest.raises(ValueError, match=r"between train .* and val"):
        SplitConfig(
            train=DateWindow(start=DAYS[0], end=DAYS[100]),
            val=DateWindow(start=DAYS[110], end=DAYS[200]),
            test=DateWindow(start=DAYS[230], end=DAYS[300]),
        )
    with pytest.raises(ValueError):
        SplitConfig(
            train=DateWindow(start=DAYS[0], end=DAYS[100]),
            val=DateWindow(start=DAYS[122], end=DAYS[200]),
            test=DateWindow(start=DAYS[222], end=DAYS[300]),
            gap=5,  # below the minimum
        )


def test_unknown_keys_are_errors():
    with pytest.raises(ValueError, match="extra"):
        SplitConfig.model_validate(
            {"train": {"start": DAYS[0], "end": DAYS[10]}, "val": {"start": DAYS[40], "end": DAYS[50]},
             "test": {"start": DAYS[80], "end": DAYS[90]}, "embargo": 3}
        )


def test_walk_forward_folds_slide_and_end_at_the_last_day():
    folds = walk_forward(DAYS, n_folds=3, train_days=250, val_days=60, test_days=60)
    assert len(folds) == 3
    assert folds[-1].test.end == DAYS[-1]
    for fold in folds:
        assert len(fold.val.days()) == 60 and len(fold.test.days()) == 60
        assert len(fold.train.days()) == 250
    starts = [DAYS.index(f.test.start) for f in folds]
    assert starts[1] - starts[0] == 60 and starts[2] - starts[1] == 60


def test_shipped_configs_validate():
    from atft_pipeline.config import load_config

    from atft_pipeline.tuning import load_search_space

    for path in (REPO_ROOT / "configs").glob("*.yaml"):
        if path.name == "tuning.yaml":  # a search file over the demo configuration
            load_search_space(path, load_config(REPO_ROOT / "configs" / "demo.yaml"))
            continue
        config = load_config(path)
        config.check_builds()
        split = config.splits.resolve(DAYS)
        assert split.train.end < split.val.start < split.test.start, path


def test_unknown_config_keys_are_errors(tmp_path):
    from atft_pipeline.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("dataset:\n  familes: [price]\n")
    with pytest.raises(ConfigError, match="familes"):
        load_config(path)
    path.write_text("model:\n  overrides: {hiddn: 8}\n")
    with pytest.raises(ConfigError, match="hiddn"):
        load_config(path).check_builds()
