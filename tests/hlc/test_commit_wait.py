"""commit_wait waits exactly as long as the contract says, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from hlc import HybridClock, Timestamp
from hlc.physical import ManualClock, SkewedClock, VirtualClock
from hlc.physical import VIRTUAL_EPOCH_NS

MAX_OFFSET = 10_000_000


async def test_commit_wait_waits_until_wall_plus_max_offset(autojump_clock: trio.testing.MockClock) -> None:
    clock = HybridClock(VirtualClock(), MAX_OFFSET)
    ts = clock.now()
    start = trio.current_time()
    await clock.commit_wait(ts)
    elapsed_ns = round((trio.current_time() - start) * 1e9)
    assert elapsed_ns == MAX_OFFSET + 1
    assert clock.physical.now_ns() > ts.wall + MAX_OFFSET


async def test_commit_wait_returns_at_once_for_a_past_timestamp(autojump_clock: trio.testing.MockClock) -> None:
    clock = HybridClock(VirtualClock(), MAX_OFFSET)
    await trio.sleep(1)
    start = trio.current_time()
    await clock.commit_wait(Timestamp(VIRTUAL_EPOCH_NS, 0))
    assert trio.current_time() == start


async def test_commit_wait_for_a_timestamp_ahead_of_physical(autojump_clock: trio.testing.MockClock) -> None:
    """A timestamp pushed ahead by a remote clock waits for that lead as well."""
    clock = HybridClock(VirtualClock(), MAX_OFFSET)
    ts = clock.update(Timestamp(clock.physical.now_ns() + 4_000_000, 0))
    start = trio.current_time()
    await clock.commit_wait(ts)
    elapsed_ns = round((trio.current_time() - start) * 1e9)
    assert elapsed_ns == 4_000_000 + MAX_OFFSET + 1


async def test_commit_wait_on_a_drifting_clock_still_reaches_the_bound(autojump_clock: trio.testing.MockClock) -> None:
    physical = VirtualClock(drift_ppm=-200_000)  # runs 20% slow: one sleep is not enough
    clock = HybridClock(physical, MAX_OFFSET)
    ts = clock.now()
    start = trio.current_time()
    await clock.commit_wait(ts)
    assert physical.now_ns() > ts.wall + MAX_OFFSET
    elapsed_ns = round((trio.current_time() - start) * 1e9)
    assert elapsed_ns >= (MAX_OFFSET + 1) * 10 // 8


async def test_skewed_clock_changes_take_effect_while_running() -> None:
    base = ManualClock(VIRTUAL_EPOCH_NS)
    skewed = SkewedClock(base, offset_ns=5)
    assert skewed.now_ns() == VIRTUAL_EPOCH_NS + 5
    skewed.set_drift(1_000)  # +1000 ppm
    base.advance(1_000_000)
    assert skewed.now_ns() == VIRTUAL_EPOCH_NS + 1_000_000 + 5 + 1_000
    skewed.bump(-7)
    assert skewed.skew_ns() == 5 + 1_000 - 7
    skewed.clear()
    assert skewed.now_ns() == base.now_ns()
    await skewed.sleep_ns(10)
    assert base.now_ns() == VIRTUAL_EPOCH_NS + 1_000_010


async def test_virtual_clocks_follow_trio_time_with_offset_and_drift(autojump_clock: trio.testing.MockClock) -> None:
    fast = VirtualClock(offset_ns=3, drift_ppm=100)
    start = fast.now_ns()
    await trio.sleep(2)
    assert fast.now_ns() - start == 2_000_000_000 + 200_000
