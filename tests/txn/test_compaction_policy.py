"""The space loop's pure policy (txn/tablet/compaction.py): slices, debt and sweeps, log, pace."""

from __future__ import annotations

import pytest

from txn.tablet.compaction import CompactionPolicy, Slice, SlicePlanner

POLICY = CompactionPolicy(slice_versions=100, min_dropped=10, min_fraction=0.1, log_min_entries=50, duty=0.25)


def key(n: int) -> bytes:
    return b"mv%04d" % n


def test_slices_gather_consecutive_chunks_up_to_the_examined_budget() -> None:
    planner = SlicePlanner(POLICY)
    planner.start_pass()
    assert planner.chunk(key(0), key(40), 40, 20) is None
    assert planner.chunk(key(40), key(80), 40, 0) is None
    assert planner.chunk(key(75), key(120), 40, 0) == Slice(key(0), key(120), 120, 20)  # overlap: a pending tombstone
    assert planner.chunk(key(120), key(130), 10, 5) is None
    assert planner.finish_pass() is None  # 5 dropped: below min_dropped, owed
    assert planner.debt == 5 and planner.last_pass_examined == 130


def test_a_slice_that_dropped_too_little_is_owed_until_a_sweep_compacts_everything() -> None:
    planner = SlicePlanner(POLICY)
    for _ in range(2):  # each pass drops 8 of 100 in one slice: below both thresholds
        planner.start_pass()
        assert not planner.sweep
        assert planner.chunk(key(0), key(100), 100, 8) is None
        assert planner.finish_pass() is None
    assert planner.debt == 16  # >= min_dropped and >= 10% of the 100 versions the last pass examined
    planner.start_pass()
    assert planner.sweep
    assert planner.chunk(key(0), key(100), 100, 0) == Slice(key(0), key(100), 100, 0)  # dropped nothing: compacted anyway
    assert planner.chunk(key(100), key(150), 50, 0) is None
    assert planner.finish_pass() == Slice(key(100), key(150), 50, 0)
    assert planner.debt == 0 and not planner.sweep


def test_a_slice_worth_compacting_needs_both_the_count_and_the_fraction() -> None:
    planner = SlicePlanner(POLICY)
    planner.start_pass()
    assert planner.chunk(key(0), key(1), 100, 10) == Slice(key(0), key(1), 100, 10)
    planner.start_pass()
    assert planner.chunk(key(0), key(1), 5, 5) is None
    assert planner.finish_pass() is None  # all of them, but only 5 versions
    planner.start_pass()
    assert planner.chunk(key(0), key(1), 99, 9) is None
    assert planner.chunk(key(1), key(2), 101, 11) == Slice(key(0), key(2), 200, 20)  # exactly 10%


def test_log_compaction_and_pace() -> None:
    assert not POLICY.log_compaction_due(149, 100)
    assert POLICY.log_compaction_due(150, 100)
    assert POLICY.log_compaction_worth(25, 100)  # default share: a quarter of the engine's bytes
    assert not POLICY.log_compaction_worth(24, 100)
    assert not POLICY.log_compaction_worth(0, 0)  # nothing left in table files: LevelDB already dropped it
    assert CompactionPolicy(log_min_share=0).log_compaction_worth(1, 10**9)
    assert POLICY.pause_ns(100) == 300  # duty 0.25: compacting at most a quarter of the time
    assert POLICY.pause_ns(-5) == 0
    assert CompactionPolicy(duty=1.0).pause_ns(10**9) == 0


def test_policy_rejects_nonsense() -> None:
    for bad in ({"slice_versions": 0}, {"min_dropped": 0}, {"log_min_entries": 0}, {"duty": 0}, {"min_fraction": 1.5},
                {"log_min_share": -0.1}, {"log_min_share": 1.5}):
        with pytest.raises(ValueError):
            CompactionPolicy(**bad)
