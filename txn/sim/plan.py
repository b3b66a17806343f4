"""What one seed of the whole-stack simulation does: `SimPlan.from_seed(seed)`.

Role: draws, from `random.Random(f"{seed}/plan")` alone, the cluster (3 or 5
nodes, 2-3 tablets with different preferred leaders), the network fault
model, the clocks, Paxos timing and the fault kinds this seed may inject.
Swarm testing (Groce et al., ISSTA 2012): each seed enables a random subset
of FAULT_KINDS, so some seeds hammer one kind of fault and none hides
another's bugs behind its noise.

Two scenarios:
- "bounded": clock offsets (often at the edges) and drifts keep every pair
  of clocks within max_offset for the whole run; the contract must hold
  throughout.
- "beyond_offset": the clock watch runs (`monitor_clocks=True`); one node's
  clock is pushed beyond max_offset mid-run and must fence itself, then is
  set right at heal time and must rejoin.
Directed scenarios (txn/sim/scenarios.py) build their plans by hand, with
`directed` naming the scenario; `from_seed` never draws one.

HAZARD: "bounded" keeps |offset| + |drift| * duration <= max_offset / 2 per
node (4.5 ms + 100 ppm * 5 s); longer runs need smaller drifts.
"""

from __future__ import annotations

import random

import attrs

from paxos.types import PaxosConfig
from txn.api.cluster import TabletConfig
from txn.net.simnet import SimNetConfig

