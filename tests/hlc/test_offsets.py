"""Clock-offset estimation and the fencing decision."""

from __future__ import annotations

from hlc.offsets import OffsetMonitor

MS = 1_000_000


def probe(monitor: OffsetMonitor, peer: str, now: int, offset: int, rtt: int = 2 * MS) -> None:
    monitor.record(peer, now, now + rtt // 2 + offset, now + rtt)


def test_estimate_and_error_bound() -> None:
    monitor = OffsetMonitor(["n2", "n3"], 10 * MS)
    probe(monitor, "n2", 1_000 * MS, 3 * MS, rtt=4 * MS)
    assert monitor.offsets() == (("n2", 3 * MS, 2 * MS),)


def test_boot_grace_then_serving() -> None:
    monitor = OffsetMonitor(["n2", "n3"], 10 * MS)
    assert monitor.evaluate(0).fenced and "waiting" in monitor.reason
    probe(monitor, "n2", 10 * MS, 1 * MS)
    assert not monitor.evaluate(20 * MS).fenced  # itself and n2: a majority of three
    five = OffsetMonitor(["n2", "n3", "n4", "n5"], 10 * MS)
    probe(five, "n2", 10 * MS, 1 * MS)
    assert five.evaluate(20 * MS).fenced  # two of five are not a majority
    probe(five, "n3", 10 * MS, -2 * MS)
    assert not five.evaluate(20 * MS).fenced


def test_fences_on_majority_and_recovers_after_streak() -> None:
    monitor = OffsetMonitor(["n2", "n3"], 10 * MS)
    now = 0
    for _ in range(2):
        now += 100 * MS
        probe(monitor, "n2", now, 0)
        probe(monitor, "n3", now, 0)
    assert not monitor.evaluate(now).fenced
    now += 100 * MS
    probe(monitor, "n2", now, 10 * MS)  # one bad peer: not fenced
    assert not monitor.evaluate(now).fenced
    probe(monitor, "n3", now, -10 * MS)
    state = monitor.evaluate(now)
    assert state.fenced and "beyond 8ms" in state.reason and monitor.fence_events == 1
    for i in range(3):
        now += 100 * MS
        probe(monitor, "n2", now, 0)
        probe(monitor, "n3", now, 0)
        assert monitor.evaluate(now).fenced == (i < 2)


def test_slow_round_trips_neither_fence_nor_count() -> None:
    monitor = OffsetMonitor(["n2", "n3"], 10 * MS)
    probe(monitor, "n2", 0, 50 * MS, rtt=40 * MS)
    assert monitor.offsets() == ()
    # Offset 9ms measured with 2ms error: lower bound 8ms is not beyond the 8ms limit.
    probe(monitor, "n2", 0, 9 * MS, rtt=2 * MS)
    probe(monitor, "n3", 0, 9 * MS, rtt=2 * MS)
    assert not monitor.evaluate(1 * MS).fenced


def test_stale_measurements_expire() -> None:
    monitor = OffsetMonitor(["n2", "n3"], 10 * MS)
    probe(monitor, "n2", 0, 20 * MS)
    probe(monitor, "n3", 0, 20 * MS)
    assert monitor.evaluate(1 * MS).fenced
    assert monitor.evaluate(10_000 * MS).fenced  # stays fenced: nothing fresh says otherwise
