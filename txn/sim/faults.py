"""The fault phase of one simulated seed: inject the plan's faults, then heal everything.

Role: `FaultDriver(cluster, nursery).run()` injects, one after another for
FAULT_PHASE_S, faults of the kinds the plan enabled (txn/sim/plan.py):
crashes (losing unsynced writes) and restarts, symmetric and one-way
partitions of a minority, isolation of a tablet's lease holder, pauses (the
network holds everything to and from the node, then delivers it late), and
the deposed-tail sequence (a lease holder cut off from its peers but not
its clients; its successor crashed right after its barrier; heal). With
"install" enabled a watcher crashes a node while a snapshot is being sent to
it. In the "beyond_offset" scenario one node's clock is pushed past
max_offset while clients are held at a gate (the detection window of
ARCHITECTURE.md is not covered by the contract) and no other fault is in
force (a partitioned node measures nobody: fencing it then is the
no-samples rule's job, being built elsewhere); it must fence itself within
FENCE_BOUND_S, and after healing (clock set right) rejoin within
REJOIN_BOUND_S. Then every fault is undone: partitions healed, pauses
released, crashed nodes restarted, clocks restored.

Invariant: at most a minority of nodes is down or partitioned away at once,
so the contract includes liveness after healing.
Randomness: `random.Random(f"{seed}/faults")` only.
"""

from __future__ import annotations

import random

import trio

from txn.sim.plan import FAULT_PHASE_S, KEYS, SimPlan

EVENT_KINDS = ("crash", "partition", "one_way", "isolate_leader", "pause", "deposed_tail")
FENCE_BOUND_S = 2.0
REJOIN_BOUND_S = 3.0


