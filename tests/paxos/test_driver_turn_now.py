"""`PaxosDriver.turn_now`: a turn run in the caller's task (a node's connection reader) instead of a
loop pass later in the driver's own, with the inbox's order and the owner task's failure kept."""

from __future__ import annotations

from typing import Any

import trio

from mvcc.engine import DictEngine
from paxos.driver import PaxosConfig, PaxosDriver, _Proposal
from paxos.simulation import ListStateMachine
from paxos.storage import PaxosStorage

IDS = ("n1", "n2", "n3")


class FailingStorage(PaxosStorage):
    """A PaxosStorage whose synced writes fail once armed (a disk gone bad)."""

    armed = False

    def write(self, *args: Any, **kwargs: Any) -> None:
        if self.armed:
            raise OSError("disk gone")
        super().write(*args, **kwargs)


class HeldCluster:
    """Three drivers whose messages to n2 are held for the test to hand over itself."""

    def __init__(self) -> None:
        self.drivers: dict[str, PaxosDriver] = {}
        self.held: list[tuple[str, object]] = []
        self.sent_by: dict[str, int] = {node: 0 for node in IDS}
        self.storages = {node: FailingStorage(DictEngine()) for node in IDS}
        for node in IDS:
            self.drivers[node] = PaxosDriver(
                node_id=node, peers=IDS, storage=self.storages[node], state_machine=ListStateMachine(),
                send=self._sender(node), now_ns=lambda: round(trio.current_time() * 1e9), seed=1,
                config=PaxosConfig(), preferred_leader=node == "n1")

    def _sender(self, src: str) -> Any:
        def send(dst: str, msg: object) -> None:
            self.sent_by[src] += 1
            if dst == "n2":
                self.held.append((src, msg))
            else:
                self.drivers[dst].deliver(src, msg)
        return send

    def hand_held_to_n2(self) -> None:
        held, self.held = self.held, []
        for src, msg in held:
            self.drivers["n2"].deliver(src, msg, wake=False)


def leaves(errors: list[BaseException]) -> list[BaseException]:
    flat: list[BaseException] = []
    for error in errors:
        flat.extend(leaves(list(error.exceptions)) if isinstance(error, BaseExceptionGroup) else [error])
    return flat


async def leader_with_a_chosen_command(cluster: HeldCluster, nursery: trio.Nursery) -> PaxosDriver:
    for node in ("n1", "n3"):
        await nursery.start(cluster.drivers[node].run)
    n1 = cluster.drivers["n1"]
    with trio.fail_after(5):
        while not n1.has_lease():
            await trio.sleep(0.01)
    await n1.propose(b"chosen by n1 and n3", timeout_s=5)
    return n1


async def test_turn_now_runs_the_turn_in_the_callers_task(autojump_clock: trio.testing.MockClock) -> None:
    """n2's answers leave inside `turn_now`, before the caller's next checkpoint: the owner task
    did not have to run."""
    cluster = HeldCluster()
    async with trio.open_nursery() as nursery:
        await leader_with_a_chosen_command(cluster, nursery)
        n2 = cluster.drivers["n2"]
        await nursery.start(n2.run)
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.held, "n1 sent n2 its Prepare and Accepts"
        before = cluster.sent_by["n2"]
        cluster.hand_held_to_n2()  # wake=False: the owner task is not told
        assert cluster.sent_by["n2"] == before and n2.core.last_index == 0
        n2.turn_now()
        assert cluster.sent_by["n2"] > before, "n2 answered in this task, at once"
        assert n2.core.last_index >= 2, "and took n1's Accepts into its log"
        nursery.cancel_scope.cancel()


async def test_turn_now_takes_the_inbox_in_order(autojump_clock: trio.testing.MockClock) -> None:
    """Two proposals queued while the owner task is parked get their slots in queue order when
    `turn_now` takes them (an owner parked in the channel's receive() would be handed the first
    directly, and `turn_now` would give the second the lower slot)."""
    cluster = HeldCluster()
    async with trio.open_nursery() as nursery:
        n1 = await leader_with_a_chosen_command(cluster, nursery)
        await trio.testing.wait_all_tasks_blocked()
        first, second = _Proposal(b"first"), _Proposal(b"second")
        n1._queue(("propose", first))
        n1._queue(("propose", second))
        n1.turn_now()
        slots = {proposal.command: slot for slot, proposal in n1._pending.items()}
        assert set(slots) == {b"first", b"second"}, "both proposed by this turn"
        assert slots[b"first"] < slots[b"second"]
        nursery.cancel_scope.cancel()


async def test_a_failed_turn_now_fails_the_owner_task_not_the_caller(autojump_clock: trio.testing.MockClock) -> None:
    """The caller (a connection's reader) would only log an error; the driver's own task raises
    it, as if its turn had failed, so the tablet's supervisor sees it."""
    cluster = HeldCluster()
    async with trio.open_nursery() as nursery:
        await leader_with_a_chosen_command(cluster, nursery)
        n2 = cluster.drivers["n2"]
        raised: list[BaseException] = []
        try:
            with trio.fail_after(10):  # a swallowed failure would leave n2's task running forever
                async with trio.open_nursery() as n2_nursery:
                    await n2_nursery.start(n2.run)
                    await trio.testing.wait_all_tasks_blocked()
                    cluster.storages["n2"].armed = True
                    cluster.hand_held_to_n2()
                    n2.turn_now()  # does not raise here
                    sent = cluster.sent_by["n2"]
                    n2.turn_now()  # nor runs a second turn on the broken core
                    assert cluster.sent_by["n2"] == sent
                    await trio.sleep(1)
        except* OSError as group:
            raised.extend(group.exceptions)
        assert [str(error) for error in leaves(raised)] == ["disk gone"], "n2's own task raised it"
        nursery.cancel_scope.cancel()


async def test_turn_now_before_the_owner_task_runs_leaves_the_inbox_to_it(
        autojump_clock: trio.testing.MockClock) -> None:
    """Before `run` started (and after it ended) `turn_now` runs nothing: the owner task takes
    the inbox when it starts."""
    cluster = HeldCluster()
    async with trio.open_nursery() as nursery:
        await leader_with_a_chosen_command(cluster, nursery)
        await trio.testing.wait_all_tasks_blocked()
        n2 = cluster.drivers["n2"]
        before = cluster.sent_by["n2"]
        cluster.hand_held_to_n2()
        n2.turn_now()
        assert cluster.sent_by["n2"] == before, "no turn without the owner task"
        await nursery.start(n2.run)
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.sent_by["n2"] > before, "the owner task took what was queued"
        nursery.cancel_scope.cancel()
