"""The tablet leader core's rules, one by one (txn/tablet/leader.py): pure, no trio."""

from __future__ import annotations

from hypothesis import example, given, settings, strategies as st

from hlc import Timestamp
from txn.tablet.leader import Serving, TabletLeaderCore, WriteState

M = 10_000_000  # max_offset_ns
T0 = 1_800_000_000_000_000_000


def ts(wall: int, logical: int = 0) -> Timestamp:
    return Timestamp(wall, logical)


def serving_core() -> TabletLeaderCore:
    core = TabletLeaderCore(M, ts(T0 - 10))
    core.lease_acquired(lease_id=1, lease_start_physical_ns=T0 - 5 * M)
    barrier = core.assign(ts(T0 - 4 * M), commit_wait=False)
    core.barrier_proposed(barrier)
    core.applied(barrier.ts, skipped=False, physical_now_ns=T0 - 4 * M)
    assert core.is_serving
    return core


def test_timestamps_strictly_increase_above_everything_assigned_or_served() -> None:
    core = serving_core()
    a = core.assign(ts(T0), commit_wait=True)
    b = core.assign(ts(T0), commit_wait=True)  # same clock reading: still strictly above
    assert a.ts < b.ts
    read_at = core.strong_read_ts(ts(T0 + 5))
    c = core.assign(ts(T0 + 1), commit_wait=True)  # the clock is behind the read: still above it
    assert read_at < c.ts


def test_a_write_is_invisible_until_its_commit_wait_is_over() -> None:
    core = serving_core()
    write = core.assign(ts(T0), commit_wait=True)
    read_at = ts(T0 + 1)
    assert not core.leader_read_ready(read_at)  # proposed, not applied
    core.applied(write.ts, skipped=False, physical_now_ns=T0 + 1)
    assert write.state is WriteState.APPLIED
    assert not core.leader_read_ready(read_at), "applied but inside commit-wait: a read must not see it"
    assert core.next_wake_ns() == T0 + M + 1
    assert core.tick(T0 + M) == []  # not past ts.wall + max_offset yet
    assert [w.ts for w in core.tick(T0 + M + 1)] == [write.ts]
    assert write.state is WriteState.DONE and core.leader_read_ready(read_at)
    # Reads below the write never waited for it.
    other = core.assign(ts(T0 + 2 * M), commit_wait=True)
    assert core.leader_read_ready(ts(T0 + 2 * M - 1)) and not core.leader_read_ready(other.ts)


def test_a_read_of_one_key_waits_only_for_commands_that_change_it_or_name_no_keys() -> None:
    core = serving_core()
    other = core.assign(ts(T0), commit_wait=True, keys=frozenset({b"b"}))
    same = core.assign(ts(T0 + 1), commit_wait=False, keys=frozenset({b"a", b"c"}))  # a prepare's intents
    read_at = ts(T0 + 2)
    assert core.leader_read_ready(read_at, b"x") and not core.leader_read_ready(read_at, b"a")  # proposed
    core.applied(other.ts, skipped=False, physical_now_ns=T0 + 1)
    core.applied(same.ts, skipped=False, physical_now_ns=T0 + 1)
    assert core.leader_read_ready(read_at, b"a") and core.leader_read_ready(read_at, b"x")
    assert not core.leader_read_ready(read_at, b"b"), "its own key's write in commit-wait"
    assert not core.leader_read_ready(read_at), "a range read waits for every command"
    assert core.leader_read_ready(ts(T0 - 1), b"b"), "a read below the write never waited for it"
    unnamed = core.assign(ts(T0 + 3), commit_wait=False)  # a barrier or a safe-time advance: no keys named
    assert not core.leader_read_ready(unnamed.ts, b"x")
    core.applied(unnamed.ts, skipped=False, physical_now_ns=T0 + 2)
    assert core.leader_read_ready(unnamed.ts, b"x")
    core.tick(T0 + M + 1)
    assert core.leader_read_ready(unnamed.ts, b"b") and core.leader_read_ready(unnamed.ts)


def test_the_mutant_lets_reads_see_writes_in_commit_wait() -> None:
    core = serving_core()
    core.HOLD_READS_UNTIL_COMMIT_WAIT = False
    write = core.assign(ts(T0), commit_wait=True)
    core.applied(write.ts, skipped=False, physical_now_ns=T0 + 1)
    assert core.leader_read_ready(ts(T0 + 1))


def test_replicas_serve_only_reads_whose_commit_waits_are_over_everywhere() -> None:
    core = TabletLeaderCore(M, ts(0))
    safe = ts(T0)
    assert core.replica_visible_ts(safe, physical_now_ns=T0 + M) == ts(T0 - M)
    assert core.replica_visible_ts(safe, physical_now_ns=T0 + 2 * M + 5) == safe
    assert core.replica_visible_ts(ts(T0 - 10**9), physical_now_ns=T0) == ts(T0 - 10**9)  # a stale read: no wait


def test_a_new_lease_waits_out_the_predecessor_on_the_physical_clock() -> None:
    core = TabletLeaderCore(M, ts(0))
    core.lease_acquired(lease_id=7, lease_start_physical_ns=T0)
    assert core.serving is Serving.WAITING_OUT_PREDECESSOR
    assert not core.barrier_due(T0 + 2 * M)
    assert core.barrier_due(T0 + 2 * M + 1)
    barrier = core.assign(ts(T0 + 2 * M + 1), commit_wait=False)
    core.barrier_proposed(barrier)
    assert not core.is_serving
    core.applied(barrier.ts, skipped=False, physical_now_ns=T0 + 3 * M)
    assert core.is_serving


