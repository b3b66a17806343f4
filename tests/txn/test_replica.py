"""A tablet replica's write path when Paxos says no: the client gets the right
error code (retry vs outcome unknown), as a plain RequestFailed."""

from __future__ import annotations

import math

import attrs
import pytest
import trio
import trio.testing

from hlc import HybridClock, Timestamp
from hlc.physical import ManualClock, SystemClock
from mvcc.engine import DictEngine
from mvcc.records import Intent
from paxos.messages import Ballot
from paxos.types import NotLeader, PaxosConfig, ProposalLost
from txn import api
from txn.api.cluster import TabletConfig
from txn.api.errors import RequestFailed
from txn.api.txn import MAX_RESOLVE_DECISIONS
from txn.net.messaging import set_request_arrival
from txn.tablet.commands import Decide, Forget, Prepare, Resolve, WriteBatch, decode_command, encode_command
from txn.tablet.leader import Serving, WriteState
from txn.tablet.locks import LockMode, Outcome
from txn.tablet import transactions
from txn.tablet.tablet_replica import LONE_SPIN_NS, TabletReplica


def serving_replica(outcome: BaseException) -> TabletReplica:
    clock = HybridClock(ManualClock(), 10_000_000)
    replica = TabletReplica(
        node_id="n1", tablet=TabletConfig("t1", b"", None, ("n1", "n2", "n3"), "n1"), engine=DictEngine(),
        clock=clock, max_offset_ns=10_000_000, send=lambda dst, msg: None,
        monotonic_ns=lambda: round(trio.current_time() * 1e9), paxos_config=PaxosConfig(), seed=1,
        gc_retention_ns=10**12,
    )
    replica.leader.lease_acquired(0, 0)
    replica.leader.serving = Serving.SERVING
    replica._is_serving = lambda: True  # type: ignore[method-assign]  # leadership itself is Paxos's business

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        await trio.sleep(0.001)
        raise outcome

    replica.paxos.propose = propose  # type: ignore[method-assign]
    fake_propose_nowait(replica)
    return replica


def fake_propose_nowait(replica: TabletReplica) -> None:
    """Started writes (txn/tablet/started_writes.py) go through `propose_nowait`: told what the
    test's `replica.paxos.propose` (set now or later) does, as the driver tells it (on_not_chosen
    for a proposal known not chosen, then on_done); a TooSlowError is the sweeper's deadline
    (no answer from Paxos). The sweeper runs, as in a running replica."""

    def propose_nowait(command: bytes, *, on_done, on_not_chosen=None) -> None:
        async def run() -> None:
            try:
                slot = await replica.paxos.propose(command, timeout_s=math.inf, on_not_chosen=on_not_chosen)
            except trio.TooSlowError:
                return  # Paxos never says: the write's deadline does
            except (NotLeader, ProposalLost) as error:
                if on_not_chosen is not None and (isinstance(error, NotLeader) or error.known_not_chosen):
                    on_not_chosen()
                on_done(0, error)
                return
            on_done(slot, None)

        trio.lowlevel.spawn_system_task(run)

    replica.paxos.propose_nowait = propose_nowait  # type: ignore[method-assign]
    trio.lowlevel.spawn_system_task(replica.started_writes.run)


@pytest.mark.parametrize(
    "outcome, code, still_pending",
    [
        (NotLeader("n2"), api.ErrorCode.NOT_LEADER, False),
        (ProposalLost(known_not_chosen=True), api.ErrorCode.NOT_LEADER, False),
        (ProposalLost(known_not_chosen=False), api.ErrorCode.OUTCOME_UNKNOWN, True),
        (trio.TooSlowError(), api.ErrorCode.OUTCOME_UNKNOWN, True),
    ],
)
async def test_write_failures_map_to_codes(outcome: BaseException, code: str, still_pending: bool,
                                           autojump_clock: trio.testing.MockClock) -> None:
    # Virtual time: the write's 1 s deadline (the started writes' sweeper) passes only when the
    # test means it to (TooSlowError), never because a loaded box stalled the fake Paxos.
    replica = serving_replica(outcome)
    with pytest.raises(RequestFailed) as raised:
        await replica.write((api.KeyWrite(b"k", b"v"),), 1_000_000_000)
    assert raised.value.reply.code == code
    # A write whose fate is unknown keeps its timestamp pending: reads at or
    # above it wait until it is applied or leadership changes; a write known
    # not to be in the log is forgotten at once (it must not block reads).
    assert bool(replica.pending) == still_pending
    if isinstance(outcome, NotLeader):
        assert raised.value.reply.leader_hint == "n2"


def fill_driver_inbox(replica) -> None:
    """Put the real driver back and fill its inbox, so that the next proposal's send blocks."""
    del replica.paxos.propose
    while True:
        try:
            replica.paxos._inbox_send.send_nowait(("campaign",))
        except trio.WouldBlock:
            return


async def test_a_proposal_that_never_reached_the_log_is_known_not_chosen() -> None:
    """Bug: a proposal timing out while waiting for the driver's inbox left its
    timestamp pending forever, and every strong read on that leader timed out."""
    replica = serving_replica(ProposalLost(known_not_chosen=True))
    fill_driver_inbox(replica)
    with pytest.raises(ProposalLost) as raised:
        await replica.paxos.propose(b"x", timeout_s=0.01)
    assert raised.value.known_not_chosen


async def test_a_write_cancelled_before_its_proposal_reached_the_log_leaves_no_pending_record() -> None:
    """Bug: a client whose connection closed while its write waited for the driver's inbox had the
    write's task cancelled; the timestamp stayed pending and every strong read on that leader at or
    above it waited out its deadline until the lease changed (85 s in the probe test)."""
    replica = serving_replica(ProposalLost(known_not_chosen=True))
    fill_driver_inbox(replica)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica.write, (api.KeyWrite(b"k", b"v"),), 10_000_000_000)
        with trio.fail_after(5):
            while not replica.pending:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()  # the connection closed: its request tasks are cancelled
    assert not replica.pending, "the cancelled write's timestamp must not hold reads"
    ts = replica.leader.strong_read_ts(replica.clock.now())
    assert replica.leader.leader_read_ready(ts)


async def test_a_proposal_refused_after_its_proposer_left_is_forgotten() -> None:
    """The driver refuses a queued proposal (NotLeader) after the proposer was cancelled: the
    callback still tells the tablet that the command will never be chosen."""
    replica = serving_replica(ProposalLost(known_not_chosen=True))
    del replica.paxos.propose
    told: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: replica.paxos.propose(b"x", timeout_s=5, on_not_chosen=lambda: told.append("no")))
        await trio.sleep(0.01)  # queued in the inbox; the driver task is not running
        nursery.cancel_scope.cancel()
    assert told == [], "queued: its fate is the driver's to tell"
    item = replica.paxos._inbox_receive.receive_nowait()
    while item[0] != "propose":
        item = replica.paxos._inbox_receive.receive_nowait()
    replica.paxos._take(item)  # not the leader: NotLeader, with nobody waiting
    assert told == ["no"]


def follower_replica() -> tuple[TabletReplica, ManualClock]:
    physical = ManualClock()
    replica = TabletReplica(
        node_id="n2", tablet=TabletConfig("t1", b"", None, ("n1", "n2", "n3"), "n1"), engine=DictEngine(),
        clock=HybridClock(physical, 10_000_000), max_offset_ns=10_000_000, send=lambda dst, msg: None,
        monotonic_ns=lambda: round(trio.current_time() * 1e9), paxos_config=PaxosConfig(), seed=1,
        gc_retention_ns=10**12,
    )
    return replica, physical


