"""The register checker on synthetic histories: clean ones are valid, and each
anomaly injected into one is caught and named."""

from __future__ import annotations

import random

import pytest

from hlc import Timestamp
from tools.verify_register import (
    AT, READ, READBACK, SCAN, STALE, STRONG, WRITE, RegisterOp, check_liveness, check_register,
)
from txn.sim.elle_records import FAIL, INFO, OK


def ts(n: int) -> Timestamp:
    return Timestamp(1_000 + n, 0)


def w(p: int, t0: int, t1: int, key: str, value: str, at: int | None, outcome: str = OK) -> RegisterOp:
    return RegisterOp(p, WRITE, t0, t1, outcome, key, value, ts=None if at is None else ts(at))


def r(p: int, t0: int, t1: int, key: str, value: str | None, at: int, version: int | None, mode: str = STRONG) -> RegisterOp:
    return RegisterOp(p, READ, t0, t1, OK, key, value, mode, ts(at), None if version is None else ts(version))


def scan(p: int, t0: int, t1: int, at: int, rows: list[tuple[str, str, int]], mode: str = STRONG) -> RegisterOp:
    return RegisterOp(p, SCAN, t0, t1, OK, "", None, mode, ts(at), rows=[(k, v, ts(n)) for k, v, n in rows])


def clean() -> list[RegisterOp]:
    """Two keys, sequential and concurrent operations, an unknown write seen and one never seen."""
    return [
        w(0, 0, 10, "a", "a1", 5),
        w(1, 2, 12, "b", "b1", 8),
        r(2, 15, 20, "a", "a1", 16, 5),
        w(0, 21, 30, "a", "a2", 25),
        r(1, 22, 40, "a", "a1", 23, 5),  # concurrent with the write: the old value is fine
        w(3, 31, 60, "b", "b2", None, INFO),  # outcome unknown, seen later at 35
        w(4, 32, 33, "b", "b3", None, FAIL),  # failed, never seen
        w(5, 34, 90, "a", "a3", None, INFO),  # outcome unknown, never seen
        r(2, 61, 70, "b", "b2", 62, 35),
        r(1, 71, 72, "a", "a1", 10, 5, mode=AT),  # a past read
        r(1, 73, 74, "b", None, 6, None, mode=STALE),  # before b's first write
        scan(2, 75, 80, 76, [("a", "a2", 25), ("b", "b2", 35)]),
        r(0, 81, 82, "a", "a2", 25, 25, mode=READBACK),
    ]


def names(history: list[RegisterOp]) -> tuple[str, ...]:
    return check_register(history).names()


def test_clean_history_is_valid() -> None:
    verdict = check_register(clean())
    assert verdict.valid, [str(a) for a in verdict.anomalies]
    assert verdict.stat("unknown_writes_seen") == 1


def test_random_sequential_histories_are_valid() -> None:
    """A serial model: each op runs alone, timestamps rise with real time."""
    rng = random.Random(7)
    for _ in range(20):
        history, state, clock = [], {}, 0
        for i in range(60):
            key = rng.choice("abc")
            clock += 10
            if rng.random() < 0.4:
                history.append(w(i % 4, clock, clock + 5, key, f"v{i}", clock + 1))
                state[key] = (f"v{i}", clock + 1)
            else:
                value, version = state.get(key, (None, None))
                history.append(r(i % 4, clock, clock + 5, key, value, clock + 2, version))
        assert check_register(history).valid


