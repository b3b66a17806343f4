"""Directed scenarios of the whole-stack simulation: hand-built plans with scripted faults and clients.

Role: some bugs the random sweep (txn/sim/sweep.py, `SimPlan.from_seed`)
does not catch, because every envelope carries its sender's HLC and the
receiver absorbs it: in its clusters the leader that assigns a causally
later write has nearly always absorbed, through Paxos traffic of a shared
tablet, a timestamp at least as high as the earlier write, which masks a
broken commit-wait or a skewed clock; and the interleaving that exposes
them (a read inside a commit-wait window of a few ms, a node unmeasurable
for 5 s) is rare. A `Scenario` is a plan built by hand (nodes, tablets,
clock offsets, network) plus a script that drives faults and clients step
by step into that interleaving, with every gossip path that could hide it
cut by construction, on the same harness as a seed: `SimCluster` (real nodes, the real client, the simulated network),
then healing, the liveness check, the rejoin check of a node the script
fenced, and the quiesce wait. `sweep.run_scenario` runs one and judges it
with the seeds' checkers (txn/sim/checkers.py).

Both scenarios use one topology: five nodes, tablet "tx" (keys [b"", b"c"))
on n1, n2, n3 led by n1, tablet "ty" (keys [b"c", ...)) on n3, n4, n5 led
by n5; n3 is the only node in both groups. Clients sit 1 ms from every node
and, in simulation, carry no HLC (txn/sim/sim_client.py): a client learns
nothing from another except what the script hands over out of band.

- "read_in_commit_wait" (mutant `TabletLeaderCore.HOLD_READS_UNTIL_COMMIT_WAIT
  = False`): clocks n1, n2 -4.9 ms, n3 0, n4, n5 +4.9 ms (any two within
  max_offset, no clock watch); n3 -> n1 and n3 -> n2 are cut (one way), so
  ty's clock cannot reach tx's leader. Client A writes y on n5; the instant
  n5 applies it (commit-wait still running), client B reads y strongly on
  n5; once B's read completes, client C writes x on n1. The real leader
  holds B's read until y's commit-wait is over, so C's write comes later
  and n1's clock is past ts(y); the mutant lets B see y at once, and n1,
  4.9 ms behind and told nothing, gives x a smaller timestamp (by about
  3 ms): the read-then-write checker fails.
- "fence_without_samples" (mutant `OffsetMonitor.FENCE_WITHOUT_SAMPLES =
  False`): the clock watch runs; once every node measured the others, every
  link between n1 and another node gets 25-26 ms slow each way (a probe's
  round trip then exceeds the 18 ms that makes a sample usable, and every
  HLC reaching n1 is 25 ms old), then n1's clock is set 30 ms back (beyond
  max_offset, yet every stamp reaching n1 stays within max_offset of its
  clock, so nothing is rejected). Clients wait out the detection window
  (the last samples leave the 5 s freshness window): the real n1 fences
  itself (no samples) and tx moves to n2 or n3; the mutant n1 keeps leading
  tx. Then client A writes y on n5 and, once acknowledged, client C writes
  x: the real n1 no longer serves, so another replica stamps it above
  ts(y); the mutant n1 stamps it with its HLC, 25-30 ms behind, below
  ts(y) (by about 17 ms): the external-consistency checker fails.

Invariant: each scenario passes every checker with the real code (liveness
after healing included), hitting its `marks` (the rule was exercised), and
fails with its mutant (`Scenario.mutation_point`) with one of its
`symptoms` (tests/sim/test_sim_mutants.py; `chronodb sim scenario NAME
[--mutant]`). Randomness: only the seed (network streams,
node seeds, trio's scheduler); the scripts draw nothing.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Awaitable, Callable, Iterator

import attrs
import trio

from hlc.offsets import STALE_AFTER_NS, FenceCause
from txn.api.cluster import TabletConfig
from txn.net.simnet import SimNetConfig, SimNetwork
from txn.node.clock_watch import PROBE_INTERVAL_S, PROBE_TIMEOUT_S
from txn.sim.cluster_sim import SimCluster, SimOutcome
from txn.sim.faults import REJOIN_BOUND_S
from txn.sim.plan import MAX_OFFSET_NS, MS, NET_QUANTUM_NS, SimPlan, sim_paxos_config
from txn.sim.sim_client import SimClient
from txn.tablet.commands import WriteBatch

NODES = ("n1", "n2", "n3", "n4", "n5")
TABLETS = (
    TabletConfig("tx", b"", b"c", ("n1", "n2", "n3"), "n1"),
    TabletConfig("ty", b"c", None, ("n3", "n4", "n5"), "n5"),
)
X_KEY, Y_KEY = b"a", b"d"  # in tx and ty
NETWORK = SimNetConfig(latency_ns_min=1 * MS, latency_ns_max=2 * MS, quantum_ns=NET_QUANTUM_NS)
CLIENT_LINK = SimNetConfig(latency_ns_min=1 * MS, latency_ns_max=1 * MS, reorder=False, quantum_ns=NET_QUANTUM_NS)
SETTLE_BOUND_S = 3.0  # the preferred leaders serve (and, with the watch, every node measured the others) by then
HANDOFF_S = 0.0005  # one client tells another out of band: the next operation starts strictly after
DEFAULT_SEED = 1

MutationPoint = tuple[str, str, str, object]  # (module, class, attribute, mutant value)


@attrs.frozen
class Scenario:
    name: str
    summary: str
    build_plan: Callable[[int], SimPlan]
    script: Callable[["ScenarioRun"], Awaitable[None]]
    mutation_point: MutationPoint  # the rule this scenario exists to check
    symptoms: tuple[str, ...]  # what the checkers say when the mutant runs it
    marks: tuple[str, ...]  # coverage marks a run with the real code hits: the rule was exercised

    def plan(self, seed: int = DEFAULT_SEED) -> SimPlan:
        return self.build_plan(seed)

    def mutant(self) -> contextlib.AbstractContextManager[object]:
        """A context manager setting the mutation point's class attribute to its mutant value."""
        return patched(self.mutation_point)