async def test_a_follower_serves_a_closed_timestamp_only_once_it_applied_the_index_sent_with_it() -> None:
    """Closed timestamps on heartbeats (txn/tablet/leader.py): (C, N) from the leader lets a follower
    serve reads at or below C, but only once slot N is applied here: slots up to N hold every command
    at or below C, and a follower behind them would answer without some of them."""
    replica, physical = follower_replica()
    closed = Timestamp(physical.now_ns(), 0)
    physical.advance(1_000_000_000)  # past every commit-wait horizon: only safe time decides
    replica._on_closed(closed.to_bytes(), 2)
    replica.state.apply(1, b"")
    with pytest.raises(RequestFailed) as raised:
        await replica.read_ts(api.ReadMode.AT, closed, 50_000_000)
    assert raised.value.reply.code == api.ErrorCode.TIMEOUT, "slot 2 is not applied: C is not usable yet"
    replica.state.apply(2, b"")
    assert replica.closed_ts == closed
    assert await replica.read_ts(api.ReadMode.AT, closed, 50_000_000) == closed
    assert replica.state.safe_ts < closed, "served by the closed timestamp, not by logged safe time"
    replica._on_closed(b"\x01garbage", 2)  # a token that is no timestamp is ignored, nothing breaks
    assert replica.closed_ts == closed and replica.marks["tablet.bad_closed_token"] == 1
    # A token from the far future (GC follows closed timestamps) is cut to 2 x max_offset past our clock.
    replica._on_closed(Timestamp(physical.now_ns() + 3600 * 10**9, 0).to_bytes(), 2)
    assert replica.closed_ts == Timestamp(physical.now_ns() + 2 * 10_000_000, 0)
    assert replica.marks["tablet.closed_token_clamped"] == 1


async def test_read_now_answers_what_read_serves_without_waiting_and_nothing_else() -> None:
    """`read_now` (a lone client's read, answered by the transport's reading task): the same reply
    as `read` where it need not wait, None where it must (then `read` waits or refuses), and bad
    input refused at once, as `read` refuses it."""
    replica, physical = follower_replica()
    closed = Timestamp(physical.now_ns(), 0)
    physical.advance(1_000_000_000)
    replica._on_closed(closed.to_bytes(), 1)
    replica.state.apply(1, b"")
    at_closed = api.ReadRequest("t1", b"k", api.ReadMode.AT, closed, 50_000_000, 0)
    assert replica.read_now(at_closed) == await replica.read(at_closed)
    assert replica.read_now(at_closed).ts == closed
    above = api.ReadRequest("t1", b"k", api.ReadMode.AT, closed.next(), 50_000_000, 0)
    assert replica.read_now(above) is None, "above the closed timestamp: it must wait"
    assert replica.read_now(api.ReadRequest("t1", b"k", api.ReadMode.STRONG, None, 50_000_000, 0)) is None, \
        "a strong read on a follower is not served here at once"
    with pytest.raises(RequestFailed) as raised:
        replica.read_now(api.ReadRequest("t1", b"k", api.ReadMode.STALE, closed, 50_000_000, 5))
    assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST
    assert replica.follower_reads == 3, "the three reads answered, each counted once"


async def test_a_follower_read_that_meets_an_intent_is_counted_once() -> None:
    """A read the transport first tries at once (`read_now`), that finds a prepared transaction's
    intent and is then served by `read` (here: waits in vain), counts one follower read, not one
    per attempt."""
    replica, physical = follower_replica()
    closed = Timestamp(physical.now_ns(), 0)
    physical.advance(1_000_000_000)
    replica._on_closed(closed.to_bytes(), 1)
    replica.state.apply(1, b"")
    replica.state.store.put_intent(Intent(b"k", "txn-1", Timestamp(closed.wall - 1, 0), b"v"), sync=False)
    request = api.ReadRequest("t1", b"k", api.ReadMode.AT, closed, 1_000_000, 0)
    assert replica.read_now(request) is None, "an intent at or below the read: it must wait"
    with pytest.raises(RequestFailed) as raised:
        await replica.read(request)
    assert raised.value.reply.code == api.ErrorCode.TIMEOUT
    assert replica.follower_reads == 1


async def test_a_stale_read_is_measured_on_the_serving_replicas_clock_in_one_request() -> None:
    """ReadMode.STALE: the replica reads at its own now - stale_ns (no round trip for `now` first);
    MAX_STALE without a timestamp takes the same bound; contradictory or negative input is refused."""
    replica, physical = follower_replica()
    closed = Timestamp(physical.now_ns(), 0)
    physical.advance(1_000_000_000)
    replica._on_closed(closed.to_bytes(), 1)
    replica.state.apply(1, b"")
    now_wall = physical.now_ns()
    reply = await replica.read(api.ReadRequest("t1", b"k", api.ReadMode.STALE, None, 50_000_000, now_wall - closed.wall))
    assert reply.ts == closed and reply.value is None and reply.served_by == "n2"
    reply = await replica.read(api.ReadRequest("t1", b"k", api.ReadMode.MAX_STALE, None, 50_000_000, 1_000_000_000))
    assert reply.ts == closed, "max-stale: the freshest timestamp servable without waiting, here C"
    with pytest.raises(RequestFailed) as raised:
        await replica.read(api.ReadRequest("t1", b"k", api.ReadMode.STALE, None, 50_000_000, 1_000))
    assert raised.value.reply.code == api.ErrorCode.TIMEOUT, "1 us stale is above this follower's closed timestamp"
    for bad in (api.ReadRequest("t1", b"k", api.ReadMode.STALE, None, 50_000_000, -1),
                api.ReadRequest("t1", b"k", api.ReadMode.STRONG, None, 50_000_000, 5),
                api.ReadRequest("t1", b"k", api.ReadMode.STALE, closed, 50_000_000, 5)):
        with pytest.raises(RequestFailed) as raised:
            await replica.read(bad)
        assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST, bad
    with pytest.raises(RequestFailed) as raised:  # a scan in mode stale (only a ReadRequest carries stale_ns)
        await replica.scan(api.ScanRequest("t1", b"", None, api.ReadMode.STALE, closed, 10, 50_000_000))
    assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST


def commit_wait_replica(physical: object, precise: bool) -> TabletReplica:
    """t1's replica on n1 over `physical`, for driving its commit-wait timer by hand."""
    return TabletReplica(
        node_id="n1", tablet=TabletConfig("t1", b"", None, ("n1", "n2", "n3"), "n1"), engine=DictEngine(),
        clock=HybridClock(physical, 10_000_000), max_offset_ns=10_000_000, send=lambda dst, msg: None,  # type: ignore[arg-type]
        monotonic_ns=lambda: round(trio.current_time() * 1e9), paxos_config=PaxosConfig(), seed=1,
        gc_retention_ns=10**12, precise_commit_wait=precise,
    )