class FaultDriver:
    def __init__(self, cluster, nursery: trio.Nursery) -> None:  # cluster: txn.sim.cluster_sim.SimCluster
        self.cluster = cluster
        self.plan: SimPlan = cluster.plan
        self.net = cluster.net
        self.nursery = nursery
        self.rng = random.Random(f"{self.plan.seed}/faults")
        self.duration_s = FAULT_PHASE_S
        self.kinds = [kind for kind in EVENT_KINDS if kind in self.plan.faults]
        self.minority = (len(self.plan.node_ids) - 1) // 2
        self.fenced_seen = False
        self.active = False  # a fault of the loop is in force

    def victims(self) -> list[str]:
        return [n for n in self.plan.node_ids if n != self.plan.skewed_node and n not in self.cluster.down]

    async def run(self) -> None:
        end = trio.current_time() + self.duration_s
        async with trio.open_nursery() as nursery:
            if "install" in self.plan.faults:
                nursery.start_soon(self.crash_during_install, end)
            if self.plan.skewed_node is not None:
                nursery.start_soon(self.skew_beyond_offset)
            await trio.sleep(0.3)
            while self.kinds and trio.current_time() < end - 0.2:
                while not self.cluster.gate_open:  # a clock is off: let the watch see it undisturbed
                    await trio.sleep(0.01)
                self.active = True
                await self.one_fault(self.rng.choice(self.kinds), end)
                self.active = False
                await trio.sleep(self.rng.uniform(0.02, 0.3))
            await trio.sleep_until(end)
        self.heal_all()

    async def one_fault(self, kind: str, end: float) -> None:
        cluster, net, rng = self.cluster, self.net, self.rng
        victims = self.victims()
        if not victims:
            return
        hold_s = min(rng.uniform(0.1, 0.6), max(0.0, end - trio.current_time()))
        if self.plan.workload == "bank" and cluster.down and kind != "crash":
            return  # a 2PC crash (txn/sim/txn_faults.py) holds a node down: keep a majority up and connected
        if kind == "crash" and len(cluster.down) < self.minority:
            victim = rng.choice(victims)
            cluster.crash(victim)
            await trio.sleep(hold_s)
            if victim in cluster.down:
                cluster.restart(victim, self.nursery)
        elif kind in ("partition", "one_way", "isolate_leader"):
            if kind == "isolate_leader":
                tablet = rng.choice(self.plan.tablets)
                holder = cluster.lease_holder(tablet.id)
                side = [holder] if holder is not None and holder in victims else [rng.choice(victims)]
            else:
                side = rng.sample(victims, min(len(victims), rng.randint(1, self.minority)))
            others = [n for n in self.plan.node_ids if n not in side]
            net.partition(side, others, one_way=(kind == "one_way"))
            cluster.counters[f"fault.{kind}"] += 1
            await trio.sleep(hold_s)
            net.heal()
        elif kind == "deposed_tail" and self.minority and not cluster.down:
            await self.deposed_tail(victims)
        elif kind == "pause":
            victim = rng.choice(victims)
            net.pause(victim)
            cluster.counters["fault.pause"] += 1
            await trio.sleep(hold_s)
            net.resume(victim)

    async def deposed_tail(self, victims: list[str]) -> None:
        """The review's scenario for the epoch rule (txn/tablet/state.py): a lease holder cut off from
        its peers, not from clients, appends writes to its own log only; the others elect a leader,
        which is crashed as soon as its barrier makes it serve; healing lets the old holder's tail be
        re-proposed after that barrier, where every replica must skip it."""
        cluster, net, rng = self.cluster, self.net, self.rng
        tablet = rng.choice(self.plan.tablets)
        holder = cluster.lease_holder(tablet.id)
        if holder is None or holder not in victims:
            return
        others = [n for n in self.plan.node_ids if n != holder]
        net.partition([holder], others)  # clients are not in either list: they still reach the holder
        cluster.counters["fault.deposed_tail"] += 1
        # A burst of writes reaches the cut-off holder while it still believes its lease: they
        # become its log tail (their outcome is unknown to the client; all are in the history).
        self.nursery.start_soon(self._burst, holder, [k for k in KEYS if tablet.contains(k)])
        successor = None
        with trio.move_on_after(1.5):
            while successor is None:
                await trio.sleep(0.002)
                successor = next((n for n in others if n not in cluster.down and tablet.id in cluster.nodes[n].replicas
                                  and cluster.nodes[n].replicas[tablet.id].leader.is_serving), None)
        if successor is not None and successor != self.plan.skewed_node:
            cluster.crash(successor)
        await trio.sleep(rng.uniform(0.0, 0.05))
        net.heal()
        await trio.sleep(rng.uniform(0.2, 0.5))
        if successor is not None and successor in cluster.down:
            cluster.restart(successor, self.nursery)

    async def _burst(self, holder: str, keys: list[bytes]) -> None:
        number = self.cluster.counters["fault.deposed_tail"]
        client = self.cluster.client(f"burst{number}", holder)
        async with client.open():
            async with trio.open_nursery() as nursery:
                for i in range(6):  # unique values: the checkers tell every write apart
                    nursery.start_soon(client.write, self.rng.choice(keys), b"tail-%d-%d" % (number, i))

    async def crash_during_install(self, end: float) -> None:
        """Crash a node while a snapshot is being sent to it (then restart it)."""
        cluster = self.cluster
        while trio.current_time() < end - 0.3:
            cluster.snapshot_receiving = trio.Event()
            with trio.move_on_at(end - 0.3):
                await cluster.snapshot_receiving.wait()
            receiving = [n for n in cluster.receiving_snapshot() if n != self.plan.skewed_node]
            if receiving and not cluster.down and self.minority and self.rng.random() < 0.5:
                victim = receiving[0]
                cluster.crash(victim)
                cluster.marks["sim.crash_during_install"] += 1
                await trio.sleep(self.rng.uniform(0.05, 0.3))
                if victim in cluster.down:
                    cluster.restart(victim, self.nursery)

    async def skew_beyond_offset(self) -> None:
        cluster, node_id = self.cluster, self.plan.skewed_node
        assert node_id is not None
        await trio.sleep(self.rng.uniform(0.4, 0.8))
        while self.active:
            await trio.sleep(0.01)
        cluster.gate_open = False
        with trio.move_on_after(2.0):
            while cluster.busy:
                await trio.sleep(0.005)
        cluster.clocks[node_id].offset_ns = self.plan.offsets_ns[node_id] + self.plan.skew_ns
        cluster.counters["fault.skew_beyond_offset"] += 1
        with trio.move_on_after(FENCE_BOUND_S):
            while not cluster.nodes[node_id].watch.fenced:
                await trio.sleep(0.005)
        if cluster.nodes[node_id].watch.fenced:
            self.fenced_seen = True
        else:
            cluster.errors.append(f"{node_id}'s clock is {self.plan.skew_ns / 1e6:+.0f} ms off, "
                                  f"but it did not fence itself within {FENCE_BOUND_S}s")
        cluster.gate_open = True

    def heal_all(self) -> None:
        cluster = self.cluster
        self.net.heal()
        for node_id in self.plan.node_ids:
            if self.net.is_paused(node_id):
                self.net.resume(node_id)
            if node_id in cluster.down:
                cluster.restart(node_id, self.nursery)
            cluster.clocks[node_id].offset_ns = self.plan.offsets_ns[node_id]
        cluster.gate_open = True

    async def check_rejoined(self) -> None:
        """beyond_offset: the fenced node serves again once its clock is right."""
        node_id = self.plan.skewed_node
        if node_id is None or not self.fenced_seen:
            return
        with trio.move_on_after(REJOIN_BOUND_S):
            while self.cluster.nodes[node_id].watch.fenced:
                await trio.sleep(0.01)
        if self.cluster.nodes[node_id].watch.fenced:
            self.cluster.errors.append(f"{node_id} still fenced {REJOIN_BOUND_S}s after its clock was set right")
        else:
            self.cluster.marks["sim.fenced_and_rejoined"] += 1