@contextlib.contextmanager
def patched(point: MutationPoint) -> Iterator[None]:
    module_name, class_name, attribute, value = point
    cls = getattr(importlib.import_module(module_name), class_name)
    if attribute not in vars(cls):
        raise AttributeError(f"mutation point {class_name}.{attribute} ({module_name}) is missing")
    original = vars(cls)[attribute]
    setattr(cls, attribute, value)
    try:
        yield
    finally:
        setattr(cls, attribute, original)


class ScenarioRun:
    """What a script works with: the cluster, and the faults it set (undone by `heal`)."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.net: SimNetwork = cluster.net
        self.plan = cluster.plan
        self.slow_links: list[tuple[str, str]] = []
        self.fenced_node: str | None = None  # a node the script saw fenced: it must rejoin after healing

    def fail(self, problem: str) -> None:
        self.cluster.errors.append(f"scenario {self.plan.directed}: {problem}")

    def client(self, name: str, home: str) -> SimClient:
        client = self.cluster.client(name, home)
        for node_id in self.plan.node_ids:
            self.net.set_link(name, node_id, CLIENT_LINK)
            self.net.set_link(node_id, name, CLIENT_LINK)
        return client

    def slow_down(self, node_id: str, link: SimNetConfig) -> None:
        """Every link between node_id and another node (both ways) gets `link`'s latencies."""
        for other in self.plan.node_ids:
            if other != node_id:
                for pair in ((node_id, other), (other, node_id)):
                    self.net.set_link(*pair, link)
                    self.slow_links.append(pair)
        self.cluster.counters["fault.slow_links"] += 1

    def serving_leader(self, tablet_id: str) -> str | None:
        for node_id, node in sorted(self.cluster.nodes.items()):
            replica = node.replicas.get(tablet_id)
            if replica is not None and replica.status().serving:
                return node_id
        return None

    async def await_serving(self, leaders: dict[str, str | None], bound_s: float = SETTLE_BOUND_S) -> bool:
        """Wait until each tablet is served by the node named (None: by any node), and no node is fenced
        but those the script fenced; on timeout the scenario fails."""
        def settled() -> bool:
            if any(node.fenced and n != self.fenced_node for n, node in self.cluster.nodes.items()):
                return False
            serving = {t: self.serving_leader(t) for t in leaders}
            return all(serving[t] is not None and (n is None or serving[t] == n) for t, n in leaders.items())
        with trio.move_on_after(bound_s):
            while not settled():
                await trio.sleep(0.01)
            return True
        serving = {t: self.serving_leader(t) for t in leaders}
        fenced = sorted(n for n, node in self.cluster.nodes.items() if node.fenced)
        self.fail(f"wanted leaders {leaders} within {bound_s}s; serving: {serving}, fenced: {fenced}")
        return False

    def heal(self) -> None:
        self.net.heal()
        for pair in self.slow_links:
            self.net.set_link(*pair, None)
        self.slow_links.clear()
        for node_id in self.plan.node_ids:
            self.cluster.clocks[node_id].offset_ns = self.plan.offsets_ns[node_id]

    async def check_rejoined(self) -> None:
        node_id = self.fenced_node
        if node_id is None:
            return
        with trio.move_on_after(REJOIN_BOUND_S):
            while self.cluster.nodes[node_id].fenced:
                await trio.sleep(0.01)
        if self.cluster.nodes[node_id].fenced:
            self.fail(f"{node_id} still fenced {REJOIN_BOUND_S}s after healing")
        else:
            self.cluster.marks["sim.fenced_and_rejoined"] += 1