@pytest.mark.parametrize("precise", [True, False])
async def test_a_precise_commit_wait_releases_within_the_event_loops_timer_resolution(
        precise: bool, mock_clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's timeouts are whole milliseconds: a release due in 0.4 ms would wait for a 1 ms
    timeout. A precise timer (real nodes) without a timerfd yields instead and releases once the
    physical clock is past the commit-wait, with no timeout passing (trio's clock stands still here)."""
    monkeypatch.setattr("txn.tablet.tablet_replica.open_precise_timer", lambda: None)
    physical = ManualClock()
    replica = commit_wait_replica(physical, precise)
    pending = replica.leader.assign(replica.clock.now(), commit_wait=True)
    replica.leader.applied(pending.ts, skipped=False, physical_now_ns=physical.now_ns())
    physical.set(pending.release_after_ns - 400_000)  # due in 0.4 ms
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica._commit_wait_timer)
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        assert pending.state is WriteState.APPLIED  # not due yet
        physical.set(pending.release_after_ns + 1)
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        assert (pending.state is WriteState.DONE) == precise, pending.state
        nursery.cancel_scope.cancel()


async def test_a_precise_commit_wait_sleeps_its_last_millisecond_on_the_timerfd() -> None:
    """With a timerfd (Linux; txn/net/precise_timer.py) the precise timer waits for a release on
    it instead of yielding through the last millisecond: a handful of steps of the timer task,
    where yielding took one per pass of the event loop. Real clocks: only counts are asserted.
    Two commands wait, so that neither is lone (a lone one's last LONE_SPIN_NS is spent awake: the
    test below)."""
    physical = SystemClock()
    replica = commit_wait_replica(physical, True)
    steps: list[str] = []

    class CountTimerSteps(trio.abc.Instrument):
        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("_commit_wait_timer"):
                steps.append(task.name)

    # Assigned as if it arrived 7 ms ago: commit-wait ends in about 3 ms.
    pending = replica.leader.assign(Timestamp(physical.now_ns() - 7_000_000, 0), commit_wait=True)
    replica.leader.applied(pending.ts, skipped=False, physical_now_ns=physical.now_ns())
    other = replica.leader.assign(Timestamp(physical.now_ns() - 7_000_000, 0), commit_wait=True)
    replica.leader.applied(other.ts, skipped=False, physical_now_ns=physical.now_ns())
    trio.lowlevel.add_instrument(CountTimerSteps())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica._commit_wait_timer)
        with trio.fail_after(10):
            while pending.state is not WriteState.DONE:
                await trio.sleep(0)  # this task yields all along: a yielding timer would keep stepping
        nursery.cancel_scope.cancel()
    assert physical.now_ns() > pending.release_after_ns
    assert 1 <= len(steps) <= 6, f"the timer took {len(steps)} steps: it yielded instead of sleeping"


class StepTimer:
    """A stand-in timerfd over a ManualClock: records each sleep; moves the clock by it, or, for
    a sleep of at most `hold_ns`, never returns (the timer has not fired yet)."""

    def __init__(self, physical: ManualClock, hold_ns: int = 0) -> None:
        self.physical = physical
        self.hold_ns = hold_ns
        self.sleeps: list[int] = []

    async def sleep(self, delay_ns: int) -> None:
        self.sleeps.append(delay_ns)
        if delay_ns <= self.hold_ns:
            await trio.sleep_forever()
        self.physical.advance(delay_ns)
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("waiting", [1, 2])
async def test_only_a_lone_commit_wait_spends_its_last_moment_awake(
        waiting: int, mock_clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """One command in commit-wait: the timerfd sleeps until LONE_SPIN_NS before its release, and
    the timer yields from there and releases it as soon as the clock is past it (no timerfd wake-up
    from idle on its latency). Two: the timerfd sleeps to the release, and nothing spins."""
    physical = ManualClock()
    timer = StepTimer(physical, hold_ns=LONE_SPIN_NS)
    monkeypatch.setattr("txn.tablet.tablet_replica.open_precise_timer", lambda: timer)
    replica = commit_wait_replica(physical, True)
    commands = [replica.leader.assign(replica.clock.now(), commit_wait=True) for _ in range(waiting)]
    for command in commands:
        replica.leader.applied(command.ts, skipped=False, physical_now_ns=physical.now_ns())
    last = commands[-1]
    physical.set(last.release_after_ns - 500_000)  # the last is due in 0.5 ms (wake: 1 ns after)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica._commit_wait_timer)
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        if waiting == 1:
            assert timer.sleeps == [500_001 - LONE_SPIN_NS], "on the timerfd until its last moment"
            assert last.state is WriteState.APPLIED  # not due yet
            physical.set(last.release_after_ns + 1)
            for _ in range(20):
                await trio.lowlevel.checkpoint()
            assert timer.sleeps == [500_001 - LONE_SPIN_NS], "released awake, not after another timerfd sleep"
        else:
            assert timer.sleeps == [500_001], "to the release on the timerfd: a busy tablet never spins"
        assert all(c.state is WriteState.DONE for c in commands)
        nursery.cancel_scope.cancel()


async def test_an_idle_commit_wait_timer_sleeps_until_an_apply_wakes_it(mock_clock) -> None:
    """With nothing in commit-wait the timer sleeps (IDLE_WAIT_S, not a 50 ms poll: idle cost);
    the batch of applies that starts a commit-wait wakes it, so the release is not late by that
    sleep (trio's clock moves here only by the commit-wait's 10 ms and one more)."""
    replica, physical = follower_replica()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica._commit_wait_timer)
        await trio.testing.wait_all_tasks_blocked()
        pending = replica.leader.assign(replica.clock.now(), commit_wait=True)
        replica.leader.applied(pending.ts, skipped=False, physical_now_ns=physical.now_ns(), release=False)
        replica._on_batch_applied()  # what the state machine calls after each batch of applies
        await trio.testing.wait_all_tasks_blocked()
        assert pending.state is WriteState.APPLIED, "not due yet"
        physical.set(pending.release_after_ns + 1)
        mock_clock.jump(0.011)
        await trio.testing.wait_all_tasks_blocked()
        assert pending.state is WriteState.DONE
        nursery.cancel_scope.cancel()


class TimerSteps(trio.abc.Instrument):
    """Counts the task steps of a tablet replica's commit-wait timer."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_commit_wait_timer"):
            self.steps += 1


async def test_the_commit_wait_timer_wakes_only_for_a_release_before_the_one_it_waits_for(mock_clock) -> None:
    """The timer is woken by the batch of applies that puts a release ahead of the one it sleeps
    toward (or starts the first), by nothing else: not by every change of the tablet (`_notify`:
    every batch applied, every lock freed; a follower's tablet changes with each apply and never
    has a commit-wait), nor by an apply whose release comes after the one it waits for. Then it
    releases both at their time."""
    physical = ManualClock()
    replica = commit_wait_replica(physical, False)
    counter = TimerSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replica._commit_wait_timer)
            await trio.testing.wait_all_tasks_blocked()
            counter.steps = 0
            for _ in range(3):
                replica._notify()
                replica._on_batch_applied()  # a batch with nothing in commit-wait (a follower's, say)
                await trio.testing.wait_all_tasks_blocked()
            assert counter.steps == 0, "woken by changes that start no commit-wait"
            first = replica.leader.assign(replica.clock.now(), commit_wait=True)
            replica.leader.applied(first.ts, skipped=False, physical_now_ns=physical.now_ns(), release=False)
            replica._on_batch_applied()
            await trio.testing.wait_all_tasks_blocked()
            assert counter.steps >= 1, "the first commit-wait must wake the idle timer"
            counter.steps = 0
            physical.advance(1_000_000)
            later = replica.leader.assign(replica.clock.now(), commit_wait=True)
            assert later.release_after_ns > first.release_after_ns
            replica.leader.applied(later.ts, skipped=False, physical_now_ns=physical.now_ns(), release=False)
            replica._on_batch_applied()
            await trio.testing.wait_all_tasks_blocked()
            assert counter.steps == 0, "woken for a release after the one it already sleeps toward"
            physical.set(later.release_after_ns + 1)
            mock_clock.jump(0.050)
            await trio.testing.wait_all_tasks_blocked()
            assert first.state is WriteState.DONE and later.state is WriteState.DONE
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_a_write_takes_its_timestamp_from_its_requests_arrival() -> None:
    """Spanner's start rule: the HLC reading the transport took when the request arrived, not a later
    one, so the time spent before the assignment counts toward commit-wait."""
    replica = serving_replica(ProposalLost(known_not_chosen=False))  # the write stays pending, its ts with it
    physical = replica.clock.physical
    arrived = replica.clock.now()
    physical.advance(3_000_000)  # 3 ms pass before the write is served (a task to run it, its locks)
    set_request_arrival(arrived)
    with pytest.raises(RequestFailed):
        await replica.write((api.KeyWrite(b"k", b"v"),), 1_000_000_000)
    assert replica.pending == [arrived]
    assert replica.leader.pending[arrived].release_after_ns == arrived.wall + 10_000_000


async def test_a_write_arriving_before_a_read_is_served_still_commits_above_it() -> None:
    replica = serving_replica(ProposalLost(known_not_chosen=False))
    arrived = replica.clock.now()
    replica.clock.physical.advance(1_000_000)
    read_ts = replica.leader.strong_read_ts(replica.clock.now())  # served between arrival and assignment
    set_request_arrival(arrived)
    with pytest.raises(RequestFailed):
        await replica.write((api.KeyWrite(b"k", b"v"),), 1_000_000_000)
    assert replica.pending == [read_ts.next()]


@pytest.mark.parametrize("prepared_later", [False, True])
async def test_a_two_phase_commit_takes_its_timestamp_from_the_commit_requests_arrival(prepared_later: bool) -> None:
    """The coordinator's commit timestamp (Spanner 4.2.1): no lower than the commit request's arrival
    nor than any participant's prepare timestamp, whichever is later."""
    replica = serving_replica(ProposalLost(known_not_chosen=False))  # the decision stays pending, its ts with it
    arrived = replica.clock.now()
    replica.clock.physical.advance(3_000_000)
    prepare_ts = Timestamp(arrived.wall + 1_000_000, 0) if prepared_later else Timestamp(arrived.wall - 1_000_000, 0)
    replica.state.txns.prepared["x1"] = Prepare(prepare_ts, replica.paxos.core.ballot, "x1", prepare_ts, "t1", [], [], [])
    set_request_arrival(arrived)
    votes = (api.ParticipantVote("t1", prepare_ts), api.ParticipantVote("t2", prepare_ts))
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(api.CommitRequest("t1", "x1", prepare_ts, votes, 1_000_000_000))
    assert raised.value.reply.code == api.ErrorCode.OUTCOME_UNKNOWN
    assert list(replica.leader.pending) == [prepare_ts if prepared_later else arrived]


