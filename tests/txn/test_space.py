"""The tablet's space loop (txn/tablet/space.py): GC behind the retention, then compaction of
what GC and Paxos log truncation freed, on a real LevelDB directory; and its pace."""

from __future__ import annotations

import pathlib
import random
import threading

import pytest
import trio
import trio.testing

from hlc import Timestamp
from mvcc.engine import DictEngine
from mvcc.engine_leveldb import LevelDbEngine
from paxos.messages import Ballot, Entry
from paxos.storage import LOG_END, LOG_PREFIX, PaxosStorage
from paxos.types import Persist
from txn.tablet.compaction import CompactionPolicy
from txn.tablet.space import GC_DUTY, SpaceLoop
from txn.tablet.state import TabletState
from txn.node.wiring import NodeEnvironment

S = 1_000_000_000
KEYS, VERSIONS, RETENTION_S = 300, 30, 5


def trio_ns() -> int:
    return round(trio.current_time() * 1e9)


def fill(state: TabletState, rng: random.Random) -> None:
    for second in range(1, VERSIONS + 1):
        state.store.write([(b"k%04d" % k, rng.randbytes(200)) for k in range(KEYS)], Timestamp(second * S), sync=False)
    state.safe_ts = Timestamp((VERSIONS + 1) * S)


async def test_a_turn_collects_and_returns_the_space_of_versions_and_log(tmp_path: pathlib.Path) -> None:
    rng = random.Random(5)
    with LevelDbEngine(tmp_path / "tablet") as engine:
        state, log = TabletState(engine), PaxosStorage(engine)
        fill(state, rng)
        ballot = Ballot(1, "n1")
        for first in range(1, 3001, 100):
            log.write(Persist(promised=ballot, entries=tuple(Entry(i, ballot, rng.randbytes(300)) for i in range(first, first + 100))))
        engine.compact()  # everything in table files, where the policy's size estimates see it
        log.write(Persist(truncate_through=2900))  # what the Paxos core does past its threshold
        before = engine.size_on_disk()
        versions = state.store.space.versions, state.store.space.versions_end
        space = SpaceLoop(state=state, log=log, snapshot_index=lambda: 2900, gc_retention_ns=RETENTION_S * S,
                          monotonic_ns=trio_ns, policy=CompactionPolicy(slice_versions=2_000))
        await space.reclaim()
        counters = space.counters
        # Horizon 26 s: each key keeps its versions at 26..30 s.
        assert state.store.gc_horizon() == Timestamp((VERSIONS + 1 - RETENTION_S) * S)
        assert counters.gc_passes == 1 and counters.gc_dropped == KEYS * (VERSIONS - RETENTION_S)
        # Several MVCC slices; each flushed the truncation's tombstones with GC's, and LevelDB dropped the
        # truncated entries they met, so the log's range came back without a compaction of its own.
        assert counters.compactions >= 3, counters
        assert counters.compaction_max_ns > 0
        assert engine.size_on_disk() < before * 0.4, (before, engine.size_on_disk())
        assert engine.approximate_size(*versions) < KEYS * VERSIONS * 200 * 0.3
        assert engine.approximate_size(LOG_PREFIX, LOG_END) < 3000 * 300 * 0.1
        assert [v.ts.wall // S for v in state.store.versions(b"k0000")] == [30, 29, 28, 27, 26]
        assert len(log.load().entries) == 100
        await space.reclaim()  # nothing new: no pass, no compaction
        assert counters.gc_passes == 1 and counters.compactions >= 3 and counters.gc_passes_skipped == 0


def flush(engine: LevelDbEngine) -> None:
    """The memtable into a table file, where LevelDB's size estimates see it: LevelDB flushes it
    before any range compaction, and nothing is stored above these keys."""
    engine.compact(b"\xff", b"\xff\xff")


async def test_the_log_is_compacted_once_its_truncated_range_is_a_real_share_of_the_store(tmp_path: pathlib.Path) -> None:
    """Truncated entries holding under `log_min_share` of the engine's bytes are left to LevelDB: a
    log compaction would rewrite the tables around them too, a cost that grows with the store. Once
    they hold more, the next turn compacts the log's range. (No GC here: retention one hour.)"""
    rng = random.Random(8)
    with LevelDbEngine(tmp_path / "tablet") as engine:
        state, log = TabletState(engine), PaxosStorage(engine)
        fill(state, rng)  # 1.8 MB of versions
        ballot = Ballot(1, "n1")
        snapshot = 1000

        def append(first: int, last: int) -> None:
            for start in range(first, last + 1, 100):
                log.write(Persist(promised=ballot, entries=tuple(Entry(i, ballot, rng.randbytes(300)) for i in range(start, start + 100))))

        append(1, 1100)
        log.write(Persist(truncate_through=1000))
        flush(engine)
        space = SpaceLoop(state=state, log=log, snapshot_index=lambda: snapshot, gc_retention_ns=3600 * S, monotonic_ns=trio_ns)
        dead, total = log.truncated_bytes(1000)
        assert 0 < dead < 0.2 * total, (dead, total)  # 0.3 MB of 2.1 MB
        await space.reclaim()
        assert space.counters.compactions == 0 and space.counters.log_compacted_through == 0
        append(1101, 6000)
        log.write(Persist(truncate_through=5900))
        snapshot = 5900
        flush(engine)
        dead, total = log.truncated_bytes(5900)
        assert dead > 0.4 * total, (dead, total)  # 1.8 MB of 3.6 MB
        await space.reclaim()
        assert space.counters.compactions == 1 and space.counters.log_compacted_through == 5900
        assert engine.approximate_size(LOG_PREFIX, LOG_END) < 6000 * 300 * 0.05
        assert len(log.load().entries) == 100 and state.store.gc_horizon() == Timestamp(0)


async def test_a_pass_with_nothing_to_drop_reads_nothing_and_moves_the_horizon() -> None:
    """Safe time moves on with no write: the next pass skips (the versions above the old horizon are
    all newer than the new one); a write between the horizons makes the one after it read again."""
    state = TabletState(DictEngine())
    fill(state, random.Random(6))
    space = SpaceLoop(state=state, log=PaxosStorage(state.engine), snapshot_index=lambda: 0,
                      gc_retention_ns=RETENTION_S * S, monotonic_ns=trio_ns)
    await space.reclaim()
    dropped = space.counters.gc_dropped
    assert space.counters.gc_passes == 1 and dropped == KEYS * (VERSIONS - RETENTION_S)
    state.safe_ts = Timestamp((VERSIONS + 1) * S + S // 2)  # horizon 26.5 s: the versions above 26 s are at 27..30 s
    await space.reclaim()
    assert state.store.gc_horizon() == Timestamp(26 * S + S // 2)
    assert space.counters.gc_passes == 2 and space.counters.gc_passes_skipped == 1
    assert space.counters.gc_dropped == dropped
    assert [v.ts.wall // S for v in state.store.versions(b"k0000")] == [30, 29, 28, 27, 26]
    state.store.write([(b"k0000", b"late")], Timestamp(26 * S + 7 * S // 10), sync=False)  # 26.7 s: hides 26 s at 26.9 s
    state.safe_ts = Timestamp((VERSIONS + 1) * S + 9 * S // 10)
    await space.reclaim()
    assert space.counters.gc_passes == 3 and space.counters.gc_passes_skipped == 1
    assert [v.ts.wall for v in state.store.versions(b"k0000")][-1] == 26 * S + 7 * S // 10
    assert space.counters.gc_dropped == dropped + 1


class SlowScans(DictEngine):
    """A DictEngine whose every scan (one per GC chunk) takes 1 s of a fake clock."""

    def __init__(self) -> None:
        super().__init__()
        self.fake_ns = 0

    def now_ns(self) -> int:
        return trio_ns() + self.fake_ns

    def iterate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.fake_ns += S
        return super().iterate(*args, **kwargs)


def slow_space() -> tuple[SlowScans, SpaceLoop]:
    engine = SlowScans()
    state = TabletState(engine)
    fill(state, random.Random(3))  # 9,000 versions: about ten chunks of 1,000
    space = SpaceLoop(state=state, log=PaxosStorage(engine), snapshot_index=lambda: 0, gc_retention_ns=RETENTION_S * S,
                      monotonic_ns=engine.now_ns, safe_ts=lambda: Timestamp((VERSIONS + 1) * S + trio_ns()))
    return engine, space


async def test_a_pass_is_followed_by_nine_times_the_time_it_held_the_loop() -> None:
    _, space = slow_space()
    await space.reclaim()
    held_s = space.counters.gc_held_ns / S
    assert space.counters.gc_passes == 1 and space.counters.gc_passes_skipped == 0
    assert held_s >= 9  # every chunk's scan counted, not only the first
    assert space.rest_s == pytest.approx(held_s * (1 - GC_DUTY) / GC_DUTY)


async def test_the_loop_rests_after_a_long_pass(autojump_clock: trio.testing.MockClock) -> None:
    """Passes every 2.5 s (retention / 2) while they are short; after one that held the loop about
    10 s, the next turn waits about 90 s."""
    _, space = slow_space()
    turns: list[float] = []
    reclaim = space.reclaim

    async def counted() -> None:
        turns.append(trio.current_time())
        await reclaim()

    space.reclaim = counted  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(space.run)
        await trio.sleep(60)
        assert len(turns) == 1, turns
        rest_s = space.rest_s
        assert rest_s >= 80
        await trio.sleep(45)
        nursery.cancel_scope.cancel()
    assert len(turns) >= 2 and turns[1] - turns[0] >= rest_s - 0.5, (rest_s, turns)  # the grid rounds by 0.2 s


class SlowCompactions(DictEngine):
    """A DictEngine whose compactions take 100 ms of a fake clock, and which records when each began."""

    def __init__(self) -> None:
        super().__init__()
        self.fake_ns = 0
        self.started: list[int] = []

    def now_ns(self) -> int:
        return trio_ns() + self.fake_ns

    def compact(self, start: bytes | None = None, stop: bytes | None = None) -> None:
        self.started.append(self.now_ns())
        super().compact(start, stop)
        self.fake_ns += 100_000_000


async def test_compactions_are_paced_to_the_duty_share(autojump_clock: trio.testing.MockClock) -> None:
    engine = SlowCompactions()
    state = TabletState(engine)
    fill(state, random.Random(1))
    space = SpaceLoop(state=state, log=PaxosStorage(engine), snapshot_index=lambda: 0, gc_retention_ns=RETENTION_S * S,
                      monotonic_ns=engine.now_ns, policy=CompactionPolicy(slice_versions=1_000, duty=0.2))
    await space.reclaim()
    assert len(engine.started) >= 5 and space.counters.compactions == len(engine.started)
    gaps = [later - earlier for earlier, later in zip(engine.started, engine.started[1:])]
    assert min(gaps) >= 500_000_000, gaps  # 100 ms compacting, then 400 ms off: a fifth of the time
    assert space.counters.compaction_max_ns == 100_000_000


async def offloaded_compaction_lets_the_loop_run(offload: bool, wait_s: float) -> bool:
    """True if trio tasks ran while a compaction was in progress: the compaction waits until
    a ticking task has run three times (or gives up after wait_s)."""
    ticked = threading.Event()
    space = SpaceLoop(state=TabletState(DictEngine()), log=PaxosStorage(DictEngine()), snapshot_index=lambda: 0,
                      gc_retention_ns=RETENTION_S * S, monotonic_ns=trio_ns, offload=offload)
    saw: list[bool] = []

    async def tick() -> None:
        for _ in range(3):
            await trio.sleep(0.01)
        ticked.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await space._compact(lambda: saw.append(ticked.wait(timeout=wait_s)))
    return saw == [True]


async def test_a_real_node_compacts_in_a_worker_thread_while_the_loop_serves() -> None:
    assert await offloaded_compaction_lets_the_loop_run(offload=True, wait_s=20)


async def test_the_simulation_keeps_compaction_inline() -> None:
    """Inline (offload=False, NodeEnvironment's default, which the simulation keeps), no
    task runs during the call: the ticker cannot have run, however long it waits."""
    assert NodeEnvironment.__attrs_attrs__.offload_compaction.default is False
    assert not await offloaded_compaction_lets_the_loop_run(offload=False, wait_s=0.3)
