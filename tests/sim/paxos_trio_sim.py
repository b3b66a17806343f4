"""Seeded simulation of one Paxos group through the real trio driver on the simulated network.

The bulk sweep drives the pure cores (paxos/simulation.py); this runs fewer
seeds through everything else: PaxosDriver, PaxosStorage on DictEngine
(crashes keep only synced writes), txn/simnet.py (drops, duplicates,
reordering, partitions, crash/restart) under MockClock, with a per-node clock
offset and drift. Checkers: agreement and applied prefixes on every apply,
at most one lease holder at every delivery, liveness after healing.
"""

from __future__ import annotations

import random
from typing import Any, Iterable

import attrs
import cbor2
import trio
import trio.testing

from mvcc.engine import Batch, DictEngine
from paxos.checkers import CheckFailure, HistoryChecker
from paxos.driver import NotLeader, PaxosConfig, PaxosDriver, ProposalLost
from paxos.storage import PaxosStorage
import txn.wire  # noqa: F401 - registers the Paxos messages with the wire codec
from txn.net.simnet import SimNetConfig, SimNetwork

SECOND = 1_000_000_000
CONFIG = PaxosConfig(truncate_threshold_entries=40, truncate_keep_entries=10)


class EngineStateMachine:
    """Applied commands kept in the replica's engine under b"s" (unsynced writes; Paxos's sync carries them)."""

    def __init__(self, node_id: str, engine: DictEngine, checker: HistoryChecker) -> None:
        self.node_id, self.engine, self.checker = node_id, engine, checker
        raw = engine.get(b"s")
        self.commands: list[bytes] = cbor2.loads(raw) if raw is not None else []

    def applied_index(self) -> int:
        return len(self.commands)

    def apply(self, index: int, command: bytes) -> None:
        self.checker.on_apply(self.node_id, index, command)
        self.commands.append(command)
        self._save()

    def export_snapshot(self) -> tuple[int, list[bytes]]:
        return len(self.commands), [cbor2.dumps(self.commands[i:i + 8]) for i in range(0, len(self.commands), 8)]

    def install_snapshot(self, index: int, chunks: Iterable[bytes]) -> None:
        commands: list[bytes] = []
        for chunk in chunks:
            commands.extend(cbor2.loads(chunk))
        self.checker.on_install(self.node_id, index, commands)
        self.commands = commands
        self._save()

    def _save(self) -> None:
        batch = Batch()
        batch.put(b"s", cbor2.dumps(self.commands))
        self.engine.apply(batch, sync=False)