async def test_a_commit_whose_votes_carry_a_timestamp_beyond_every_clock_is_refused() -> None:
    """A forged vote must not raise the coordinator's floor (every later write's timestamp and
    commit-wait) without bound; one within 2 * max_offset of its clock is a participant's."""
    replica = serving_replica(ProposalLost(known_not_chosen=False))
    now_ns = replica.clock.physical.now_ns()
    replica.state.txns.prepared["x1"] = Prepare(Timestamp(now_ns, 0), replica.paxos.core.ballot, "x1",
                                                Timestamp(now_ns, 0), "t1", [], [], [])
    forged = Timestamp(now_ns + 20_000_001, 0)  # max_offset is 10 ms
    request = api.CommitRequest("t1", "x1", Timestamp(now_ns, 0), (api.ParticipantVote("t2", forged),), 1_000_000_000)
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(request)
    assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST
    assert not replica.leader.pending and replica.leader.floor < forged
    ahead = Timestamp(now_ns + 20_000_000, 0)  # a participant's clock max_offset ahead, twice over: accepted
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(attrs.evolve(request, votes=(api.ParticipantVote("t2", ahead),)))
    assert raised.value.reply.code == api.ErrorCode.OUTCOME_UNKNOWN
    assert list(replica.leader.pending) == [ahead]


async def test_a_write_outside_a_transport_request_takes_the_clock_now() -> None:
    replica = serving_replica(ProposalLost(known_not_chosen=False))
    replica.clock.physical.advance(1_000_000)
    now = replica.clock.physical.now_ns()
    with pytest.raises(RequestFailed):
        await replica.write((api.KeyWrite(b"k", b"v"),), 1_000_000_000)
    assert [ts.wall for ts in replica.pending] == [now]


async def test_a_batch_of_applied_slots_wakes_the_waiters_once_and_releases_what_is_due() -> None:
    """One engine write of several slots (a Paxos turn's worth) is one wake-up for the replica's
    waiters, not one per slot, and ends commit-wait for every write whose release time has passed."""
    replica = serving_replica(NotLeader(None))
    physical = replica.clock.physical
    pending = []
    for _ in range(4):
        physical.advance(1_000_000)  # a millisecond apart: four release times
        pending.append(replica.leader.assign(replica.clock.now(), commit_wait=True))
    commands = [encode_command(WriteBatch(p.ts, [(b"k%d" % i, b"v")], Ballot(1, "n1"))) for i, p in enumerate(pending)]
    notified: list[int] = []
    real_notify = replica._notify
    replica._notify = lambda: (notified.append(replica.state.applied_index()), real_notify())  # type: ignore[method-assign]
    physical.set(pending[1].release_after_ns + 1)  # the first two writes' commit-waits are over, the last two not
    replica.state.apply_entries([(i + 1, command) for i, command in enumerate(commands)])
    assert notified == [4], "one wake-up, after the whole batch"
    assert [p.state for p in pending] == [WriteState.DONE, WriteState.DONE, WriteState.APPLIED, WriteState.APPLIED]
    assert replica.leader.next_wake_ns() == pending[2].release_after_ns + 1


async def test_a_write_in_commit_wait_is_woken_by_its_own_release_only(mock_clock: trio.testing.MockClock) -> None:
    """A writer waiting out commit-wait sleeps through other slots' applies and releases (each of
    which wakes the tablet's other waiters, `_notify`); its own release wakes it, and it returns.
    trio's clock stands still (`mock_clock`): the wait's POLL_S bound never fires, however slow the box."""
    replica = serving_replica(NotLeader(None))
    physical = replica.clock.physical
    first = replica.leader.assign(replica.clock.now(), commit_wait=True)
    physical.advance(1_000_000)
    second = replica.leader.assign(replica.clock.now(), commit_wait=True)
    commands = [encode_command(WriteBatch(p.ts, [(b"k%d" % i, b"v")], Ballot(1, "n1"))) for i, p in enumerate((first, second))]
    replica.state.apply_entries([(1, commands[0]), (2, commands[1])])
    finished: list[bool] = []

    async def wait_second() -> None:
        await replica._commit_waited(second)
        finished.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_second)
        await trio.testing.wait_all_tasks_blocked()
        waiter = second.waiter
        assert isinstance(waiter, trio.Event) and not finished
        physical.set(first.release_after_ns + 1)  # the first write's commit-wait ends, not the second's
        replica.state.apply_entries([(3, encode_command(WriteBatch(replica.leader.assign(
            replica.clock.now(), commit_wait=True).ts, [(b"x", b"v")], Ballot(1, "n1"))))])
        await trio.testing.wait_all_tasks_blocked()
        assert first.state is WriteState.DONE and second.state is WriteState.APPLIED
        assert second.waiter is waiter and not waiter.is_set(), "another slot's apply and release woke it"
        physical.set(second.release_after_ns + 1)
        replica._released(replica.leader.tick(physical.now_ns()))  # what the commit-wait timer does
        await trio.testing.wait_all_tasks_blocked()
        assert finished == [True]


async def test_a_write_behind_an_older_lock_holder_times_out_unproposed(autojump_clock: trio.testing.MockClock) -> None:
    """A plain write waits for an older transaction's lock only until its deadline: then `timeout`
    (not committed: never proposed), and it leaves nothing behind in the lock table."""
    replica = serving_replica(NotLeader(None))  # a proposal would fail as not_leader: none must be made
    older = replica.clock.now()
    granted = replica.txns.locks.lock_key("older", older, b"k", LockMode.EXCLUSIVE, 0)
    assert granted.outcome is Outcome.GRANTED
    started = trio.current_time()
    with trio.fail_after(5), pytest.raises(RequestFailed) as raised:
        await replica.write((api.KeyWrite(b"k", b"v"),), 320_000_000)  # not a multiple of the 50 ms re-check
    assert raised.value.reply.code == api.ErrorCode.TIMEOUT and "waited too long for locks" in raised.value.reply.message
    assert trio.current_time() - started == pytest.approx(0.32), "it waited until its deadline, not longer"
    assert set(replica.txns.locks.txns) == {"older"}, "the write's waiting record is gone"
    assert not replica.pending