async def simulate_scenario(scenario: Scenario, plan: SimPlan) -> SimOutcome:
    """One run of a scenario's script on its plan, then healing and the seeds' end-of-run checks."""
    net = SimNetwork(plan.seed, plan.network)
    cluster = SimCluster(plan, net)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        for node_id in plan.node_ids:
            cluster.start_node(node_id, nursery)
        run = ScenarioRun(cluster)
        await scenario.script(run)
        run.heal()
        await cluster.check_liveness()
        await run.check_rejoined()
        leftovers = await cluster.await_quiescent()
        committed = cluster.committed()
        for node in cluster.nodes.values():
            cluster.collect_marks(node)
        nursery.cancel_scope.cancel()
    return SimOutcome(cluster.history, committed, cluster.applied, cluster.lease_violations, cluster.errors,
                      cluster.marks, cluster.counters, net.trace(), net.trace_digest(), leftovers=leftovers)


def _plan(seed: int, name: str, offsets_ms: dict[str, float], *, watch: bool, skewed: str | None = None,
          skew_ns: int = 0) -> SimPlan:
    return SimPlan(
        seed, "beyond_offset" if watch else "bounded", NODES, TABLETS, frozenset(), NETWORK,
        {n: round(offsets_ms[n] * MS) for n in NODES}, {n: 0 for n in NODES}, sim_paxos_config(), clients=0,
        skewed_node=skewed, skew_ns=skew_ns, directed=name,
    )


# ---- read_in_commit_wait ----------------------------------------------------------

def _read_in_commit_wait_plan(seed: int) -> SimPlan:
    return _plan(seed, "read_in_commit_wait", {"n1": -4.9, "n2": -4.9, "n3": 0, "n4": 4.9, "n5": 4.9}, watch=False)


async def _read_in_commit_wait(run: ScenarioRun) -> None:
    cluster = run.cluster
    if not await run.await_serving({"tx": "n1", "ty": "n5"}):
        return
    # n3 replicates both tablets: its replies would carry ty's clock (n5, ahead) to tx's leader.
    run.net.partition(["n3"], ["n1", "n2"], one_way=True)
    cluster.counters["fault.one_way"] += 1
    await trio.sleep(0.2)  # n1's own clock passes whatever n3 carried before the cut
    writer, reader, later = run.client("A", "n5"), run.client("B", "n5"), run.client("C", "n1")
    y_applied = trio.Event()

    def on_applied(tablet_id: str, node_id: str, command: object) -> None:
        if (tablet_id, node_id) == ("ty", "n5") and isinstance(command, WriteBatch) and \
                any(key == Y_KEY for key, _ in command.writes):
            y_applied.set()

    cluster.apply_listeners.append(on_applied)
    async with writer.open(), reader.open(), later.open():
        for client in (writer, reader, later):
            assert client.client is not None
            await client.client.refresh_map()  # routes known: each operation goes straight to the leader
        async with trio.open_nursery() as clients:
            clients.start_soon(writer.write, Y_KEY, b"y1")
            with trio.move_on_after(1.0):
                await y_applied.wait()
            if not y_applied.is_set():
                run.fail("n5 did not apply the write of y within 1s")
                return
            await reader.read(Y_KEY)  # strong, while y's commit-wait runs on n5
            await trio.sleep(HANDOFF_S)  # B tells C out of band; C has seen none of B's timestamps
            await later.write(X_KEY, b"x1")


