"""Single writes started without a task (`TabletReplica.start_write`, txn/tablet/started_writes.py):
answered once, after commit-wait, with their locks held until then; outcome unknown at their
deadline or when the replica stops; left to the waiting path when a lock is held."""

from __future__ import annotations

import trio
import trio.testing

from paxos.types import NotLeader
from tests.txn.test_replica import serving_replica
from txn import api
from txn.api.errors import RequestFailed
from txn.tablet.leader import WriteState
from txn.tablet.locks import LockMode, Outcome
from txn.tablet.started_writes import SWEEP_S, StartedWrite


def controlled(replica):
    """Paxos for the test: each proposal is recorded and chosen (applied at the next slot) when the
    test sets its event."""
    proposals: list[tuple[bytes, trio.Event]] = []

    async def propose(command: bytes, *, timeout_s: float, on_not_chosen: object = None) -> int:
        chosen = trio.Event()
        proposals.append((command, chosen))
        await chosen.wait()
        slot = replica.state.applied_index() + 1
        replica.state.apply_entries([(slot, command)])
        return slot

    replica.paxos.propose = propose
    return proposals


def shared_lock_outcome(replica, txn_id: str) -> Outcome:
    outcome = replica.txns.locks.lock_key(txn_id, replica.clock.now(), b"k", LockMode.SHARED, 0).outcome
    replica.txns.locks.release(txn_id)
    return outcome


async def test_a_started_write_is_answered_once_its_commit_wait_is_over_and_holds_its_lock_until_then() -> None:
    replica = serving_replica(NotLeader(None))
    proposals = controlled(replica)
    answers: list[object] = []
    # A deadline far off: on trio's real clock here, a loaded box must not reach it mid-test.
    assert replica.start_write((api.KeyWrite(b"k", b"v"),), 60 * 10**9, None, answers.append)
    await trio.testing.wait_all_tasks_blocked()
    assert len(proposals) == 1 and not answers
    [pending] = replica.leader.pending.values()
    assert shared_lock_outcome(replica, "txn1") is Outcome.WAIT, "its lock is held while it is proposed"
    proposals[0][1].set()
    await trio.testing.wait_all_tasks_blocked()
    assert pending.state is WriteState.APPLIED and not answers, "chosen, but in commit-wait: no answer yet"
    assert isinstance(pending.waiter, StartedWrite)
    assert shared_lock_outcome(replica, "txn2") is Outcome.WAIT, "its lock is held through commit-wait"
    physical = replica.clock.physical
    physical.set(pending.release_after_ns + 1)
    replica._released(replica.leader.tick(physical.now_ns()))  # what the commit-wait timer does
    assert len(answers) == 1 and isinstance(answers[0], api.WriteReply) and answers[0].ts == pending.ts
    assert shared_lock_outcome(replica, "txn3") is Outcome.GRANTED, "answered: its lock is let go"
    assert replica.marks["tablet.write_acknowledged"] == 1 and not replica.started_writes


async def test_a_started_write_not_chosen_by_its_deadline_is_outcome_unknown_once(
        autojump_clock: trio.testing.MockClock) -> None:
    replica = serving_replica(NotLeader(None))
    proposals = controlled(replica)
    answers: list[object] = []
    answered_s: list[float] = []
    started_s = trio.current_time()

    def answer(result: object) -> None:
        answers.append(result)
        answered_s.append(trio.current_time() - started_s)

    assert replica.start_write((api.KeyWrite(b"k", b"v"),), 300_000_000, None, answer)
    await trio.sleep(0.2)
    assert not answers
    await trio.sleep(0.2)
    [failed] = answers
    assert isinstance(failed, RequestFailed) and failed.reply.code == api.ErrorCode.OUTCOME_UNKNOWN
    assert 0.3 <= answered_s[0] <= 0.3 + SWEEP_S, "at its deadline, a sweep late at most"
    assert replica.not_durable_commits == 1
    assert shared_lock_outcome(replica, "txn1") is Outcome.GRANTED, "given up: its lock is let go"
    [pending_ts] = replica.leader.pending  # its record stays until Paxos tells its fate
    replica.clock.physical.set(replica.leader.pending[pending_ts].release_after_ns + 1)
    proposals[0][1].set()  # chosen after all, later, and past its commit-wait as it is applied
    await trio.sleep(1)
    assert replica.leader.pending == {}, "its record is done"
    assert answers == [failed], "answered once"
    assert replica.distributed_commits == 0 and replica.not_durable_commits == 1, "counted once, as not durable"


async def test_a_started_write_whose_record_was_dropped_is_acknowledged_after_its_release_on_the_clock(
        autojump_clock: trio.testing.MockClock) -> None:
    """A lease change drops a proposed record (UNKNOWN) whose command Paxos then applies: nothing
    releases it, so the sweeper acknowledges it once the physical clock is past its release."""
    replica = serving_replica(NotLeader(None))
    proposals = controlled(replica)
    answers: list[object] = []
    assert replica.start_write((api.KeyWrite(b"k", b"v"),), 10**9, None, answers.append)
    [pending] = replica.leader.pending.values()
    replica.leader.lease_acquired(1, 0)  # a new lease: the record is dropped
    assert pending.state is WriteState.UNKNOWN
    await trio.testing.wait_all_tasks_blocked()
    proposals[0][1].set()
    await trio.sleep(0.2)
    assert not answers, "its commit-wait is not over on the clock"
    replica.clock.physical.set(pending.release_after_ns + 1)
    await trio.sleep(0.2)
    assert len(answers) == 1 and isinstance(answers[0], api.WriteReply) and answers[0].ts == pending.ts


async def test_a_write_whose_lock_is_held_is_not_started_and_leaves_nothing_behind() -> None:
    replica = serving_replica(NotLeader(None))
    proposals = controlled(replica)
    older = replica.clock.now()
    assert replica.txns.locks.lock_key("older", older, b"k", LockMode.EXCLUSIVE, 0).outcome is Outcome.GRANTED
    assert not replica.start_write((api.KeyWrite(b"j", b"v"), api.KeyWrite(b"k", b"v")), 10**9, None, print)
    await trio.testing.wait_all_tasks_blocked()
    assert set(replica.txns.locks.txns) == {"older"}, "the lock it got (j) is let go"
    assert not proposals and not replica.leader.pending and not replica.started_writes


async def test_a_replica_that_stops_answers_its_started_writes_outcome_unknown() -> None:
    replica = serving_replica(NotLeader(None))
    controlled(replica)
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica.started_writes.run)
        assert replica.start_write((api.KeyWrite(b"k", b"v"),), 60 * 10**9, None, answers.append)
        await trio.testing.wait_all_tasks_blocked()
        assert not answers
        nursery.cancel_scope.cancel()
    [failed] = answers
    assert isinstance(failed, RequestFailed) and failed.reply.code == api.ErrorCode.OUTCOME_UNKNOWN
    assert "stopped" in failed.reply.message
    assert shared_lock_outcome(replica, "txn1") is Outcome.GRANTED
