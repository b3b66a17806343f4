"""The clock watch's two sources of round trips: Paxos replies and probes (txn/node/clock_watch.py).

A leader's `Accepted` echoes its send time, so `record_round_trip` measures
the follower for free; the probe loop then probes only the peers no Paxos
round trip measured in the last `PAXOS_SAMPLE_FRESH_S` (trio's clock).
"""

from __future__ import annotations

import trio
import trio.testing

from hlc import HybridClock
from hlc.offsets import FenceCause
from hlc.physical import ManualClock
from txn import api
from txn.net.coarse_timer import GRAIN_S
from txn.net.messaging import PendingCalls, RpcTimeout
from txn.node.clock_watch import PAXOS_SAMPLE_FRESH_S, PROBE_INTERVAL_S, PROBE_OFF_GRID_S, ClockWatch
from txn.wire import Kind

MS = 1_000_000
MAX_OFFSET_NS = 10 * MS


def make_watch(physical: ManualClock) -> ClockWatch:
    return ClockWatch("n1", ["n2", "n3"], HybridClock(physical, MAX_OFFSET_NS), MAX_OFFSET_NS)


async def test_a_paxos_round_trip_bounds_the_peer_offset() -> None:  # record_round_trip reads trio's clock
    physical = ManualClock()
    watch = make_watch(physical)
    # The Accept left 2 ms ago; n2 answered when its clock read ours + 3 ms - 1 ms (mid-flight, 3 ms ahead).
    watch.record_round_trip("n2", 2 * MS, physical.now_ns() + 3 * MS - 1 * MS)
    [(peer, offset_ns, error_ns)] = watch.offsets()
    assert peer == "n2"
    assert offset_ns - error_ns <= 3 * MS <= offset_ns + error_ns
    assert 1 * MS <= error_ns <= 1 * MS + 10_000  # half the round trip, plus the clocks' rate margin
    assert watch.samples["paxos"] == 1 and watch.samples["probe"] == 0


async def test_a_round_trip_that_is_too_long_or_negative_is_not_a_sample() -> None:  # record_round_trip reads trio's clock
    physical = ManualClock()
    watch = make_watch(physical)
    watch.record_round_trip("n2", -1, physical.now_ns())  # an echo from the future: the peer's word only
    watch.record_round_trip("n2", watch.paxos_round_trip_limit_ns + 1, physical.now_ns())  # error over 1 ms
    watch.record_round_trip("n2", 30 * MS, physical.now_ns())  # error 15 ms > the fence limit: says nothing
    watch.record_round_trip("n9", 1 * MS, physical.now_ns())  # not a peer
    assert watch.offsets() == ()
    assert watch.samples["paxos"] == 0 and watch.samples["paxos_dropped"] == 3