@pytest.mark.parametrize("name, edit", [
    ("garbage-read", lambda h: h + [r(9, 100, 101, "a", "never", 100, 99)]),
    ("aborted-read", lambda h: h + [r(9, 100, 101, "b", "b3", 100, 34)]),
    ("wrong-version-ts", lambda h: h + [r(9, 100, 101, "a", "a2", 100, 26)]),
    ("future-read", lambda h: h + [r(9, 100, 101, "a", "a2", 24, 25, mode=AT)]),
    ("inconsistent-unknown-write", lambda h: h + [r(9, 100, 101, "b", "b2", 100, 36)]),
    ("duplicate-timestamp", lambda h: h + [w(9, 100, 101, "a", "a9", 25)]),
    # a past read that misses the version acknowledged at 25 (reads at 30 must see a2)
    ("stale-read", lambda h: h + [r(9, 100, 101, "a", "a1", 30, 5, mode=AT)]),
    # an acknowledged write not readable at its own timestamp
    ("lost-write", lambda h: h + [r(9, 100, 101, "a", "a1", 25, 5, mode=READBACK)]),
    # once an unknown-outcome write was seen, it happened: a later read at or above its ts must see it
    ("stale-read", lambda h: h + [r(9, 100, 101, "b", "b1", 50, 8, mode=AT)]),
    # a scan that leaves out a key with a committed version below its timestamp
    ("stale-read", lambda h: h + [scan(9, 100, 101, 100, [("a", "a2", 25)], mode=AT)]),
])
def test_each_injected_anomaly_is_caught(name: str, edit) -> None:
    verdict = check_register(edit(clean()))
    assert not verdict.valid
    assert name in verdict.names(), [str(a) for a in verdict.anomalies]
    assert all(a.explanation for a in verdict.anomalies)


def test_strong_read_missing_an_acknowledged_write_is_not_linearizable() -> None:
    # a2 acknowledged at 30 (harness time); the strong read invoked at 31 returns a1 with
    # a read ts below a2's: the timestamps are consistent with each other, real time is not
    history = [w(0, 0, 10, "a", "a1", 5), w(0, 20, 30, "a", "a2", 25), r(1, 31, 35, "a", "a1", 20, 5)]
    assert {"stale-strong-read", "realtime-write-read"} <= set(names(history))


def test_strong_read_must_not_see_a_write_invoked_after_it_completed() -> None:
    history = [w(0, 0, 10, "a", "a1", 5), r(1, 11, 12, "a", "a2", 30, 25), w(0, 20, 30, "a", "a2", 25)]
    assert "read-from-the-future" in names(history)


def test_strong_reads_do_not_go_backwards() -> None:
    # the first read saw a2 (an unknown write); a strong read invoked after it completed returns a1
    history = [w(0, 0, 10, "a", "a1", 5), w(2, 11, 99, "a", "a2", None, INFO),
               r(1, 20, 30, "a", "a2", 22, 21), r(3, 31, 40, "a", "a1", 32, 5)]
    assert "stale-strong-read" in names(history)


@pytest.mark.parametrize("history, name", [
    # write-then-write: the later write on another key got a smaller timestamp
    ([w(0, 0, 10, "a", "a1", 50), w(1, 11, 20, "b", "b1", 40)], "realtime-write-write"),
    # write-then-read: a strong read of another key at a timestamp below an acknowledged write
    ([w(0, 0, 10, "a", "a1", 50), r(1, 11, 20, "b", None, 40, None)], "realtime-write-read"),
    # read-then-write: a (stale) read saw version 50; a write invoked after it gets 40
    ([w(0, 0, 100, "a", "a1", 50, INFO), r(1, 1, 10, "a", "a1", 60, 50, mode=STALE), w(2, 11, 20, "b", "b1", 40)],
     "realtime-read-write"),
    # read-then-read: a strong read below a version another read observed before it began
    ([w(0, 0, 100, "a", "a1", 50, INFO), r(1, 1, 10, "a", "a1", 60, 50, mode=STALE), r(2, 11, 20, "b", None, 45, None)],
     "realtime-read-read"),
])
def test_timestamps_must_respect_real_time(history: list[RegisterOp], name: str) -> None:
    assert name in names(history)


def test_concurrent_operations_may_take_any_timestamp_order() -> None:
    history = [w(0, 0, 20, "a", "a1", 50), w(1, 5, 25, "b", "b1", 40), r(2, 10, 30, "b", None, 30, None)]
    assert check_register(history).valid


def test_liveness_needs_every_tablet_to_serve_after_the_heal() -> None:
    groups = {"t1": ["a"], "t2": ["b"]}
    history = [w(0, 0, 10, "a", "a1", 5), w(0, 100, 110, "a", "a2", 105), r(1, 100, 105, "b", None, 1, None, mode=AT)]
    history[2] = RegisterOp(1, READ, 100, 105, FAIL, "b", error="no leader")
    anomalies = check_liveness(history, 50, groups)
    assert [a.name for a in anomalies] == ["unavailable-after-heal"] and "t2" in anomalies[0].explanation
    assert check_liveness(history + [scan(2, 120, 130, 125, [("a", "a2", 105)])], 50, groups) == []