@attrs.define(eq=False)
class TrioPaxosSim:
    seed: int
    replicas: int
    net: SimNetwork
    rng: random.Random
    checker: HistoryChecker = attrs.Factory(HistoryChecker)
    engines: dict[str, DictEngine] = attrs.Factory(dict)
    drivers: dict[str, PaxosDriver] = attrs.Factory(dict)
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)
    marks: dict[str, int] = attrs.Factory(dict)
    clocks: dict[str, tuple[int, int]] = attrs.Factory(dict)
    nursery: Any = None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(f"n{i + 1}" for i in range(self.replicas))

    def now_ns(self, node_id: str) -> int:
        offset, drift_ppm = self.clocks[node_id]
        t = round(trio.current_time() * 1e9)
        return t + offset + t * drift_ppm // 1_000_000

    def check_leases(self) -> None:
        holders = [node for node, driver in self.drivers.items() if node in self.scopes and driver.has_lease()]
        self.checker.on_lease_holders(round(trio.current_time() * 1e9), holders)

    async def run_node(self, node_id: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sim = self

        class Handler:
            def handle_message(self, src: str, msg: Any) -> None:
                sim.check_leases()
                driver.deliver(src, msg)

            async def handle_request(self, src: str, msg: Any) -> Any:
                raise NotImplementedError

        transport = self.net.endpoint(node_id, Handler())
        engine = self.engines.setdefault(node_id, DictEngine())
        driver = PaxosDriver(
            node_id=node_id, peers=self.ids, storage=PaxosStorage(engine),
            state_machine=EngineStateMachine(node_id, engine, self.checker), send=transport.send,
            now_ns=lambda: self.now_ns(node_id), seed=self.seed, config=CONFIG, preferred_leader=node_id == "n1")
        self.checker.on_restart(node_id, driver.core.applied_index)
        self.drivers[node_id] = driver
        with trio.CancelScope() as scope:
            self.scopes[node_id] = scope
            await driver.run(task_status=task_status)

    def crash(self, node_id: str) -> None:
        self.scopes.pop(node_id).cancel()
        for name, count in self.drivers[node_id].core.counters.items():
            self.marks[name] = self.marks.get(name, 0) + count
        self.net.crash(node_id)
        self.engines[node_id] = self.engines[node_id].after_crash()

    async def client(self) -> None:
        number = 0
        while True:
            await trio.sleep(0.02)
            number += 1
            leaders = [d for n, d in self.drivers.items() if n in self.scopes and d.status().is_leader]
            target = leaders[0] if leaders and self.rng.random() < 0.9 else self.drivers[self.rng.choice(self.ids)]
            self.nursery.start_soon(self._propose_quietly, target, b"c%d" % number)

    async def _propose_quietly(self, driver: PaxosDriver, command: bytes) -> None:
        try:
            await driver.propose(command, timeout_s=0.5)
        except (NotLeader, ProposalLost, trio.TooSlowError):
            pass

    async def probe(self, number: int, bound_s: float) -> None:
        command = b"probe%d" % number
        with trio.move_on_after(bound_s) as scope:
            while True:
                leaders = [d for n, d in self.drivers.items() if n in self.scopes and d.status().is_leader]
                if leaders:
                    try:
                        await leaders[0].propose(command, timeout_s=0.5)
                        return
                    except (NotLeader, ProposalLost, trio.TooSlowError):
                        pass
                await trio.sleep(0.05)
        if scope.cancelled_caught:
            raise CheckFailure(f"liveness: {command!r} not chosen within {bound_s}s after healing")

    async def main(self) -> None:
        rng = self.rng
        fault_s = rng.uniform(3, 6)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.net.pump)
            for node_id in self.ids:
                await nursery.start(self.run_node, node_id)
            client = trio.CancelScope()

            async def client_task() -> None:
                with client:
                    await self.client()

            nursery.start_soon(client_task)
            elapsed = 0.0
            while elapsed < fault_s:
                step = rng.uniform(0.2, 1.0)
                await trio.sleep(step)
                elapsed += step
                action = rng.random()
                live = [n for n in self.ids if n in self.scopes]
                if action < 0.3 and len(live) > self.replicas // 2 + 0:
                    victim = rng.choice(live)
                    self.crash(victim)
                elif action < 0.5:
                    down = [n for n in self.ids if n not in self.scopes]
                    if down:
                        node_id = rng.choice(down)
                        self.net.restart(node_id)
                        await nursery.start(self.run_node, node_id)
                elif action < 0.7:
                    side = rng.sample(self.ids, rng.randint(1, self.replicas // 2))
                    self.net.partition(side, [n for n in self.ids if n not in side])
                else:
                    self.net.heal()
            self.net.heal()
            for node_id in self.ids:
                if node_id not in self.scopes:
                    self.net.restart(node_id)
                    await nursery.start(self.run_node, node_id)
            client.cancel()
            await trio.sleep(4)
            for number in range(3):
                await self.probe(number, 5.0)
            nursery.cancel_scope.cancel()
        for node_id, driver in self.drivers.items():
            if node_id in self.scopes:
                for name, count in driver.core.counters.items():
                    self.marks[name] = self.marks.get(name, 0) + count


def simulate(seed: int) -> TrioPaxosSim:
    rng = random.Random(f"{seed}/trio-plan")
    replicas = rng.choice((3, 5))
    netconfig = SimNetConfig(latency_ns_min=1_000_000, latency_ns_max=rng.choice((3, 20)) * 1_000_000,
                             drop_rate=rng.choice((0.0, 0.05)), duplicate_rate=rng.choice((0.0, 0.02)),
                             reorder=True, check_wire=True)
    sim = TrioPaxosSim(seed, replicas, SimNetwork(seed, netconfig), rng)
    for i, node_id in enumerate(sim.ids):
        sim.clocks[node_id] = (rng.randint(-SECOND, SECOND), rng.randint(-200, 200))
    trio._core._run._r.seed(f"{seed}/trio")  # noqa: SLF001 - test-only determinism hook
    trio.run(sim.main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sim
