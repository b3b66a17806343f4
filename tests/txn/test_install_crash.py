"""A tablet replica crashed at every write of a snapshot install recovers (issue bug 3).

A three-replica group of pure Paxos cores, `TabletState`s and `PaxosStorage`s
on `DictEngine`s, carried out by the driver's own `carry_out` (so the order
under test is the driver's). n3 is cut off while the log is truncated past
it; once healed it must install a snapshot. The test crashes n3 after its
k-th engine write for every k (keeping every prefix of the unsynced tail),
restarts it and requires:
(a) the restarted state is either `usable` and exactly a log prefix, or not
    usable at all (applied index 0, safe time MIN);
(b) a state that is not usable makes the core need a snapshot (and so
    apply nothing and never campaign);
(c) a half-installed state refuses to export;
(d) after the restart it converges to the leader's data and keeps up.
The log carries coordinator decisions and prepared transactions as well as
plain writes, so the snapshot carries transaction records (in chunks of
their own since 12-05) and every comparison includes them.
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from hlc import Timestamp
from mvcc.engine import Batch, DictEngine
from paxos.driver import carry_out
from paxos.messages import Entry
from paxos.replica import Replica, Role
from paxos.storage import PaxosStorage
from paxos.types import PaxosConfig
from txn.tablet.commands import NO_EPOCH, Decide, Prepare, WriteBatch, encode_command
from txn.tablet.state import TabletState

IDS = ("n1", "n2", "n3")
MS = 1_000_000
CONFIG = PaxosConfig(truncate_threshold_entries=8, truncate_keep_entries=2)


class CrashNow(Exception):
    """The simulated power cut."""


class CrashingEngine:
    """A `DictEngine` whose write number `crash_after + 1` (counted from arming) never happens."""

    def __init__(self, inner: DictEngine) -> None:
        self.inner = inner
        self.crash_after: int | None = None
        self.writes = 0

    def apply(self, batch: Batch, *, sync: bool) -> None:
        if self.crash_after is not None and self.writes >= self.crash_after:
            raise CrashNow()
        self.writes += 1
        self.inner.apply(batch, sync=sync)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class Node:
    def __init__(self, node_id: str, engine: DictEngine) -> None:
        self.node_id = node_id
        self.engine = CrashingEngine(engine)
        self.applied: list[Entry] = []
        self.boot(0)

    def boot(self, now: int) -> None:
        self.state = TabletState(self.engine, snapshot_chunk_bytes=40)  # several chunks: several import writes
        self.storage = PaxosStorage(self.engine)
        self.core = Replica(
            node_id=self.node_id, peers=IDS, config=CONFIG, rng=random.Random(self.node_id),
            persisted=self.storage.load(), applied_index=self.state.applied_index(), now_ns=now,
            install_pending=self.state.install_pending)

    def mvcc(self) -> dict[bytes, bytes]:
        """The MVCC data and the transaction records."""
        return replicated(self.engine.inner)


def replicated(engine: DictEngine) -> dict[bytes, bytes]:
    """What every replica of a log prefix holds alike: MVCC data and transaction records."""
    return {key: value for key, value in engine.contents().items() if key.startswith((b"m", b"t/d/", b"t/p/"))}


class Group:
    def __init__(self) -> None:
        self.now = 0
        self.nodes = {node_id: Node(node_id, DictEngine()) for node_id in IDS}
        self.queue: deque[tuple[str, str, object]] = deque()
        self.cut: set[str] = set()
        self.down: set[str] = set()
        self.next_wall = 1000

    def send_from(self, src: str):  # noqa: ANN201
        def send(dst: str, msg: object) -> None:
            if src not in self.cut and dst not in self.cut:
                self.queue.append((src, dst, msg))
        return send

    def process(self, node: Node) -> None:
        if node.node_id in self.down:
            return
        try:
            while node.core.has_ready():
                ready = node.core.ready(self.now)
                carry_out(node.core, ready, self.now, storage=node.storage, state_machine=node.state,
                          send=self.send_from(node.node_id), on_applied=node.applied.append)
        except CrashNow:
            self.down.add(node.node_id)

    def run(self, duration_ns: int) -> None:
        end = self.now + duration_ns
        while self.now < end:
            while self.queue:
                src, dst, msg = self.queue.popleft()
                node = self.nodes[dst]
                if dst not in self.down:
                    node.core.step(src, msg, self.now)
                    self.process(node)
            self.now += 5 * MS
            for node in self.nodes.values():
                if node.node_id not in self.down:
                    node.core.tick(self.now)
                    self.process(node)

    def write(self, count: int) -> None:
        leader = self.nodes["n1"]
        for i in range(count):
            self.next_wall += 10
            key = b"k%d" % (self.next_wall % 7)
            at = Timestamp(self.next_wall, 0)
            command: object = WriteBatch(at, [(key, b"v%d" % self.next_wall), (b"x%d" % i, None)])
            if i % 3 == 1:  # a decision this tablet coordinates, with a write of its own
                command = Decide(at, NO_EPOCH, f"d{self.next_wall}", i % 2 == 0, ["t2"], [(b"c%d" % i, b"cv")])
            elif i % 3 == 2:  # a transaction left prepared here (its intents and its record)
                command = Prepare(at, NO_EPOCH, f"p{self.next_wall}", at, "t2", [(b"p%d" % self.next_wall, b"pv")], [], [])
            assert leader.core.propose(encode_command(command), self.now) is not None
            self.process(leader)
            self.run(20 * MS)


def reference_mvcc(entries: list[Entry], through: int) -> dict[bytes, bytes]:
    """The MVCC data and transaction records of a replica that applied slots 1..through of the chosen log."""
    state = TabletState(DictEngine())
    for entry in entries[:through]:
        state.apply(entry.index, entry.command)
    return replicated(state.engine)


def setup_group() -> Group:
    """n1 leads; n3 misses enough writes that it can only catch up by snapshot."""
    group = Group()
    group.nodes["n1"].core.campaign(0)
    group.process(group.nodes["n1"])
    group.run(500 * MS)
    assert group.nodes["n1"].core.has_lease(group.now)
    group.write(4)
    group.cut.add("n3")
    group.write(20)
    assert group.nodes["n1"].core.first_index > group.nodes["n3"].core.last_index + 1, "n3 needs a snapshot"
    group.cut.clear()
    return group


def converge(group: Group) -> None:
    group.run(1500 * MS)
    group.write(3)
    group.run(500 * MS)
    n1, n3 = group.nodes["n1"], group.nodes["n3"]
    assert n3.state.usable and n3.core.applied_index == n1.core.applied_index == n3.state.applied_index()
    assert n3.mvcc() == n1.mvcc() and n3.state.safe_ts == n1.state.safe_ts
    assert n3.state.export_snapshot()[0] == n1.state.export_snapshot()[0]


def test_without_a_crash_the_snapshot_install_converges() -> None:
    group = setup_group()
    group.nodes["n3"].engine.writes = 0
    converge(group)
    assert group.nodes["n3"].core.counters.get("paxos.snapshot_installed")


def install_writes() -> int:
    """How many engine writes n3 makes until its install is done, plus the Paxos write after it."""
    group = setup_group()
    n3 = group.nodes["n3"]
    n3.engine.writes = 0
    done: list[int] = []
    n3.state.on_applied = lambda index, command, skipped: done.append(n3.engine.writes) if command is None else None
    group.run(1500 * MS)
    assert len(done) == 1, "n3 installs one snapshot (a stale one being streamed is replaced)"
    return done[0] + 2


def crash_points() -> list[tuple[int, int]]:
    """(k, unsynced batches kept) for every write k of the install; none, half or all of the volatile tail."""
    points = []
    for k in range(install_writes() + 1):
        group = setup_group()
        n3 = group.nodes["n3"]
        n3.engine.writes, n3.engine.crash_after = 0, k
        group.run(1500 * MS)
        if "n3" in group.down:
            unsynced = n3.engine.inner.unsynced_batches
            points.extend((k, keep) for keep in sorted({0, unsynced // 2, unsynced}))
    return points


CRASH_POINTS = crash_points()


def test_the_install_has_many_crash_points() -> None:
    # marker, clear, import marker, several chunks, final batch, Paxos writes
    assert len({k for k, _ in CRASH_POINTS}) >= 8, CRASH_POINTS


@pytest.mark.parametrize(("k", "keep"), CRASH_POINTS)
def test_a_crash_at_any_write_of_an_install_recovers(k: int, keep: int) -> None:
    group = setup_group()
    n1, n3 = group.nodes["n1"], group.nodes["n3"]
    n3.engine.writes, n3.engine.crash_after = 0, k
    group.run(1500 * MS)
    assert "n3" in group.down
    n3.engine = CrashingEngine(n3.engine.inner.after_crash(keep_unsynced_batches=keep))
    n3.boot(group.now)
    state, core = n3.state, n3.core
    snapshot_index = n3.storage.load().snapshot_index
    if state.usable:  # (a) a usable state is exactly a prefix of the chosen log
        assert n3.mvcc() == reference_mvcc(n1.applied, state.applied_index())
        assert core.need_snapshot == (state.applied_index() < snapshot_index)
    else:  # (a) nothing to serve, (b) the core asks for a snapshot, (c) no export
        assert state.applied_index() == 0 and state.safe_ts == Timestamp.MIN
        assert core.need_snapshot and core.applied_index == 0
        with pytest.raises(AssertionError, match="half-installed"):
            state.export_snapshot()
        core.campaign(group.now)
        assert core.role is Role.FOLLOWER and not core.ready(group.now).messages, "a replica needing a snapshot never campaigns"
    resumed = core.need_snapshot
    group.down.discard("n3")
    converge(group)  # (d)
    if resumed:
        assert n3.core.counters.get("paxos.snapshot_install_resumed") == 1
    if not state.usable:
        assert n3.state.installs_recovered == 1