async def test_single_writes_to_one_key_do_not_wait_for_each_other_but_hold_off_transactions() -> None:
    """Two writes to one key are both proposed while neither is chosen: no lock between them
    (txn/tablet/locks.py, BLIND), timestamps in proposal order. A transaction's lock on the key
    still waits for both."""
    replica = serving_replica(NotLeader(None))
    proposed: list[WriteBatch] = []
    never = trio.Event()

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))  # type: ignore[arg-type]
        await never.wait()  # Paxos never answers: both writes stay in flight
        raise AssertionError("unreachable")

    replica.paxos.propose = propose  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        for value in (b"first", b"second"):
            nursery.start_soon(replica.write, (api.KeyWrite(b"k", value),), 60_000_000_000)
            with trio.fail_after(5):
                while len(proposed) < (1 if value == b"first" else 2):
                    await trio.sleep(0.001)
        assert [list(command.writes) for command in proposed] == [[(b"k", b"first")], [(b"k", b"second")]]
        assert proposed[0].ts < proposed[1].ts
        younger = replica.clock.now()
        decision = replica.txns.locks.lock_key("txn", younger, b"k", LockMode.SHARED, 0)
        assert decision.outcome is Outcome.WAIT and len(decision.blockers) == 2
        nursery.cancel_scope.cancel()


