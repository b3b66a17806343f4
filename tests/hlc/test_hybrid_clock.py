"""HybridClock properties over random schedules of several clocks exchanging messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hlc import ClockOffsetError, HybridClock, Timestamp
from hlc.physical import ManualClock

MAX_OFFSET = 1_000_000  # 1 ms
START = 1_800_000_000_000_000_000

# One step of a schedule: (kind, node, other node, amount)
steps = st.lists(
    st.tuples(st.sampled_from(["now", "send", "tick"]), st.integers(0, 2), st.integers(0, 2), st.integers(0, 300_000)),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(offsets=st.lists(st.integers(-MAX_OFFSET // 2, MAX_OFFSET // 2), min_size=3, max_size=3), schedule=steps)
def test_clocks_within_bound_stay_monotonic_causal_and_bounded(offsets: list[int], schedule: list) -> None:
    true_time = START
    physical = [ManualClock(true_time + offset) for offset in offsets]
    clocks = [HybridClock(p, MAX_OFFSET) for p in physical]
    last = [Timestamp.MIN] * 3
    for events, (kind, node, other, amount) in enumerate(schedule, start=1):
        if kind == "tick":
            true_time += amount
            for p, offset in zip(physical, offsets):
                p.set(true_time + offset)
            continue
        if kind == "now":
            ts = clocks[node].now()
        else:
            sent = clocks[other].now()
            assert sent > last[other]
            last[other] = sent
            ts = clocks[node].update(sent)  # pairwise offsets are within the bound: never rejected
            assert ts > sent, "causality: the receiver's clock passes the message's timestamp"
            assert clocks[node].now() > sent
            ts = clocks[node].last
        assert ts > last[node], "strictly increasing per node"
        last[node] = ts
        assert ts.wall >= physical[node].now_ns(), "never behind the physical clock"
        assert ts.wall - physical[node].now_ns() <= MAX_OFFSET, "lead over physical stays within max_offset"
        assert ts.logical <= 3 * events, "logical counter stays small (at most 3 readings a step)"


@settings(max_examples=150, deadline=None)
@given(
    schedule=st.lists(
        st.tuples(st.sampled_from(["now", "send", "jump"]), st.integers(0, 2), st.integers(0, 2),
                  st.integers(-5 * MAX_OFFSET, 5 * MAX_OFFSET)),
        max_size=120,
    )
)
def test_jumps_and_rejections_never_break_monotonicity(schedule: list) -> None:
    physical = [ManualClock(START) for _ in range(3)]
    clocks = [HybridClock(p, MAX_OFFSET) for p in physical]
    last = [Timestamp.MIN] * 3
    for kind, node, other, amount in schedule:
        if kind == "jump":  # physical clocks jump, backwards too
            physical[node].advance(amount)
            continue
        if kind == "now":
            ts = clocks[node].now()
        else:
            sent = clocks[other].now()
            last[other] = max(last[other], sent)
            before = clocks[node].last
            lead = sent.wall - physical[node].now_ns()
            try:
                ts = clocks[node].update(sent)
            except ClockOffsetError as error:
                assert lead > MAX_OFFSET
                assert error.offset_ns == lead
                assert clocks[node].last == before, "a rejected remote leaves the clock unchanged"
                continue
            assert lead <= MAX_OFFSET
            assert ts > sent
        assert ts > last[node]
        last[node] = ts


def test_update_exactly_at_the_bound_is_accepted_and_beyond_is_rejected() -> None:
    physical = ManualClock(START)
    clock = HybridClock(physical, MAX_OFFSET)
    assert clock.update(Timestamp(START + MAX_OFFSET, 3)) == Timestamp(START + MAX_OFFSET, 4)
    with pytest.raises(ClockOffsetError) as excinfo:
        clock.update(Timestamp(START + MAX_OFFSET + 1, 0))
    assert excinfo.value.offset_ns == MAX_OFFSET + 1
    assert "ahead of the local clock" in str(excinfo.value)


def test_now_after_backward_jump_counts_logically() -> None:
    physical = ManualClock(START)
    clock = HybridClock(physical, MAX_OFFSET)
    first = clock.now()
    physical.advance(-10_000)
    assert clock.now() == Timestamp(first.wall, 1)
    assert clock.now() == Timestamp(first.wall, 2)
    physical.advance(20_000)
    assert clock.now() == Timestamp(START + 10_000, 0)


def test_max_offset_must_be_positive() -> None:
    with pytest.raises(ValueError):
        HybridClock(ManualClock(), 0)
