"""Bad inputs are blocked before writing: quarantined with a reason naming asset, partition,
column and check; never readable by a dependant; not done until a good answer replaces them."""

from __future__ import annotations

import pytest

from atft_pipeline.storage import PartitionStore, StorageError, lost_partitions
from atft_pipeline.validation.gate import gate_raw_partitions
from tests.reliability.cases import BAD_INPUTS, BadInput
from tests.reliability.conftest import DAYS


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[b.name for b in BAD_INPUTS])
def test_bad_input_is_quarantined_and_never_reaches_a_dependant(case: BadInput, clean_frames, tmp_path):
    store = PartitionStore(tmp_path)
    good = clean_frames[case.asset]
    bad_day = DAYS[1]
    frames = {d: (case.mutate(f) if d == bad_day else f) for d, f in good.items()}

    gate = gate_raw_partitions(store, case.asset, frames, {})

    # only the bad day is blocked; the reason names asset, partition, column and check
    assert list(gate.blocked) == [bad_day]
    assert sorted(gate.accepted) == [d for d in DAYS if d != bad_day]
    reason = gate.blocked[bad_day]
    assert f"column '{case.column}'" in reason and f"'{case.check}'" in reason, reason
    assert f"{case.asset}[{bad_day.isoformat()}]" in gate.describe_blocked()
    for day, frame in gate.accepted.items():
        store.write(case.asset, day, frame)

    # this run's dependants and any later run: the bad day is not done and cannot be read
    keys = [d.isoformat() for d in DAYS]
    assert lost_partitions(store, case.asset, keys) == [bad_day.isoformat()]
    with pytest.raises(StorageError, match=rf"{case.asset}.*{bad_day.isoformat()}: quarantined.*{case.check}"):
        store.scan(case.asset, keys)
    assert store.quarantined(case.asset) == {bad_day.isoformat(): reason}
    # nothing stored was lost or damaged
    assert all(store.problem(case.asset, d) is None for d in gate.accepted)

    # a later good answer replaces it and lifts the quarantine
    again = gate_raw_partitions(store, case.asset, {bad_day: good[bad_day]}, {})
    assert not again.blocked
    store.write(case.asset, bad_day, good[bad_day])
    assert lost_partitions(store, case.asset, keys) == []
    assert store.scan(case.asset, keys).collect().height == sum(f.height for f in good.values())