def test_a_skipped_barrier_or_write_is_definitely_not_committed() -> None:
    core = TabletLeaderCore(M, ts(0))
    core.lease_acquired(lease_id=1, lease_start_physical_ns=0)
    barrier = core.assign(ts(T0), commit_wait=False)
    core.barrier_proposed(barrier)
    core.applied(barrier.ts, skipped=True, physical_now_ns=T0)
    assert barrier.state is WriteState.SKIPPED and core.serving is Serving.WAITING_OUT_PREDECESSOR
    write = core.assign(ts(T0 + 5), commit_wait=True)
    core.applied(write.ts, skipped=True, physical_now_ns=T0 + 5)
    assert write.state is WriteState.SKIPPED and not core.pending


def test_known_not_chosen_commands_do_not_block_reads() -> None:
    core = serving_core()
    write = core.assign(ts(T0), commit_wait=True)
    core.not_chosen(write)
    assert core.leader_read_ready(ts(T0 + 10**9))


def test_a_lease_change_forgets_unapplied_commands_but_finishes_applied_ones() -> None:
    core = serving_core()
    applied = core.assign(ts(T0), commit_wait=True)
    unapplied = core.assign(ts(T0 + 1), commit_wait=True)
    core.applied(applied.ts, skipped=False, physical_now_ns=T0 + 2)
    core.lease_lost()
    assert unapplied.state is WriteState.UNKNOWN and list(core.pending) == [applied.ts]
    assert [w.ts for w in core.tick(T0 + M + 1)] == [applied.ts]  # committed: acknowledged after commit-wait


def test_a_snapshot_install_raises_the_floor() -> None:
    core = TabletLeaderCore(M, ts(5))
    core.snapshot_installed(ts(T0))
    assert core.assign(ts(10), commit_wait=False).ts > ts(T0)


def test_a_closed_timestamp_waits_for_every_assigned_command_and_bounds_later_ones() -> None:
    """Followers serve reads up to a closed timestamp once they applied the leader's applied index with it:
    so no command at or below it may still be unapplied on the leader, or get a timestamp later."""
    core = serving_core()
    write = core.assign(ts(T0), commit_wait=True)
    assert core.close(ts(T0 + 5)) is None, "a command not applied yet may land above the index sent with C"
    core.applied(write.ts, skipped=False, physical_now_ns=T0 + 1)
    closed = core.close(ts(T0 + 5))  # in commit-wait is fine: followers hold reads by their horizon rule
    assert closed == ts(T0 + 5)
    assert core.assign(ts(T0 + 1), commit_wait=True).ts > closed, "a later command must land above C"
    core.lease_lost()
    assert core.close(ts(T0 + 9)) is None, "only a serving leader closes timestamps"


def scanned_due(core: TabletLeaderCore, physical_now_ns: int) -> set[Timestamp]:
    """What `tick` must finish, by its definition: every applied command past its release."""
    return {c.ts for c in core.pending.values() if c.state is WriteState.APPLIED and physical_now_ns > c.release_after_ns}


def scanned_next_wake(core: TabletLeaderCore) -> int | None:
    waits = [c.release_after_ns for c in core.pending.values() if c.state is WriteState.APPLIED]
    return min(waits) + 1 if waits else None


operations = st.lists(st.one_of(
    st.tuples(st.just("assign"), st.integers(0, 3 * M), st.booleans()),
    st.tuples(st.just("apply"), st.integers(0, 40), st.booleans()),  # the n-th pending command; skipped?
    st.tuples(st.just("not_chosen"), st.integers(0, 40), st.just(False)),
    st.tuples(st.just("tick"), st.integers(0, 2 * M), st.just(False)),  # the clock moves on by this much
    st.tuples(st.just("lease"), st.integers(0, 1), st.just(False)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(operations)
@example([("assign", 0, True), ("assign", 1, True), ("apply", 0, False), ("apply", 1, False),
          ("not_chosen", 1, False), ("tick", 2 * M, False)])  # a queue entry gone stale behind a live one
@example([("assign", 0, True), ("apply", 0, False), ("apply", 0, False)])  # applied twice: queued once
@example([("assign", 0, True), ("apply", 0, False), ("not_chosen", 0, False)])  # the first entry gone stale
def test_the_commit_wait_queue_finishes_what_a_scan_of_every_command_would(steps) -> None:
    """`tick`, `next_wake_ns` and `waiting` read a heap by release time (module docstring): at every
    step they agree with a scan of every pending command, however commands were applied (out of
    timestamp order too), skipped, lost, or forgotten by a lease change."""
    core = serving_core()
    now = T0
    commands: list = []
    for kind, number, flag in steps:
        if kind == "assign":
            commands.append(core.assign(ts(now + number), commit_wait=flag))
        elif kind == "apply" and commands:
            command = commands[number % len(commands)]
            core.applied(command.ts, skipped=flag, physical_now_ns=now, release=False)
        elif kind == "not_chosen" and commands:
            command = commands[number % len(commands)]
            if not command.finished:
                core.not_chosen(command)
        elif kind == "tick":
            now += number
            due = scanned_due(core, now)
            finished = core.tick(now)
            assert {c.ts for c in finished} == due and len(finished) == len(due)
            assert all(c.state is WriteState.DONE and c.ts not in core.pending for c in finished)
        elif kind == "lease":
            core.lease_lost() if number else core.lease_acquired(lease_id=2, lease_start_physical_ns=now)
        assert core.next_wake_ns() == scanned_next_wake(core)
        assert core.waiting() == sum(1 for c in core.pending.values() if c.state is WriteState.APPLIED)
