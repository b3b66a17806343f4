"""The HLC's logical counter cannot be used to kill a node.

The attack these tests replay: an envelope whose HLC is a few ms ahead (within
max_offset) carrying logical counter 2**32 - 2 used to be absorbed by
`update()`, and the next `now()` asserted on the overflow.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hlc import LOGICAL_LIMIT, ClockLogicalError, ClockOffsetError, HybridClock, Timestamp
from hlc.physical import ManualClock
from hlc.timestamp import LOGICAL_MAX, WALL_MAX

MAX_OFFSET = 250_000_000  # 250 ms, the cluster default
START = 1_800_000_000_000_000_000


def test_attack_remote_near_logical_max_is_rejected_and_the_node_keeps_going() -> None:
    physical = ManualClock(START)
    clock = HybridClock(physical, MAX_OFFSET)
    before = clock.now()
    attack = Timestamp(START + 5_000_000, LOGICAL_MAX - 1)  # 5 ms ahead: within max_offset
    with pytest.raises(ClockLogicalError) as excinfo:
        clock.update(attack)
    assert isinstance(excinfo.value, ClockOffsetError), "existing receive paths catch it as a skewed message"
    assert str(LOGICAL_MAX - 1) in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert clock.last == before, "a rejected remote leaves the clock unchanged"
    assert clock.now() == Timestamp(START, 1)


def test_remote_at_the_limit_is_rejected_just_below_is_absorbed() -> None:
    physical = ManualClock(START)
    clock = HybridClock(physical, MAX_OFFSET)
    with pytest.raises(ClockLogicalError):
        clock.update(Timestamp(START, LOGICAL_LIMIT))
    assert clock.last == Timestamp.MIN
    # Absorbing LIMIT - 1 at the same wall would need LIMIT: the counter carries into the wall.
    assert clock.update(Timestamp(START, LOGICAL_LIMIT - 1)) == Timestamp(START + 1, 0)
    assert clock.now() == Timestamp(START + 1, 1)


def test_now_carries_into_the_wall_instead_of_overflowing() -> None:
    physical = ManualClock(START)  # frozen: every reading ties with the last wall
    clock = HybridClock(physical, MAX_OFFSET)
    assert clock.update(Timestamp(START, LOGICAL_LIMIT - 2)) == Timestamp(START, LOGICAL_LIMIT - 1)
    assert clock.now() == Timestamp(START + 1, 0)
    assert clock.now() == Timestamp(START + 1, 1)


def test_update_with_both_counters_at_the_limit_carries() -> None:
    physical = ManualClock(START)
    clock = HybridClock(physical, MAX_OFFSET)
    assert clock.update(Timestamp(START + 10, LOGICAL_LIMIT - 3)) == Timestamp(START + 10, LOGICAL_LIMIT - 2)
    assert clock.now() == Timestamp(START + 10, LOGICAL_LIMIT - 1)
    assert clock.update(Timestamp(START + 10, LOGICAL_LIMIT - 1)) == Timestamp(START + 11, 0)


# Remote walls: mostly near the physical clock (both sides of the bound), some anywhere.
remote_walls = st.one_of(
    st.integers(-2 * MAX_OFFSET, 2 * MAX_OFFSET).map(lambda delta: ("near", delta)),
    st.integers(0, WALL_MAX).map(lambda wall: ("absolute", wall)),
)
logicals = st.one_of(
    st.integers(0, LOGICAL_MAX),
    st.sampled_from([0, 1, LOGICAL_LIMIT - 2, LOGICAL_LIMIT - 1, LOGICAL_LIMIT, LOGICAL_MAX - 1, LOGICAL_MAX]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("now")),
        st.tuples(st.just("update"), remote_walls, logicals),
        st.tuples(st.just("jump"), st.integers(-10 * MAX_OFFSET, 10 * MAX_OFFSET)),
        st.tuples(st.just("burst"), st.integers(1, 50)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations=operations)
def test_any_sequence_only_ever_rejects_and_stays_strictly_increasing(operations: list) -> None:
    physical = ManualClock(START)
    clock = HybridClock(physical, MAX_OFFSET)
    last = Timestamp.MIN
    for operation in operations:
        kind = operation[0]
        if kind == "jump":
            physical.advance(operation[1])
            continue
        if kind in ("now", "burst"):
            for _ in range(operation[1] if kind == "burst" else 1):
                ts = clock.now()
                assert ts > last
                last = ts
        else:
            (how, amount), logical = operation[1], operation[2]
            wall = physical.now_ns() + amount if how == "near" else amount
            remote = Timestamp(wall, logical)
            try:
                ts = clock.update(remote)
            except ClockOffsetError:
                assert remote.wall - physical.now_ns() > MAX_OFFSET or logical >= LOGICAL_LIMIT
                assert clock.last == last, "a rejected remote leaves the clock unchanged"
                continue
            assert ts > remote and ts > last
            last = ts
        assert last.logical < LOGICAL_LIMIT, "we never send what a peer would reject"
        assert last.wall >= physical.now_ns()
