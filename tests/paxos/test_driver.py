"""The trio driver on an in-process network under the autojump clock (exact virtual times)."""

from __future__ import annotations

import functools

import pytest
import trio

from mvcc.engine import DictEngine
from paxos.driver import NotLeader, PaxosConfig, PaxosDriver, ProposalLost
from paxos.simulation import ListStateMachine
from paxos.storage import LOG_END, LOG_PREFIX, PaxosStorage

IDS = ("n1", "n2", "n3")


class Cluster:
    def __init__(self, config: PaxosConfig | None = None) -> None:
        self.config = config or PaxosConfig()
        self.cut: set[str] = set()
        self.engines = {node: DictEngine() for node in IDS}
        self.machines = {node: ListStateMachine() for node in IDS}
        self.drivers: dict[str, PaxosDriver] = {}

    def make(self, node: str) -> PaxosDriver:
        def send(dst: str, msg: object, src: str = node) -> None:
            if src not in self.cut and dst not in self.cut and dst in self.drivers:
                self.drivers[dst].deliver(src, msg)

        driver = PaxosDriver(
            node_id=node, peers=IDS, storage=PaxosStorage(self.engines[node]), state_machine=self.machines[node],
            send=send, now_ns=lambda: round(trio.current_time() * 1e9), seed=1, config=self.config,
            preferred_leader=(node == "n1"))
        self.drivers[node] = driver
        return driver

    async def start(self, nursery: trio.Nursery) -> None:
        for node in IDS:
            self.make(node)
        for node in IDS:
            await nursery.start(self.drivers[node].run)

    async def leader(self) -> PaxosDriver:
        with trio.fail_after(5):
            while True:
                holders = [driver for driver in self.drivers.values() if driver.has_lease()]
                if holders:
                    return holders[0]
                await trio.sleep(0.01)


async def test_propose_is_chosen_applied_everywhere_and_followers_redirect(autojump_clock: trio.testing.MockClock) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        n1 = await cluster.leader()
        assert n1.node_id == "n1", "the preferred leader campaigns first"
        slots: list[int] = []

        async def one(number: int) -> None:
            slots.append(await n1.propose(b"cmd%d" % number, timeout_s=1.0))

        async with trio.open_nursery() as proposers:
            for number in range(50):
                proposers.start_soon(one, number)
        assert sorted(slots) == list(range(2, 52)), "slot 1 is the leader's no-op"
        with pytest.raises(NotLeader) as refused:
            await cluster.drivers["n2"].propose(b"x", timeout_s=1.0)
        assert refused.value.leader_hint == "n1"
        for node in IDS:
            await cluster.drivers[node].wait_applied(51)
            assert sorted(cluster.machines[node].commands[1:]) == sorted(b"cmd%d" % i for i in range(50))
            assert cluster.machines[node].commands == cluster.machines["n1"].commands
        status = n1.status()
        assert status.is_leader and status.lease_holder and status.chosen_index == 51
        assert dict(status.counters)["storage.synced_writes"] < 50, "group commit: fewer syncs than proposals"
        assert not cluster.drivers["n2"].has_lease()
        nursery.cancel_scope.cancel()


async def test_a_cut_off_leader_loses_its_proposal_and_a_new_leader_takes_over(autojump_clock: trio.testing.MockClock) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        n1 = await cluster.leader()
        cluster.cut.add("n1")
        outcome: list[BaseException] = []

        async def doomed() -> None:
            try:
                await n1.propose(b"doomed", timeout_s=30.0)
            except (ProposalLost, trio.TooSlowError) as error:
                outcome.append(error)

        nursery.start_soon(doomed)
        started = trio.current_time()
        while n1.has_lease():
            await n1.wait_status_change()
        lease_s = cluster.config.lease_ns / 1e9
        assert trio.current_time() - started <= lease_s + 1e-9, "the lease lapses within one lease of the last heartbeat"
        await trio.sleep(3)
        leaders = [node for node in ("n2", "n3") if cluster.drivers[node].status().is_leader]
        assert len(leaders) == 1
        cluster.cut.clear()
        await trio.sleep(1)
        assert len(outcome) == 1 and isinstance(outcome[0], ProposalLost)
        assert not n1.status().is_leader
        slot = await cluster.drivers[leaders[0]].propose(b"after", timeout_s=1.0)
        await n1.wait_applied(slot)
        assert cluster.machines["n1"].commands[slot - 1] == b"after"
        nursery.cancel_scope.cancel()