MS = 1_000_000
MAX_OFFSET_NS = 10 * MS
KEYS = (b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h")
SPLITS = (b"c", b"f")  # tablet boundaries; 2 tablets use the first only

FAULT_KINDS = (
    "crash",           # crash (losing unsynced writes) and restart
    "partition",       # symmetric partition of a random minority
    "one_way",         # one-way partition
    "isolate_leader",  # symmetric partition of a tablet's current lease holder
    "pause",           # a node stops processing: its messages are held, then delivered late
    "drop",            # message loss between nodes
    "duplicate",       # message duplication between nodes
    "delay",           # long, reordering latencies between nodes
    "clock_offset",    # per-node offsets within max_offset / 2
    "clock_drift",     # per-node drifts (within the bounded budget)
    "install",         # tiny log truncation threshold: snapshot installs, crashes during them
    "deposed_tail",    # a lease holder cut off from its peers (clients still reach it) appends a tail;
                       # the next leader is crashed right after its barrier; then heal: the tail comes back
)

# Durations in seconds of virtual (trio) time; short so a seed costs well under a second.
FAULT_PHASE_S = 1.5
HEAL_PHASE_S = 0.5
LIVENESS_BOUND_S = 3.0
BANK_SHARE = 0.4  # seeds running the bank workload (with crashes at every step of 2PC) instead of "kv"
NET_QUANTUM_NS = MS // 2  # deliveries land on 0.5 ms instants: fewer scheduler rounds per virtual second


@attrs.frozen
class SimPlan:
    seed: int
    scenario: str  # "bounded" or "beyond_offset"
    node_ids: tuple[str, ...]
    tablets: tuple[TabletConfig, ...]
    faults: frozenset[str]
    network: SimNetConfig
    offsets_ns: dict[str, int]
    drifts_ppm: dict[str, int]
    paxos: PaxosConfig
    clients: int
    skewed_node: str | None = None  # beyond_offset: whose clock runs off
    skew_ns: int = 0
    workload: str = "kv"  # "kv": single-key writes and reads; "bank": cross-tablet transfers (txn/sim/bank_workload.py)
    directed: str = ""  # the directed scenario (txn/sim/scenarios.py) this plan was built for; "" for a random seed

    @property
    def monitor_clocks(self) -> bool:
        return self.scenario == "beyond_offset"

    def describe(self) -> str:
        tablets = " ".join(f"{t.id}[{t.start!r}..{t.end!r}]@{','.join(t.replicas)}>{t.preferred_leader}" for t in self.tablets)
        skew = f" skew {self.skewed_node} {self.skew_ns / MS:+.0f}ms" if self.skewed_node else ""
        directed = f" directed={self.directed}" if self.directed else ""
        return (f"plan seed={self.seed} {self.scenario} {self.workload} nodes={len(self.node_ids)} {tablets} "
                f"faults={','.join(sorted(self.faults)) or '-'}{skew}{directed}")

    @classmethod
    def from_seed(cls, seed: int) -> "SimPlan":
        rng = random.Random(f"{seed}/plan")
        scenario = "beyond_offset" if rng.random() < 0.15 else "bounded"
        node_ids = tuple(f"n{i + 1}" for i in range(rng.choice((3, 3, 5))))
        faults = frozenset(kind for kind in FAULT_KINDS if rng.random() < 0.5)
        if scenario == "beyond_offset":
            # Probes with an error bound beyond the fence limit say nothing (hlc/offsets.py):
            # on a slow network no node could tell its clock ran off.
            faults -= {"delay"}
        tablets = _draw_tablets(rng, node_ids)
        network = SimNetConfig(
            latency_ns_min=1 * MS,
            latency_ns_max=(rng.choice((10, 25)) if "delay" in faults else rng.choice((2, 4))) * MS,
            drop_rate=rng.choice((0.01, 0.05)) if "drop" in faults else 0.0,
            duplicate_rate=rng.choice((0.02, 0.05)) if "duplicate" in faults else 0.0,
            quantum_ns=NET_QUANTUM_NS,
        )
        # Offsets near the edges of +-max_offset/2 (any two clocks up to ~max_offset apart: what
        # commit-wait must cover), less the drift budget: 100 ppm * 5 s = 0.5 ms.
        # With the clock watch on (beyond_offset), pairs near max_offset apart are fenced by design
        # (hlc/offsets.py fences at 0.9 max_offset, error bounds included): keep the others well inside.
        watch_margin = 4 if scenario == "beyond_offset" else 1
        offsets = {n: _draw_offset(rng) // watch_margin if "clock_offset" in faults else 0 for n in node_ids}
        drifts = {n: rng.randint(-100, 100) if "clock_drift" in faults else 0 for n in node_ids}
        paxos = sim_paxos_config(install="install" in faults)
        skewed, skew = None, 0
        if scenario == "beyond_offset":
            skewed = rng.choice(node_ids)
            skew = rng.choice((-1, 1)) * rng.randint(3 * MAX_OFFSET_NS, 6 * MAX_OFFSET_NS)
        # Its own stream: adding the bank workload left every other draw of a seed as it was.
        workload = "bank" if random.Random(f"{seed}/workload").random() < BANK_SHARE else "kv"
        return cls(seed, scenario, node_ids, tablets, faults, network, offsets, drifts, paxos,
                   clients=rng.choice((2, 3)), skewed_node=skewed, skew_ns=skew, workload=workload)


def sim_paxos_config(*, install: bool = False) -> PaxosConfig:
    """Paxos timing scaled down for simulation; `install`: a tiny log, so snapshots are installed."""
    return PaxosConfig(
        heartbeat_ns=30 * MS, idle_heartbeat_ns=90 * MS, election_timeout_min_ns=150 * MS,
        election_timeout_max_ns=300 * MS, lease_ns=300 * MS, drift_allowance_ns=6 * MS,
        truncate_threshold_entries=12 if install else 10_000, truncate_keep_entries=2 if install else 1_000,
        snapshot_chunk_bytes=64 if install else 256 * 1024,
        log_resident_bytes=512,  # a few commands: catch-up and Prepares read entries back from storage
    )


def _draw_offset(rng: random.Random) -> int:
    edge = MAX_OFFSET_NS // 2 - MS // 2
    return rng.choice((-edge, edge)) if rng.random() < 0.5 else rng.randint(-edge, edge)


def _draw_tablets(rng: random.Random, node_ids: tuple[str, ...]) -> tuple[TabletConfig, ...]:
    count = rng.choice((2, 3))
    bounds = [b""] + list(SPLITS[: count - 1]) + [None]
    leaders = rng.sample(node_ids, count)  # different preferred leaders
    tablets = []
    for i in range(count):
        if len(node_ids) == 3 or rng.random() < 0.3:
            replicas = node_ids
        else:
            others = [n for n in node_ids if n != leaders[i]]
            replicas = tuple(sorted([leaders[i], *rng.sample(others, 2)]))
        tablets.append(TabletConfig(f"t{i + 1}", bounds[i], bounds[i + 1], replicas, leaders[i]))
    return tuple(tablets)


def tablet_of(tablets: tuple[TabletConfig, ...], key: bytes) -> TabletConfig:
    for tablet in tablets:
        if tablet.contains(key):
            return tablet
    raise AssertionError(f"no tablet holds {key!r}")
