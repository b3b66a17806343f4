"""`PaxosDriver(write_synced=...)`: a turn's synced log write awaited off the event loop.

While a replica's write is out, nothing that depends on it leaves (no Accepted,
no apply of a slot it holds, no choice counted on it), the core takes no input,
and what arrives meanwhile goes into one later write; chosen slots that earlier
writes hold are applied without waiting for it. A failed write fails the
driver's task.
"""

from __future__ import annotations

import functools
import pytest
import trio

from mvcc.engine import Batch, DictEngine, EngineError
from paxos.driver import PaxosConfig, PaxosDriver
from paxos.simulation import ListStateMachine
from paxos.storage import LOG_PREFIX, PaxosStorage, entry_key

IDS = ("n1", "n2", "n3")


class HeldWrites:
    """One replica's `write_synced`: records each batch's log slots; holds the writes while `held`."""

    def __init__(self, engine: DictEngine) -> None:
        self.engine = engine
        self.held = False
        self.release = trio.Event()
        self.started: list[list[int]] = []  # per call, the log slots it writes
        self.fail = False

    async def __call__(self, batch: Batch) -> None:
        self.started.append(sorted(int.from_bytes(key[len(LOG_PREFIX):], "big")
                                   for key, value in batch.ops if key.startswith(LOG_PREFIX) and value is not None))
        if self.fail:
            raise EngineError("disk gone")
        if self.held:
            await self.release.wait()
        self.engine.apply(batch, sync=True)


class Cluster:
    def __init__(self) -> None:
        self.engines = {node: DictEngine() for node in IDS}
        self.machines = {node: ListStateMachine() for node in IDS}
        self.writes = {node: HeldWrites(self.engines[node]) for node in IDS}
        self.accepted_from: dict[str, int] = {node: 0 for node in IDS}
        self.cut: set[str] = set()  # nodes whose messages, both ways, are lost
        self.drivers: dict[str, PaxosDriver] = {}
        for node in IDS:
            self.drivers[node] = PaxosDriver(
                node_id=node, peers=IDS, storage=PaxosStorage(self.engines[node]), state_machine=self.machines[node],
                send=functools.partial(self._send, node), now_ns=lambda: round(trio.current_time() * 1e9), seed=1,
                config=PaxosConfig(), preferred_leader=node == "n1", write_synced=self.writes[node])

    def _send(self, src: str, dst: str, msg: object) -> None:
        if src in self.cut or dst in self.cut:
            return
        if type(msg).__name__ == "Accepted":
            self.accepted_from[src] += 1
        self.drivers[dst].deliver(src, msg, wake=False)  # as a node's connection reader does
        self.drivers[dst].turn_now()

    async def start(self, nursery: trio.Nursery) -> PaxosDriver:
        for node in IDS:
            await nursery.start(self.drivers[node].run)
        with trio.fail_after(5):
            while not self.drivers["n1"].has_lease():
                await trio.sleep(0.01)
        return self.drivers["n1"]


async def test_nothing_depends_on_a_write_until_it_returned_and_what_waits_shares_the_next(
        autojump_clock: trio.testing.MockClock) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        n1 = await cluster.start(nursery)
        for node in ("n2", "n3"):
            cluster.writes[node].held = True
        calls_before = {node: len(cluster.writes[node].started) for node in ("n2", "n3")}
        accepted_before = dict(cluster.accepted_from)
        slots: dict[bytes, int] = {}

        async def propose(command: bytes) -> None:
            slots[command] = await n1.propose(command, timeout_s=10.0)

        nursery.start_soon(propose, b"a")
        await trio.sleep(0.05)
        first_slot = n1.core.last_index
        assert all(len(cluster.writes[node].started) == calls_before[node] + 1 for node in ("n2", "n3"))
        nursery.start_soon(propose, b"b")
        await trio.sleep(0.01)
        nursery.start_soon(propose, b"c")
        await trio.sleep(1.0)  # many heartbeats and ticks later
        for node in ("n2", "n3"):
            assert cluster.accepted_from[node] == accepted_before[node], "an Accepted sent before its write returned"
            assert cluster.engines[node].get(entry_key(first_slot)) is None
            assert len(cluster.writes[node].started) == calls_before[node] + 1, "a write while one is out"
            assert cluster.machines[node].applied_index() < first_slot
        assert not slots, "chosen without a follower's synced write"
        assert n1.core.chosen_index < first_slot
        for node in ("n2", "n3"):
            cluster.writes[node].held = False
            cluster.writes[node].release.set()
        with trio.fail_after(5):
            while len(slots) < 3:
                await trio.sleep(0.01)
        assert slots[b"a"] == first_slot and sorted(slots.values()) == [first_slot, first_slot + 1, first_slot + 2]
        for node in ("n2", "n3"):
            later = cluster.writes[node].started[calls_before[node] + 1]
            assert later == [first_slot + 1, first_slot + 2], "b and c, queued meanwhile, in one write"
            with trio.fail_after(5):
                await cluster.drivers[node].wait_applied(first_slot + 2)
            assert cluster.machines[node].commands[-3:] == [b"a", b"b", b"c"]
        nursery.cancel_scope.cancel()