async def test_restart_recovers_from_synced_state(autojump_clock: trio.testing.MockClock) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        n1 = await cluster.leader()
        for number in range(5):
            await n1.propose(b"v%d" % number, timeout_s=1.0)
        nursery.cancel_scope.cancel()
    before = {node: PaxosStorage(cluster.engines[node]).load() for node in IDS}
    for node in IDS:
        cluster.engines[node] = cluster.engines[node].after_crash()
        assert PaxosStorage(cluster.engines[node]).load() == before[node]


async def test_the_log_stays_bounded_under_many_writes(autojump_clock: trio.testing.MockClock) -> None:
    """Truncation needs no one to ask: past `truncate_threshold_entries` applied entries every
    replica keeps `truncate_keep_entries`, in its storage too, however many commands go through."""
    config = PaxosConfig(truncate_threshold_entries=50, truncate_keep_entries=10)
    cluster = Cluster(config)
    in_flight = 30
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        n1 = await cluster.leader()
        last = 0
        for round_ in range(20):
            async with trio.open_nursery() as proposers:
                for number in range(in_flight):
                    proposers.start_soon(functools.partial(n1.propose, b"r%d-%d" % (round_, number), timeout_s=5.0))
            last = n1.status().applied_index
            for node in IDS:
                await cluster.drivers[node].wait_applied(last)
                status = cluster.drivers[node].status()
                stored = sum(1 for _ in cluster.engines[node].iterate(LOG_PREFIX, LOG_END))
                assert stored == status.last_index - status.first_index + 1, node
                assert stored <= config.truncate_threshold_entries + in_flight + 1, (node, round_, stored)
        assert last > 20 * in_flight
        for node in IDS:
            persisted = PaxosStorage(cluster.engines[node]).load()
            assert persisted.snapshot_index > last - config.truncate_threshold_entries - in_flight, node
            assert len(persisted.entries) <= config.truncate_threshold_entries + in_flight + 1
        nursery.cancel_scope.cancel()


async def test_before_heartbeat_sets_the_token_each_heartbeat_carries(autojump_clock: trio.testing.MockClock) -> None:
    """The application's hook runs just before the core builds a leader's heartbeats, so each carries a
    token set for it (the tablets close a timestamp there, at the heartbeat's pace, idle or not)."""
    cluster = Cluster()
    calls: list[float] = []
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        n1 = await cluster.leader()
        assert n1.node_id == "n1"
        await n1.propose(b"x", timeout_s=5)
        index = n1.core.applied_index

        def close() -> None:
            calls.append(trio.current_time())
            n1.set_closed(b"T%d" % len(calls), index)

        n1.before_heartbeat = close
        seen: list[bytes] = []
        n2 = cluster.drivers["n2"]
        n2.on_closed = lambda token, closed_index: seen.append(token)
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert len(calls) >= 8, "once per heartbeat (every 400 ms while idle)"
    gaps = [round(b - a, 3) for a, b in zip(calls, calls[1:])]
    # The first after the write is a normal one (100 ms); then nothing happens: quiet, 400 ms apart.
    assert set(gaps[1:]) == {cluster.config.idle_heartbeat_ns / 1e9}, gaps
    assert seen[-1] == b"T%d" % len(calls), "the latest heartbeat carried the token set just before it"
    assert len(seen) >= len(calls) - 1, "every heartbeat carried a new one"


