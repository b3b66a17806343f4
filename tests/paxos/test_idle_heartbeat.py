"""A quiet leader heartbeats every `idle_heartbeat_ns`; its followers do not time out in between.

paxos/replica.py: a leader with nothing appended since its last heartbeat,
everything chosen, and every follower holding every slot and answering sends
its next heartbeat after `idle_heartbeat_ns` instead of `heartbeat_ns`; a
proposal goes out at once as always, and the heartbeat after it is a normal
one again, `heartbeat_ns` after the proposal at the latest (it tells the
followers the slot was chosen). A follower that accepts an Accept times out no earlier than the
lease it grants ends (campaign() would only defer until then), so the longer
gap never wakes it, and the lease still holds across it.
"""

from __future__ import annotations

import pytest

from paxos.replica import Role
from paxos.types import PaxosConfig
from tests.paxos.script import MS, ScriptCluster

CONFIG = PaxosConfig(heartbeat_ns=50 * MS, idle_heartbeat_ns=300 * MS, election_timeout_min_ns=300 * MS,
                     election_timeout_max_ns=300 * MS)


def led_by_n1() -> ScriptCluster:
    c = ScriptCluster(config=CONFIG)
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=8)
    assert c.cores["n1"].role is Role.LEADER
    return c


def heartbeat_at(c: ScriptCluster, ms: int, silent: str = "") -> int:
    """Tick the leader at `ms`, deliver the heartbeats and replies (none to or from `silent`); the next
    heartbeat's time in ms."""
    c.at(ms)
    c.tick("n1")
    c.drop(lambda s, d, m: silent in (s, d))
    c.deliver(rounds=2)
    return c.cores["n1"].next_heartbeat_ns // MS


def test_a_quiet_leader_heartbeats_at_the_idle_interval_and_a_write_ends_it() -> None:
    c = led_by_n1()
    leader = c.cores["n1"]
    assert leader.next_heartbeat_ns == 50 * MS, "the first heartbeat after the start no-op is a normal one"
    assert heartbeat_at(c, 50) == 350, "then nothing was appended and everyone holds everything: quiet"
    assert leader.counters["paxos.idle_heartbeat"] == 1
    assert heartbeat_at(c, 350) == 650
    c.at(400)
    slot = c.propose("n1", b"w")
    c.deliver(rounds=2)
    assert c.cores["n2"].match_index == slot == leader.chosen_index, "a proposal is sent at once, not at the next heartbeat"
    assert c.cores["n2"].chosen_index < slot, "the followers learn it was chosen from the next heartbeat"
    assert leader.next_heartbeat_ns == 450 * MS, "which comes after the normal interval, not at the quiet one's 650"
    assert heartbeat_at(c, 450) == 500, "something was appended since the last heartbeat: a normal one"
    assert c.cores["n2"].chosen_index == c.cores["n3"].chosen_index == slot
    assert heartbeat_at(c, 500) == 800, "and quiet again after a heartbeat with nothing new"


def test_a_follower_that_is_behind_or_silent_keeps_the_normal_interval() -> None:
    c = led_by_n1()
    heartbeat_at(c, 50)
    c.at(100)
    c.propose("n1", b"w")
    c.deliver(lambda s, d, m: d != "n3" and s != "n3", rounds=2)  # n3 misses the write
    assert c.cores["n1"].chosen_index > c.cores["n3"].match_index
    c.at(350)
    c.tick("n1")
    assert c.cores["n1"].next_heartbeat_ns == 400 * MS, "n3 lacks a slot: not quiet"
    c.deliver(rounds=3)  # the heartbeat's resend reaches n3, which catches up
    assert c.cores["n3"].match_index == c.cores["n1"].last_index
    assert heartbeat_at(c, 400) == 700, "everyone holds everything again: quiet"
    assert heartbeat_at(c, 700, silent="n2") == 1000, "n2 stops answering"
    assert heartbeat_at(c, 1000, silent="n2") == 1300, "its last answer is 600 ms old: within twice the interval"
    assert heartbeat_at(c, 1300, silent="n2") == 1350, "900 ms: heartbeats come at the normal pace again"


def test_followers_do_not_time_out_between_idle_heartbeats_and_the_lease_holds() -> None:
    c = led_by_n1()
    for ms in (50, 350, 650, 950, 1250, 1550):
        assert heartbeat_at(c, ms) == ms + 300
        for follower in ("n2", "n3"):
            core = c.cores[follower]
            # Its timeout lies past the lease it grants: a 300 ms gap never wakes it.
            assert core.election_deadline_ns > core.lease_granted_until_ns > (ms + 300) * MS
        c.at(ms + 299)
        for follower in ("n2", "n3"):
            c.tick(follower)
        assert not c.pending, "no follower campaigned"
        assert c.cores["n1"].has_lease(c.now)
    assert "paxos.prevotes" not in c.cores["n2"].counters and "paxos.prevotes" not in c.cores["n3"].counters


def test_a_follower_still_times_out_once_the_leader_is_gone() -> None:
    c = led_by_n1()
    heartbeat_at(c, 50)
    n2 = c.cores["n2"]
    deadline_ms = n2.election_deadline_ns // MS
    # The lease n2 granted at 50 ms ends a lease and the drift allowance later; it times out a quarter of
    # its draw (300 ms) after.
    assert deadline_ms == 50 + c.config.lease_ns // MS + c.config.drift_allowance_ns // MS + 300 // 4
    c.at(deadline_ms)
    c.tick("n2")
    assert n2.counters.get("paxos.prevotes") == 1, "the leader went silent: n2 asks for pre-votes"


def test_a_quiet_leaders_heartbeats_move_earlier_onto_its_grid_never_later() -> None:
    # A grid of the idle interval with points at 120, 420, 720 ... ms (a node's: txn/net/coarse_timer.py).
    def on_grid(deadline_ns: int, period_ns: int) -> int:
        return (deadline_ns + 180 * MS) // period_ns * period_ns - 180 * MS

    c = ScriptCluster(config=CONFIG, quiet_heartbeat_at=on_grid)
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=8)
    leader = c.cores["n1"]
    assert heartbeat_at(c, 50) == 120, "quiet: the grid point before 350 ms, earlier than the idle interval"
    assert heartbeat_at(c, 120) == 420 and heartbeat_at(c, 420) == 720, "then exactly on the grid"
    c.at(450)
    c.propose("n1", b"w")
    c.deliver(rounds=2)
    assert heartbeat_at(c, 720) == 770, "a normal heartbeat after a write is not moved"
    assert heartbeat_at(c, 770) == 1020, "quiet again: back on the grid"
    assert leader.has_lease(c.now)

    # A grid point later than the idle interval is never taken: the lease needs the renewals.
    late = ScriptCluster(config=CONFIG, quiet_heartbeat_at=lambda deadline_ns, period_ns: deadline_ns + 100 * MS)
    late.at(0)
    late.campaign("n1")
    late.deliver(rounds=8)
    assert heartbeat_at(late, 50) == 350


def test_the_idle_interval_must_leave_three_renewals_per_lease() -> None:
    with pytest.raises(ValueError, match="idle_heartbeat"):
        PaxosConfig(idle_heartbeat_ns=500 * MS)  # lease 1.2 s: only two renewals
    with pytest.raises(ValueError, match="idle_heartbeat"):
        PaxosConfig(heartbeat_ns=100 * MS, idle_heartbeat_ns=50 * MS)