async def test_the_coordinator_logs_its_own_writes_in_its_decision_under_locks_nobody_wounds() -> None:
    """The coordinator does not prepare (Spanner 4.2.1): its commit request carries its writes and
    read set; it takes the exclusive locks, checks the read lock, and proposes one Decide with the
    writes. While that is in flight an older transaction waits for it (as for a prepared holder)."""
    replica = serving_replica(NotLeader(None))
    proposed: list[object] = []
    chosen = trio.Event()

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))
        await chosen.wait()
        raise ProposalLost(known_not_chosen=False)

    replica.paxos.propose = propose  # type: ignore[method-assign]
    priority = replica.clock.now()
    assert replica.txns.locks.lock_key("x1", priority, b"r", LockMode.SHARED, 0).outcome is Outcome.GRANTED
    prepare_ts = replica.clock.now()
    request = api.CommitRequest("t1", "x1", priority, (api.ParticipantVote("t2", prepare_ts),), 1_000_000_000,
                                (api.KeyWrite(b"w", b"v"),), (b"r",), ())
    outcome: list[RequestFailed] = []

    async def commit() -> None:
        with pytest.raises(RequestFailed) as raised:
            await replica.txns.commit(request)
        outcome.append(raised.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        with trio.fail_after(5):
            while not proposed:
                await trio.sleep(0.001)
        [decide] = proposed
        assert isinstance(decide, Decide) and decide.committed and decide.participants == ("t2",)
        assert list(decide.writes) == [(b"w", b"v")] and decide.ts >= prepare_ts
        assert replica.leader.pending[decide.ts].keys == frozenset({b"w"}), "reads of other keys need not wait"
        older = replica.txns.locks.lock_key("older", Timestamp.MIN, b"w", LockMode.SHARED, 0)
        assert older.outcome is Outcome.WAIT and older.blockers == ("x1",), "not wounded while deciding"
        chosen.set()
    assert outcome[0].reply.code == api.ErrorCode.OUTCOME_UNKNOWN
    assert "x1" not in replica.txns.locks.txns, "its locks are released once the request ends"


async def test_a_coordinator_part_whose_read_lock_was_lost_aborts_without_a_proposal() -> None:
    replica = serving_replica(NotLeader(None))  # a proposal would fail as not_leader: none must be made
    request = api.CommitRequest("t1", "x1", replica.clock.now(), (api.ParticipantVote("t2", replica.clock.now()),),
                                1_000_000_000, (api.KeyWrite(b"w", b"v"),), (b"r",), ())
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(request)
    assert raised.value.reply.code == api.ErrorCode.TXN_ABORTED and "read locks" in raised.value.reply.message
    assert not replica.pending and "x1" not in replica.txns.locks.txns


async def test_a_commit_request_with_a_part_for_a_prepared_coordinator_is_refused() -> None:
    replica = serving_replica(NotLeader(None))
    now = replica.clock.now()
    replica.state.txns.prepared["x1"] = Prepare(now, replica.paxos.core.ballot, "x1", now, "t1", [(b"w", b"v")], [], [])
    request = api.CommitRequest("t1", "x1", now, (), 1_000_000_000, (api.KeyWrite(b"w", b"other"),))
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(request)
    assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST and not replica.pending


@pytest.mark.parametrize("coordinator", [False, True])
async def test_a_commit_waits_for_its_locks_half_its_deadline_then_aborts_unproposed(
        coordinator: bool, autojump_clock: trio.testing.MockClock) -> None:
    """The other half is for logging it and commit-wait: cut off by the client's deadline after
    its proposal, a commit would be outcome_unknown; one that gave up on a lock is a clean abort."""
    replica = serving_replica(NotLeader(None))  # a proposal would fail as not_leader: none must be made
    assert replica.txns.locks.lock_key("older", Timestamp.MIN, b"w", LockMode.EXCLUSIVE, 0).outcome is Outcome.GRANTED
    replica.txns.locks.mark_prepared("older")  # a prepared holder: waited for (an unprepared older one refuses a coordinator at once)
    priority, writes = replica.clock.now(), (api.KeyWrite(b"w", b"v"),)
    if coordinator:
        request: object = api.CommitRequest("t1", "x1", priority, (api.ParticipantVote("t2", priority),), 400_000_000, writes)
        commit = replica.txns.commit
    else:
        request = api.OnePhaseCommitRequest("t1", "x1", priority, writes, (), (), 400_000_000)
        commit = replica.txns.one_phase_commit
    started = trio.current_time()
    with trio.fail_after(5), pytest.raises(RequestFailed) as raised:
        await commit(request)
    assert raised.value.reply.code == api.ErrorCode.TXN_ABORTED and "waited too long" in raised.value.reply.message
    assert trio.current_time() - started == pytest.approx(0.2), "half of its 400 ms deadline"
    assert not replica.pending and set(replica.txns.locks.txns) == {"older"}


def _parts_request(replica: TabletReplica, timeout_ns: int = 1_000_000_000) -> api.CommitRequest:
    """x1: the coordinator t1's own write of b"w", and t2's part (the coordinator prepares it)."""
    return api.CommitRequest("t1", "x1", replica.clock.now(), (), timeout_ns, (api.KeyWrite(b"w", b"v"),), (), (),
                             (api.ParticipantPart("t2", (api.KeyWrite(b"z", b"1"),), (b"z",), ()),))


async def test_a_coordinator_prepares_the_other_participant_then_decides() -> None:
    replica = serving_replica(NotLeader(None))
    proposed: list[object] = []
    sent: list[tuple[str, object, bool]] = []
    now = replica.clock.now()
    prepare_ts = Timestamp(now.wall + replica.max_offset_ns // 2, 0)  # the participant's clock ahead of ours

    async def call_tablet(tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        sent.append((tablet_id, message, resend))
        return api.PrepareReply(prepare_ts)

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))
        raise ProposalLost(known_not_chosen=True)

    replica.txns.call_tablet = call_tablet
    replica.paxos.propose = propose  # type: ignore[method-assign]
    with pytest.raises(RequestFailed):
        await replica.txns.commit(_parts_request(replica))
    [(tablet_id, prepare, resend)] = sent
    assert tablet_id == "t2" and not resend, "a prepare that went out is never sent again"
    assert isinstance(prepare, api.PrepareRequest) and prepare.coordinator_tablet == "t1"
    assert (prepare.writes, prepare.read_keys) == ((api.KeyWrite(b"z", b"1"),), (b"z",))
    [decide] = proposed
    assert isinstance(decide, Decide) and decide.participants == ("t2",) and decide.ts >= prepare_ts
    assert list(decide.writes) == [(b"w", b"v")]


async def test_a_coordinators_locks_stay_woundable_while_its_participants_prepare() -> None:
    """Marked prepared before the votes are in, two transactions coordinated at each other's
    participant would each wait for a 'prepared' holder that is itself waiting."""
    replica = serving_replica(NotLeader(None))  # a proposal would fail as not_leader: none must be made
    preparing, answer = trio.Event(), trio.Event()

    async def call_tablet(tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        preparing.set()
        await answer.wait()
        return api.PrepareReply(replica.clock.now())

    replica.txns.call_tablet = call_tablet
    outcome: list[RequestFailed] = []

    async def commit() -> None:
        with pytest.raises(RequestFailed) as raised:
            await replica.txns.commit(_parts_request(replica))
        outcome.append(raised.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        with trio.fail_after(5):
            await preparing.wait()
        older = replica.txns.locks.lock_key("older", Timestamp.MIN, b"w", LockMode.EXCLUSIVE, 0)
        assert older.outcome is Outcome.GRANTED and older.wounded == ("x1",), older
        answer.set()
    assert outcome[0].reply.code == api.ErrorCode.TXN_ABORTED and outcome[0].reply.abort_reason == "wounded"
    assert not replica.pending, "nothing proposed for a wounded coordinator"


@pytest.mark.parametrize("answer", ["no", "silence", "bad"])
async def test_a_participant_without_a_vote_aborts_the_commit_unproposed(answer: str) -> None:
    replica = serving_replica(NotLeader(None))  # a proposal would fail as not_leader: none must be made
    replies = {"no": api.ErrorReply(api.ErrorCode.TXN_ABORTED, "t2: older holder", None, None, api.AbortReason.CONFLICT),
               "silence": None, "bad": api.ErrorReply(api.ErrorCode.BAD_REQUEST, "key outside t2", None, None)}

    async def call_tablet(tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        return replies[answer]

    replica.txns.call_tablet = call_tablet
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(_parts_request(replica))
    reply = raised.value.reply
    expected = api.ErrorCode.BAD_REQUEST if answer == "bad" else api.ErrorCode.TXN_ABORTED
    assert reply.code == expected and "participant t2" in reply.message, reply
    assert answer == "bad" or reply.abort_reason == "conflict"
    assert not replica.pending and "x1" not in replica.txns.locks.txns, "unproposed, its locks released"


@pytest.mark.parametrize("kind", ["prepare", "one_phase"])
async def test_a_commit_step_at_a_replica_not_serving_is_not_leader(kind: str) -> None:
    """Locks live at the serving leader: elsewhere a prepare or commit must say "not the leader"
    (go on to the next replica), not `lost_locks`, which aborts the transaction. A client sends
    these to the leader it read from; a node calling another tablet may reach any replica first."""
    replica = serving_replica(NotLeader(None))
    replica._is_serving = lambda: False  # type: ignore[method-assign]
    now, writes = replica.clock.now(), (api.KeyWrite(b"z", b"1"),)
    with pytest.raises(RequestFailed) as raised:
        if kind == "prepare":
            await replica.txns.prepare(api.PrepareRequest("t1", "x1", now, "t2", writes, (b"z",), (), 1_000_000_000))
        else:
            await replica.txns.one_phase_commit(api.OnePhaseCommitRequest("t1", "x1", now, writes, (b"z",), (), 1_000_000_000))
    assert raised.value.reply.code == api.ErrorCode.NOT_LEADER, raised.value.reply


async def test_a_prepared_coordinators_own_vote_is_not_among_the_participants_it_resolves() -> None:
    """The votes path (a client that prepared every participant, the coordinator too): the decision
    names the others only, so the coordinator does not send itself a `ResolveRequest`."""
    replica = serving_replica(NotLeader(None))
    proposed: list[object] = []

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))
        raise ProposalLost(known_not_chosen=True)

    replica.paxos.propose = propose  # type: ignore[method-assign]
    now = replica.clock.now()
    replica.state.txns.prepared["x1"] = Prepare(now, replica.paxos.core.ballot, "x1", now, "t1", [], [], [])
    votes = (api.ParticipantVote("t1", now), api.ParticipantVote("t2", now))
    with pytest.raises(RequestFailed):
        await replica.txns.commit(api.CommitRequest("t1", "x1", now, votes, 1_000_000_000))
    [decide] = proposed
    assert isinstance(decide, Decide) and decide.participants == ("t2",)


async def test_a_participants_vote_beyond_every_clock_is_refused_unproposed() -> None:
    """A peer's answer is input too: a prepare timestamp past 2 * max_offset of the coordinator's
    clock must not raise its floor (every later write's timestamp and commit-wait)."""
    replica = serving_replica(NotLeader(None))  # a proposal would fail as not_leader: none must be made

    async def call_tablet(tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        return api.PrepareReply(Timestamp(replica.clock.now().wall + 3 * replica.max_offset_ns, 0))

    replica.txns.call_tablet = call_tablet
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.commit(_parts_request(replica))
    assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST and "2 * max_offset" in raised.value.reply.message
    assert not replica.pending and "x1" not in replica.txns.locks.txns


async def test_a_participant_logs_the_decisions_of_one_resolve_request_together() -> None:
    """A `ResolveRequest` carries every decision its coordinator queued: one Resolve command
    logs them all, and the answer comes once none of them is prepared here. Decisions of
    transactions not prepared here are skipped."""
    replica = serving_replica(NotLeader(None))
    now = replica.clock.now()
    for txn_id, key in (("x1", b"a"), ("x2", b"b"), ("x3", b"c")):
        replica.state.txns.prepared[txn_id] = Prepare(now, replica.paxos.core.ballot, txn_id, now, "t9",
                                                      [(key, b"v")], [], [])
    proposed: list[object] = []

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        resolve = decode_command(command)
        proposed.append(resolve)
        for txn_id, _ in resolve.decisions:
            del replica.state.txns.prepared[txn_id]  # what applying it does
        return len(proposed)

    replica.paxos.propose = propose  # type: ignore[method-assign]
    commit_ts = Timestamp(now.wall + 1, 0)
    decisions = [api.ResolveDecision("x1", commit_ts), api.ResolveDecision("x2", None),
                 api.ResolveDecision("gone", commit_ts), api.ResolveDecision("x3", commit_ts)]
    with trio.fail_after(5):
        reply = await replica.txns.resolve(api.ResolveRequest("t1", decisions, 1_000_000_000))
    assert isinstance(reply, api.ResolveReply)
    [resolve] = proposed
    assert isinstance(resolve, Resolve) and resolve.decisions == (("x1", commit_ts), ("x2", None), ("x3", commit_ts))
    assert resolve.ts > commit_ts, "above every commit timestamp it resolves"
    assert not replica.state.txns.prepared and replica.marks["txn.resolved"] == 3


async def test_a_resolve_request_left_unresolved_is_not_answered_done() -> None:
    """A resolution not chosen (here: a newer leader) leaves its transactions prepared: the
    coordinator must hear so and send them again, not take them as done."""
    replica = serving_replica(NotLeader("n2"))
    now = replica.clock.now()
    replica.state.txns.prepared["x1"] = Prepare(now, replica.paxos.core.ballot, "x1", now, "t9", [(b"a", b"v")], [], [])
    with trio.fail_after(5), pytest.raises(RequestFailed) as raised:
        await replica.txns.resolve(api.ResolveRequest("t1", [api.ResolveDecision("x1", None)], 1_000_000_000))
    assert raised.value.reply.code == api.ErrorCode.NOT_LEADER and raised.value.reply.leader_hint == "n2"
    assert "x1" in replica.state.txns.prepared


async def test_a_resolve_request_with_too_many_decisions_is_refused() -> None:
    replica = serving_replica(NotLeader(None))
    decisions = [api.ResolveDecision(f"x{i}", None) for i in range(MAX_RESOLVE_DECISIONS + 1)]
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.resolve(api.ResolveRequest("t1", decisions, 1_000_000_000))
    assert raised.value.reply.code == api.ErrorCode.BAD_REQUEST and "at most" in raised.value.reply.message
    assert not replica.pending


async def resolve_requests_sent(replica: TabletReplica, answer, queue_more) -> list[tuple[str, tuple[str, ...]]]:
    """The coordinator's `ResolveRequest`s, as (tablet, txn ids): x1's decision for t2 goes first
    and its request is held out while `queue_more()` queues others; `answer(batch, sent)` replies."""
    sent: list[tuple[str, tuple[str, ...]]] = []
    first_out = trio.Event()

    async def call_tablet(tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        assert isinstance(message, api.ResolveRequest) and message.tablet_id == tablet_id
        batch = (tablet_id, tuple(d.txn_id for d in message.decisions))
        sent.append(batch)
        if len(sent) == 1:
            await first_out.wait()
        return answer(batch, sent)

    replica.txns.call_tablet = call_tablet
    async with trio.open_nursery() as nursery:
        replica.txns._nursery = nursery
        replica.txns._start_resolving("x1", replica.clock.now(), ("t2",))
        await trio.testing.wait_all_tasks_blocked()
        queue_more()
        await trio.testing.wait_all_tasks_blocked()
        first_out.set()
    assert not replica.txns._to_resolve and not replica.txns._resolving
    return sent


async def test_a_coordinator_sends_the_decisions_queued_meanwhile_in_one_request() -> None:
    """One task per participant sends its decisions: those queued while a request is out go
    together in the next one; a request that got no answer is sent again, whole."""
    replica = serving_replica(NotLeader(None))
    ts = replica.clock.now()

    def answer(batch: tuple[str, tuple[str, ...]], sent: list) -> object:
        if batch == ("t2", ("x2", "x3")) and sent.count(batch) == 1:
            return None  # no answer: sent again
        return api.ResolveReply()

    def queue_more() -> None:
        replica.txns._start_resolving("x2", ts, ("t2", "t3"))
        replica.txns._start_resolving("x3", None, ("t2",))

    sent = await resolve_requests_sent(replica, answer, queue_more)
    assert sorted(sent) == [("t2", ("x1",)), ("t2", ("x2", "x3")), ("t2", ("x2", "x3")), ("t3", ("x2",))]
    assert [batch for tablet, batch in sent if tablet == "t2"] == [("x1",), ("x2", "x3"), ("x2", "x3")]


async def test_a_coordinators_resolve_requests_are_bounded_by_their_ids_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transaction ids are the clients' choice: a request takes ids up to RESOLVE_BATCH_ID_BYTES
    (past its first), so one client's outsized ids cannot make everyone's decisions unsendable."""
    monkeypatch.setattr(transactions, "RESOLVE_BATCH_ID_BYTES", 10)
    replica = serving_replica(NotLeader(None))
    ts = replica.clock.now()

    def queue_more() -> None:
        for txn_id in ("a" * 40, "bbbbbbb", "cc", "d"):
            replica.txns._start_resolving(txn_id, ts, ("t2",))

    sent = await resolve_requests_sent(replica, lambda batch, sent: api.ResolveReply(), queue_more)
    assert [txn_ids for _, txn_ids in sent] == [("x1",), ("a" * 40,), ("bbbbbbb", "cc", "d")]


async def test_a_replica_that_is_not_serving_never_answers_a_resolve_request_done() -> None:
    """A coordinator takes a `ResolveReply` as the participant's acknowledgement, after which it
    may forget the decision (txn/tablet/forgetting.py). A follower, behind its leader, may not
    have applied the Prepare its tablet voted with: finding nothing prepared, it must not say
    done; it points at the leader instead."""
    replica = serving_replica(NotLeader(None))
    replica._is_serving = lambda: False  # type: ignore[method-assign]
    with pytest.raises(RequestFailed) as raised:
        await replica.txns.resolve(api.ResolveRequest("t1", [api.ResolveDecision("x1", replica.clock.now())],
                                                      1_000_000_000))
    assert raised.value.reply.code == api.ErrorCode.NOT_LEADER
    assert not replica.pending


async def test_a_coordinator_forgets_a_commit_only_once_every_participant_acknowledged_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """x1 (t2) and x2 (t2, t3) commit, x3 aborts. t2 answers everything, t3 never answers: x1 is
    due for forgetting, x2 is never forgotten (t3's recovery will ask about it), and an abort is
    not tracked at all."""
    monkeypatch.setattr(transactions, "RESOLVE_ATTEMPTS", 2)
    replica = serving_replica(NotLeader(None))
    ts = replica.clock.now()

    def answer(batch: tuple[str, tuple[str, ...]], sent: list) -> object:
        return api.ResolveReply() if batch[0] == "t2" else None

    def queue_more() -> None:
        replica.txns._start_resolving("x2", ts, ("t2", "t3"))
        replica.txns._start_resolving("x3", None, ("t2",))

    sent = await resolve_requests_sent(replica, answer, queue_more)
    assert ("t3", ("x2",)) in sent and ("t2", ("x2", "x3")) in sent
    forgetting = replica.txns.forgetting
    assert [txn_id for _, txn_id in forgetting.due] == ["x1"] and not forgetting.waiting


async def test_a_coordinator_logs_forget_for_what_is_due_and_keeps_what_it_could_not_log() -> None:
    """Due decisions go into one `Forget` command, which names no keys (no read waits for it);
    a Forget not logged (here: a newer leader) leaves them due for the next round."""
    replica = serving_replica(NotLeader("n2"))
    replica.txns.call_tablet = lambda *args, **kwargs: None  # type: ignore[assignment]
    forgetting = replica.txns.forgetting
    forgetting.retention_s = 0.0
    for txn_id in ("x1", "x2"):
        forgetting.decided(txn_id, (), trio.current_time())
    with trio.fail_after(5):
        await replica.txns._forget_due()
    assert [txn_id for _, txn_id in forgetting.due] == ["x1", "x2"], "not logged: due again"
    proposed: list[object] = []

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))
        replica._on_applied(len(proposed), proposed[-1], False)  # what applying it tells the leader
        return len(proposed)

    replica.paxos.propose = propose  # type: ignore[method-assign]
    with trio.fail_after(5):
        await replica.txns._forget_due()
    [forget] = proposed
    assert isinstance(forget, Forget) and forget.txn_ids == ("x1", "x2")
    assert not forgetting.due and replica.marks["txn.decisions_forgotten"] == 2


async def test_a_failure_while_forgetting_does_not_stop_the_recovery_of_prepared_transactions(
        autojump_clock: trio.testing.MockClock) -> None:
    """Forgetting is housekeeping in the recovery round: if it fails unexpectedly, the round
    still goes on to ask about the transactions left prepared here."""
    replica = serving_replica(NotLeader(None))
    replica.txns.call_tablet = lambda *args, **kwargs: None  # type: ignore[assignment]
    now = replica.clock.now()
    replica.state.txns.prepared["x1"] = Prepare(now, replica.paxos.core.ballot, "x1", now, "t9", [(b"a", b"v")], [], [])
    recovered: list[str] = []

    def broken(now_s: float, limit: int) -> list[str]:
        raise RuntimeError("a bug in the bookkeeping")

    async def recover(txn_id: str, prepare: Prepare) -> bool:
        recovered.append(txn_id)
        return True

    replica.txns.forgetting.take_due = broken  # type: ignore[method-assign]
    replica.txns._recover = recover  # type: ignore[method-assign]
    with trio.move_on_after(transactions.RECOVERY_AFTER_S + 3 * transactions.RECOVERY_INTERVAL_S):
        await replica.txns._recovery_loop()
    assert recovered and recovered[0] == "x1"


def old_decisions(replica: TabletReplica) -> Timestamp:
    """Decision records older than the sweep's age (x1: t2 and t3; x2: t2; x3: no other
    participant; a1: an abort), one younger (y1: t2); returns the young one's commit timestamp."""
    now = replica.clock.now()
    old = Timestamp(now.wall - int(replica.txns.sweep_age_s * 1e9) - 1, 0)
    young = Timestamp(now.wall - int(replica.txns.sweep_age_s * 1e9) + 10**9, 0)
    entries = [Decide(Timestamp(old.wall, 1), replica.paxos.core.ballot, "x1", True, ["t2", "t3"]),
               Decide(Timestamp(old.wall, 2), replica.paxos.core.ballot, "x2", True, ["t2"]),
               Decide(Timestamp(old.wall, 3), replica.paxos.core.ballot, "x3", True, []),
               Decide(Timestamp(old.wall, 4), replica.paxos.core.ballot, "a1", False, []),
               Decide(young, replica.paxos.core.ballot, "y1", True, ["t2"])]
    replica.state.apply_entries([(index + 1, encode_command(command)) for index, command in enumerate(entries)])
    return young


async def test_the_sweep_forgets_old_commits_once_every_participant_answered_again() -> None:
    """A leader change loses the tracking; the sweep finds old commit records in the store,
    resolves them again at their participants and forgets those all of whose participants
    answered: not x1 (t3 is silent), not the abort, not the young record. A second pass
    starts from the first record again."""
    replica = serving_replica(NotLeader(None))
    old_decisions(replica)
    asked: list[tuple[str, tuple[str, ...]]] = []

    async def call_tablet(tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        assert isinstance(message, api.ResolveRequest)
        asked.append((tablet_id, tuple(d.txn_id for d in message.decisions)))
        return api.ResolveReply() if tablet_id == "t2" else None

    replica.txns.call_tablet = call_tablet  # type: ignore[assignment]
    proposed: list[object] = []

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))
        return len(proposed)

    replica.paxos.propose = propose  # type: ignore[method-assign]
    with trio.fail_after(5):
        await replica.txns._sweep_decisions()
    assert sorted(asked) == [("t2", ("x1", "x2")), ("t3", ("x1",))]
    [forget] = proposed
    assert isinstance(forget, Forget) and sorted(forget.txn_ids) == ["x2", "x3"]
    with trio.fail_after(5):
        await replica.txns._sweep_decisions()  # the page reached the last record: from the first again
    assert len(proposed) == 2


async def test_the_sweep_goes_through_the_records_a_page_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "SWEEP_RECORDS", 2)
    replica = serving_replica(NotLeader(None))
    old_decisions(replica)
    pages: list[list[str]] = []
    records = replica.state.txns
    page = records.decision_page

    def recorded(after: bytes | None, limit: int):
        result = page(after, limit)
        pages.append([txn_id for txn_id, _ in result[0]])
        return result

    monkeypatch.setattr(records, "decision_page", recorded)
    replica.txns.call_tablet = None  # type: ignore[assignment]  # nothing is old enough to be asked about below
    replica.txns.sweep_age_s = 10**6
    for _ in range(4):
        await replica.txns._sweep_decisions()
    assert pages == [["a1", "x1"], ["x2", "x3"], ["y1"], ["a1", "x1"]]


async def test_a_transactional_read_says_the_lease_its_lock_was_taken_under() -> None:
    """The client aborts an attempt whose reads of one tablet came under two leases
    (tests/txn/test_client_read_leases.py): the reply names the lease."""
    replica = serving_replica(NotLeader(None))
    replica.leader.lease_acquired(4242, 0)
    replica.leader.serving = Serving.SERVING
    with trio.fail_after(5):
        read = await replica.txns.read(api.TxnReadRequest("t1", "x1", replica.clock.now(), b"k", 1_000_000_000))
        scan = await replica.txns.scan(api.TxnScanRequest("t1", "x1", replica.clock.now(), b"", None, 10, 1_000_000_000))
    assert (read.served_by, read.lease) == ("n1", 4242) and (scan.served_by, scan.lease) == ("n1", 4242)


async def test_a_decision_names_only_the_keys_its_transaction_prepared_or_is_preparing_here() -> None:
    """What a decision or resolution changes here, hence which reads wait for it: a client's abort
    at a coordinator where its transaction never prepared changes no key (before 12-05 it named
    none, and every read of the tablet at or above it waited for it); one assigned while the
    transaction's Prepare is being logged names that prepare's keys; a resolution, its intents'."""
    replica = serving_replica(NotLeader(None))
    proposed: list[object] = []
    release = trio.Event()

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        proposed.append(decode_command(command))
        await release.wait()
        raise ProposalLost(known_not_chosen=True)

    async def refused(call, request) -> None:  # noqa: ANN001
        with pytest.raises(RequestFailed):  # each proposal ends "not logged" once released
            await call(request)

    replica.paxos.propose = propose  # type: ignore[method-assign]
    pending_keys = lambda command: replica.leader.pending[command.ts].keys  # noqa: E731
    async with trio.open_nursery() as nursery:
        nursery.start_soon(refused, replica.txns.abort, api.AbortRequest("t1", "never-here", "t1", 1_000_000_000))
        with trio.fail_after(5):
            while not proposed:
                await trio.sleep(0.001)
        prepare = api.PrepareRequest("t1", "preparing", replica.clock.now(), "t9", (api.KeyWrite(b"p", b"1"),), (), (),
                                     1_000_000_000)
        nursery.start_soon(refused, replica.txns.prepare, prepare)
        with trio.fail_after(5):
            while len(proposed) < 2:
                await trio.sleep(0.001)
        abort, prepared = proposed
        assert isinstance(abort, Decide) and not abort.committed and pending_keys(abort) == frozenset()
        assert replica.leader.leader_read_ready(abort.ts, b"other"), "a read of any key need not wait for it"
        assert isinstance(prepared, Prepare) and replica.txns.preparing == {"preparing": frozenset({b"p"})}
        nursery.start_soon(refused, replica.txns.abort, api.AbortRequest("t1", "preparing", "t1", 1_000_000_000))
        with trio.fail_after(5):
            while len(proposed) < 3:
                await trio.sleep(0.001)
        assert isinstance(proposed[2], Decide) and pending_keys(proposed[2]) == frozenset({b"p"})
        assert not replica.leader.leader_read_ready(proposed[2].ts, b"p")
        assert replica.leader.leader_read_ready(proposed[2].ts, b"other")
        now = replica.clock.now()
        replica.state.txns.prepared["x1"] = Prepare(now, replica.paxos.core.ballot, "x1", now, "t9", [(b"i", b"v")], [], [])
        nursery.start_soon(refused, replica.txns.resolve, api.ResolveRequest(
            "t1", [api.ResolveDecision("x1", None), api.ResolveDecision("preparing", None)], 1_000_000_000))
        with trio.fail_after(5):
            while len(proposed) < 4:
                await trio.sleep(0.001)
        assert isinstance(proposed[3], Resolve) and pending_keys(proposed[3]) == frozenset({b"i"})
        release.set()
    assert replica.txns.preparing == {}, "forgotten once its Prepare's proposal ended"