# ---- fence_without_samples --------------------------------------------------------

SKEWED = "n1"
SKEW_NS = -30 * MS  # beyond max_offset (10 ms), so beyond the 9 ms fence limit
# Each way: a probe's round trip (>= 50 ms) makes its error bound (half of it) exceed the fence limit,
# so no sample is usable; every stamp reaching n1 is >= 25 ms old, i.e. at most 5 ms ahead of its clock:
# never rejected (within max_offset), and too old to pull n1's HLC up to the others' time.
SLOW_LINK = SimNetConfig(latency_ns_min=25 * MS, latency_ns_max=26 * MS, reorder=False, quantum_ns=NET_QUANTUM_NS)
assert MAX_OFFSET_NS < -SKEW_NS < SLOW_LINK.latency_ns_min + MAX_OFFSET_NS  # the premises above
# After the skew (itself PROBE_TIMEOUT_S after the last usable sample): the samples leave the freshness
# window (on n1's clock, 30 ms late), then a probe round (probes time out after PROBE_TIMEOUT_S at
# worst) judges the node; plus slack.
DETECTION_WINDOW_S = STALE_AFTER_NS / 1e9 + PROBE_TIMEOUT_S + PROBE_INTERVAL_S + 0.3


def _fence_without_samples_plan(seed: int) -> SimPlan:
    return _plan(seed, "fence_without_samples", {n: 0 for n in NODES}, watch=True, skewed=SKEWED, skew_ns=SKEW_NS)


async def _fence_without_samples(run: ScenarioRun) -> None:
    cluster = run.cluster
    if not await run.await_serving({"tx": SKEWED, "ty": "n5"}):
        return
    run.slow_down(SKEWED, SLOW_LINK)
    await trio.sleep(PROBE_TIMEOUT_S)  # every probe sent before the slowdown has come back or timed out
    cluster.clocks[SKEWED].offset_ns = run.plan.offsets_ns[SKEWED] + SKEW_NS
    cluster.counters["fault.skew_beyond_offset"] += 1
    await trio.sleep(DETECTION_WINDOW_S)  # clients wait: the detection window is not covered by the contract
    watch = cluster.nodes[SKEWED].watch
    if watch.fenced:
        run.fenced_node = SKEWED
        if watch.monitor.cause is FenceCause.NO_SAMPLES:
            cluster.marks["sim.fenced_without_samples"] += 1
    if not await run.await_serving({"tx": None, "ty": "n5"}):
        return
    writer, later = run.client("A", "n5"), run.client("C", "n2")
    async with writer.open(), later.open():
        for client in (writer, later):
            assert client.client is not None
            await client.client.refresh_map()
        await writer.write(Y_KEY, b"y1")
        await trio.sleep(HANDOFF_S)  # A tells C out of band
        await later.write(X_KEY, b"x1")


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario for scenario in (
        Scenario(
            "read_in_commit_wait",
            "a strong read during commit-wait on a leader ahead, then a write on a leader behind",
            _read_in_commit_wait_plan, _read_in_commit_wait,
            ("txn.tablet.leader", "TabletLeaderCore", "HOLD_READS_UNTIL_COMMIT_WAIT", False),
            ("started after a read of",),
            ("tablet.read_waited_for_commit",),
        ),
        Scenario(
            "fence_without_samples",
            "a leader's clock 30 ms behind while every probe of it is too slow to measure",
            _fence_without_samples_plan, _fence_without_samples,
            ("hlc.offsets", "OffsetMonitor", "FENCE_WITHOUT_SAMPLES", False),
            ("was acknowledged",),
            ("sim.fenced_without_samples", "sim.fenced_and_rejoined"),
        ),
    )
}