async def test_a_failed_write_fails_the_drivers_task(autojump_clock: trio.testing.MockClock) -> None:
    cluster = Cluster()
    with pytest.raises(BaseException) as raised:
        async with trio.open_nursery() as nursery:
            n1 = await cluster.start(nursery)
            cluster.writes["n1"].fail = True
            nursery.start_soon(functools.partial(n1.propose, b"x", timeout_s=10.0))
            await trio.sleep(5)
    assert "disk gone" in repr(_leaves(raised.value)), raised.value


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def test_a_slot_chosen_before_a_turn_is_applied_without_waiting_for_that_turns_write(
        autojump_clock: trio.testing.MockClock) -> None:
    """A follower learns that a slot it already holds is chosen from the Accept that brings the next
    one: it applies the first at once; only the next waits for the write that holds it."""
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        n1 = await cluster.start(nursery)
        first = await n1.propose(b"a", timeout_s=10.0)
        n2 = cluster.drivers["n2"]
        assert cluster.machines["n2"].applied_index() < first, "n2 knew of the choice before the next Accept"
        cluster.writes["n2"].held = True
        writes_before = len(cluster.writes["n2"].started)
        second = await n1.propose(b"b", timeout_s=10.0)  # chosen on n1 and n3
        assert second == first + 1
        assert cluster.writes["n2"].started[writes_before:] == [[second]], "n2's write of b is out"
        assert n2.write_out
        assert cluster.machines["n2"].applied_index() == first, "a waited for the write of b"
        assert cluster.machines["n2"].commands[-1] == b"a"
        assert cluster.engines["n2"].get(entry_key(second)) is None
        cluster.writes["n2"].held = False
        cluster.writes["n2"].release.set()
        with trio.fail_after(5):
            await n2.wait_applied(second)
        assert cluster.machines["n2"].commands[-2:] == [b"a", b"b"]
        nursery.cancel_scope.cancel()


async def test_a_slot_chosen_in_the_accept_that_brings_it_waits_for_its_write(
        autojump_clock: trio.testing.MockClock) -> None:
    """A lagging follower catching up gets slots and their choice in one Accept: it applies none of
    them before the write that holds them returned."""
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        n1 = await cluster.start(nursery)
        cluster.cut.add("n2")
        first = await n1.propose(b"a", timeout_s=10.0)  # chosen on n1 and n3
        await n1.propose(b"b", timeout_s=10.0)
        n2 = cluster.drivers["n2"]
        assert n2.core.last_index < first
        cluster.writes["n2"].held = True
        cluster.cut.clear()
        with trio.fail_after(30):
            while not n2.write_out or not any(first in slots for slots in cluster.writes["n2"].started):
                await trio.sleep(0.01)
        await trio.sleep(1.0)
        assert cluster.machines["n2"].applied_index() < first, "applied before the write that holds it"
        cluster.writes["n2"].held = False
        cluster.writes["n2"].release.set()
        with trio.fail_after(30):
            await n2.wait_applied(first + 1)
        assert cluster.machines["n2"].commands[-2:] == [b"a", b"b"]
        nursery.cancel_scope.cancel()