async def test_a_wide_round_trip_after_a_step_cannot_pin_the_estimate_between_old_and_new(
        autojump_clock: trio.testing.MockClock) -> None:
    """The step hazard (hlc/offsets.py): precise samples say n2 is at 0; n2's clock steps +5 ms; a wide
    sample (5 +- 4.9 ms) overlaps the old ones, and their intersection would put n2 near +0.2 ms, where
    it is neither before nor after the step. Paxos round trips that wide are not used; the next
    precise one is disjoint from the old samples, which it drops."""
    physical = ManualClock()
    watch = make_watch(physical)
    for _ in range(3):
        watch.record_round_trip("n2", MS // 2, physical.now_ns() - MS // 4)  # n2 at 0, +-0.25 ms
        physical.advance(100 * MS)
        await trio.sleep(0.1)  # at most one sample per PAXOS_SAMPLE_GAP_S
    watch.record_round_trip("n2", 9_800_000, physical.now_ns() - 4_900_000 + 5 * MS)  # after the step: 5 +- 4.9
    [(_, offset_ns, error_ns)] = watch.offsets()
    assert abs(offset_ns) <= error_ns, "the wide sample was not used: still the old estimate, no mix"
    watch.record_round_trip("n2", 1 * MS, physical.now_ns() - MS // 2 + 5 * MS)
    [(_, offset_ns, error_ns)] = watch.offsets()
    assert offset_ns - error_ns <= 5 * MS <= offset_ns + error_ns, "the precise one moved it to the step"


async def test_a_paxos_sample_fences_a_skewed_node_like_a_probe_does() -> None:  # record_round_trip reads trio's clock
    physical = ManualClock()
    watch = make_watch(physical)
    # Both peers agree with each other and are 20 ms ahead of us: we are the clock that ran off.
    for peer in ("n2", "n3"):
        watch.record_round_trip(peer, 1 * MS, physical.now_ns() + 20 * MS)
    state = watch.update_fence()
    assert state.fenced and "skew" in state.cause.value


async def test_a_booting_node_serves_on_its_first_good_sample() -> None:  # record_round_trip reads trio's clock
    physical = ManualClock()
    watch = make_watch(physical)
    assert watch.update_fence().fenced  # no samples yet
    watch.record_round_trip("n2", 1 * MS, physical.now_ns() - MS // 2)
    assert not watch.fenced, "itself and n2 are a majority: serving without waiting for a round"
    assert watch.marks["clock.boot_judged"] == 1


async def test_a_step_seen_by_a_paxos_sample_fences_before_the_next_round(autojump_clock: trio.testing.MockClock) -> None:
    physical = ManualClock()
    watch = make_watch(physical)
    for peer in ("n2", "n3"):
        watch.record_round_trip(peer, 1 * MS, physical.now_ns() - MS // 2)
    assert not watch.update_fence().fenced
    changes: list[bool] = []
    watch.on_change = changes.append
    await trio.sleep(0.1)  # past the gap between two Paxos samples of a peer
    physical.advance(100 * MS)
    watch.record_round_trip("n2", 1 * MS, physical.now_ns() + 20 * MS)  # n2 stepped: alone, n2 is the outlier
    assert not watch.fenced
    watch.record_round_trip("n3", 1 * MS, physical.now_ns() + 20 * MS)  # so did n3: this clock is the outlier
    assert watch.fenced and changes[-1] is True, "fenced on the sample, no round in between"
    assert watch.marks["clock.alarm_judged"] == 2


async def test_the_probe_loop_probes_only_peers_no_paxos_round_trip_measured(autojump_clock: trio.testing.MockClock) -> None:
    # Virtual time: the loop's rounds (0, 0.4, 0.8 ...), its probes half a grain later (0.2, 0.6 ...),
    # and the test's looks (0.3, 0.7 ...) never tie.
    physical = ManualClock()
    watch = make_watch(physical)
    probed: list[str] = []
    sent_at: list[float] = []

    async def call(peer: str, message: object, timeout_s: float) -> object:
        assert isinstance(message, api.ClockProbe)
        probed.append(peer)
        sent_at.append(trio.current_time())
        return api.ClockProbeReply(physical.now_ns())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.probe_loop, call)
        await trio.sleep(PROBE_OFF_GRID_S + PROBE_INTERVAL_S / 4)
        assert sorted(probed) == ["n2", "n3"]  # nothing measured them yet
        for _ in range(5):
            probed.clear()
            physical.advance(int(PROBE_INTERVAL_S * 1e9))
            watch.record_round_trip("n2", 1 * MS, physical.now_ns())  # n2 follows a tablet we lead
            await trio.sleep(PROBE_INTERVAL_S)
            assert probed == ["n3"]
        # n2's heartbeats stop (we lost the lease, or it stopped answering): it is probed again, however
        # the physical clock moves (here: not at all; freshness is judged on trio's monotonic clock).
        probed.clear()
        await trio.sleep(PAXOS_SAMPLE_FRESH_S + PROBE_INTERVAL_S)
        assert "n2" in probed
        nursery.cancel_scope.cancel()
    assert watch.samples["probe"] >= 8 and watch.samples["paxos"] == 5
    assert not watch.fenced
    # Every probe went out off the housekeeping grid (its points GRAIN_S apart), halfway between.
    assert all(abs((t - PROBE_OFF_GRID_S) / GRAIN_S - round((t - PROBE_OFF_GRID_S) / GRAIN_S)) < 1e-6
               for t in sent_at), sent_at


async def test_a_loaded_leader_keeps_one_paxos_sample_per_peer_per_gap(autojump_clock: trio.testing.MockClock) -> None:
    """Every Accepted is a round trip, thousands a second under load; the monitor checks each new sample
    against every one in its 5 s window, so only one per peer per PAXOS_SAMPLE_GAP_S is kept."""
    physical = ManualClock()
    watch = make_watch(physical)
    for _ in range(10):
        for _ in range(1000):
            watch.record_round_trip("n2", MS, physical.now_ns())
            watch.record_round_trip("n3", MS, physical.now_ns())
        physical.advance(100 * MS)
        await trio.sleep(0.1)  # the next busy heartbeat
    assert watch.samples["paxos"] == 20
    assert all(len(state.samples) == 10 for state in watch.monitor.by_peer.values())


async def test_an_alarming_sample_is_confirmed_at_once_so_a_peer_that_then_stops_cannot_keep_this_node_fenced(
        autojump_clock: trio.testing.MockClock) -> None:
    """At boot a probe of n2 came back wide and alarming (its round trip held more than the network: a
    stalled loop, a busy peer); n2 then stopped answering, as a paused process does. A probe sent at once narrows the wide
    sample, and the node serves again: waiting for the next round, it would have had no more samples of
    n2, and the wide one would have kept it fenced for the 5 s window (tests/e2e/test_paused_leader.py)."""
    physical = ManualClock()
    watch = make_watch(physical)
    answered: dict[str, list[float]] = {"n2": [], "n3": []}
    fenced_at: list[tuple[float, bool, FenceCause]] = []
    watch.on_change = lambda fenced: fenced_at.append((trio.current_time(), fenced, watch.monitor.cause))

    async def call(peer: str, message: object, timeout_s: float) -> object:
        if peer == "n2" and len(answered["n2"]) == 2:
            await trio.sleep(timeout_s)  # paused: the kernel takes the probe, nobody answers
            raise RpcTimeout("no response")
        answered[peer].append(trio.current_time())
        if len(answered[peer]) == 1:  # the first probes, both slow to leave (as seen at boot)
            sent_ns = physical.now_ns()
            error_ns, offset_ns = (5 * MS, 47 * MS // 10) if peer == "n2" else (47 * MS // 10, 4 * MS)
            physical.advance(2 * error_ns)
            return api.ClockProbeReply(sent_ns + error_ns + offset_ns)  # n2: 4.7 ms +-5.0, alone beyond 9 ms
        return api.ClockProbeReply(physical.now_ns())  # precise, and in step with ours

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.probe_loop, call)
        await trio.sleep(PROBE_OFF_GRID_S + PROBE_INTERVAL_S / 4)
        nursery.cancel_scope.cancel()
    first_n2 = answered["n2"][0]
    assert (first_n2, True, FenceCause.SKEWED) in fenced_at, f"the wide sample fenced this node at once: {fenced_at}"
    assert answered["n2"] == [first_n2, first_n2], "confirmed by a second probe at once, not at the next round"
    assert watch.marks["clock.confirm_probes"] == 1
    assert not watch.fenced, (watch.reason, fenced_at)


async def test_a_peer_that_alarms_on_every_sample_costs_one_confirmation_per_gap(
        autojump_clock: trio.testing.MockClock) -> None:
    """n2 really is 20 ms ahead: every sample of it alarms, the confirmations' too. They stay one per
    CONFIRM_GAP_S (without the gap, each confirmation would set off the next, forever, in no time)."""
    physical = ManualClock()
    watch = make_watch(physical)
    probes_of_n2: list[float] = []

    async def call(peer: str, message: object, timeout_s: float) -> object:
        if peer == "n2":
            probes_of_n2.append(trio.current_time())
            assert len(probes_of_n2) < 1000, "confirmation probes without end"
            return api.ClockProbeReply(physical.now_ns() + 20 * MS)
        return api.ClockProbeReply(physical.now_ns())

    rounds = 10
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.probe_loop, call)
        await trio.sleep(rounds * PROBE_INTERVAL_S)
        nursery.cancel_scope.cancel()
    assert rounds <= len(probes_of_n2) <= 2 * rounds + 1, probes_of_n2
    assert watch.marks["clock.confirm_probes"] >= rounds // 2
    gaps = [b - a for a, b in zip(probes_of_n2, probes_of_n2[1:])]
    assert sum(1 for gap in gaps if gap < PROBE_INTERVAL_S / 4) <= rounds + 1
    assert not watch.fenced, "n2 is the outlier, not this node"


async def test_a_probe_that_waited_for_its_link_to_be_dialed_is_not_a_sample(autojump_clock: trio.testing.MockClock) -> None:
    """At boot the first probe of a peer goes out while its link is still dialing: its round trip holds
    the TCP connect and the TLS handshake (offset about equal to error, +4.7 ms +-5.2 fenced a node). It
    still opens the link, but only the probes over the open link are samples; the first of them goes
    out at once, so the node serves without waiting a round."""
    physical = ManualClock()
    watch = make_watch(physical)
    links_open: set[str] = set()
    fenced_by: list[FenceCause] = []
    watch.on_change = lambda fenced: fenced_by.append(watch.monitor.cause) if fenced else None

    async def call(peer: str, message: object, timeout_s: float) -> object:
        if peer not in links_open:  # dials first: 9.4 ms of handshakes, the peer reads its clock at the end
            sent_ns = physical.now_ns()
            physical.advance(94 * MS // 10)
            links_open.add(peer)
            return api.ClockProbeReply(sent_ns + 94 * MS // 10)
        return api.ClockProbeReply(physical.now_ns())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.probe_loop, call, lambda peer: peer in links_open)
        await trio.sleep(PROBE_OFF_GRID_S + PROBE_INTERVAL_S / 4)
        assert watch.samples["probe_dialed"] == 2 and watch.samples["probe"] == 2, watch.samples
        assert not watch.fenced, "serving on the probes that followed the dials, within the same round"
        await trio.sleep(PROBE_INTERVAL_S)
        nursery.cancel_scope.cancel()
    assert watch.samples["probe_dialed"] == 2 and watch.samples["probe"] >= 4
    assert not watch.fenced, watch.reason
    assert FenceCause.SKEWED not in fenced_by, "a dial's round trip fenced this node"
    assert all(error < MS for _, _, error in watch.offsets())


async def test_a_probe_is_timed_to_when_its_reply_was_taken_not_when_the_prober_ran_again(
        mock_clock: trio.testing.MockClock) -> None:
    """The reply is handed over (`PendingCalls.resolve`) 1 ms after the probe left; the probing task
    runs again 6 ms later (a loaded event loop). The sample's error is half the 1 ms, not of 7 ms."""
    physical = ManualClock()
    watch = make_watch(physical)
    pending = PendingCalls()

    async def call(peer: str, message: object, timeout_s: float) -> object:
        request_id, waiter = pending.open()
        physical.advance(1 * MS)
        mock_clock.jump(0.001)
        pending.resolve(request_id, Kind.RESPONSE, api.ClockProbeReply(physical.now_ns() - 500_000))  # n2 at 0
        physical.advance(6 * MS)
        mock_clock.jump(0.006)
        return await pending.wait(request_id, waiter, peer, timeout_s)

    await watch._probe(call, "n2", off_grid=False)
    [(peer, offset_ns, error_ns)] = watch.offsets()
    assert peer == "n2" and offset_ns - error_ns <= 0 <= offset_ns + error_ns
    assert 500_000 <= error_ns <= 510_000, "half of the 1 ms to the reply's hand-over (plus the rate margin)"


async def test_a_probe_whose_reply_carries_no_hand_over_time_is_timed_to_now() -> None:
    physical = ManualClock()
    watch = make_watch(physical)

    async def call(peer: str, message: object, timeout_s: float) -> object:
        physical.advance(4 * MS)
        return api.ClockProbeReply(physical.now_ns() - 2 * MS)

    await watch._probe(call, "n2", off_grid=False)
    [(_, offset_ns, error_ns)] = watch.offsets()
    assert offset_ns == 0 and error_ns == 2 * MS