async def test_a_proposal_waits_for_room_in_a_full_inbox_and_is_known_not_chosen_if_it_never_gets_in(
        autojump_clock: trio.testing.MockClock) -> None:
    """`propose` queues without waiting when the inbox has room; a full inbox makes it wait, and a
    deadline that ends that wait means the command never reached the log."""
    cluster = Cluster()
    driver = cluster.make("n1")  # never run: nothing takes from its inbox
    for _ in range(driver._inbox_send.statistics().max_buffer_size):
        driver.campaign()
    told: list[bool] = []
    started = trio.current_time()
    with pytest.raises(ProposalLost) as lost:
        await driver.propose(b"x", timeout_s=0.5, on_not_chosen=lambda: told.append(True))
    assert lost.value.known_not_chosen and told == [True]
    assert trio.current_time() - started == pytest.approx(0.5), "it waited for room until its deadline"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(driver.propose, b"y", timeout_s=5.0))
        await trio.testing.wait_all_tasks_blocked()
        assert driver._inbox_send.statistics().current_buffer_used == driver._inbox_send.statistics().max_buffer_size
        driver._inbox_receive.receive_nowait()  # room for one: the waiting proposal takes it
        await trio.testing.wait_all_tasks_blocked()
        queued = [driver._inbox_receive.receive_nowait() for _ in range(driver._inbox_send.statistics().max_buffer_size)]
        assert queued[-1][0] == "propose" and queued[-1][1].command == b"y"
        nursery.cancel_scope.cancel()


async def test_a_queued_proposal_not_chosen_by_its_deadline_is_too_slow_and_its_fate_unknown(
        autojump_clock: trio.testing.MockClock) -> None:
    """Once in the inbox, a timeout says nothing of the command's fate: `trio.TooSlowError`, and
    `on_not_chosen` stays untold (the command may still be chosen)."""
    cluster = Cluster()
    driver = cluster.make("n1")  # never run: the command sits in the inbox, never chosen
    told: list[bool] = []
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await driver.propose(b"x", timeout_s=0.5, on_not_chosen=lambda: told.append(True))
    assert trio.current_time() - started == pytest.approx(0.5)
    assert told == []
    assert driver._inbox_receive.receive_nowait()[1].command == b"x", "it was queued"
    with pytest.raises(ValueError, match="non-negative"):
        await driver.propose(b"y", timeout_s=-1.0)


async def test_a_proposal_queued_without_a_waiting_task_is_told_its_fate_from_the_turn(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """`propose_nowait`: `on_done(slot, None)` once chosen and applied here; at a follower,
    `on_not_chosen` then `on_done(0, NotLeader)`. A failing `on_done` is logged and the driver
    serves on."""
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        n1 = await cluster.leader()
        told: list[tuple[str, int, object]] = []

        def on_done(name: str, slot: int, error: Exception | None) -> None:
            told.append((name, slot, error))
            if name == "boom":
                raise RuntimeError("the proposer's bug")

        n1.propose_nowait(b"a", on_done=functools.partial(on_done, "a"))
        n1.propose_nowait(b"boom", on_done=functools.partial(on_done, "boom"))
        not_chosen: list[str] = []
        cluster.drivers["n2"].propose_nowait(b"x", on_done=functools.partial(on_done, "x"),
                                             on_not_chosen=lambda: not_chosen.append("x"))
        with trio.fail_after(5):
            while len(told) < 3:
                await trio.sleep(0.01)
        by_name = {name: (slot, error) for name, slot, error in told}
        assert by_name["a"][1] is None and by_name["boom"][1] is None
        slot_a = by_name["a"][0]
        assert cluster.machines["n1"].commands[slot_a - 1] == b"a", "told once applied here"
        assert by_name["x"][0] == 0 and isinstance(by_name["x"][1], NotLeader) and not_chosen == ["x"]
        assert "on_done failed" in caplog.text
        assert await n1.propose(b"after", timeout_s=1.0) > slot_a, "the driver serves on"
        nursery.cancel_scope.cancel()
