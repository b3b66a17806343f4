"""`chronodb bench compaction`: how long the space loop's compactions hold a node on a big tablet.

Builds one tablet replica's LevelDB directory of about `--mb` MB (`--keys`
keys with random values, then every key overwritten again with probability
`--overwritten`, all in table files as on a long-running replica), then runs
one turn of the tablet's space loop (txn/tablet/space.py: a GC pass keeping
each key's newest version, compacting its slices as the policy says) and
prints how many compactions it made, the longest and their total (a
compaction runs inline: the node's trio loop does nothing else meanwhile),
and the size before and after. For comparison it then rebuilds the same
directory and compacts the whole MVCC range in one call.

With `--log-turns N` (default 20,000; 0 skips it) it then measures the Paxos
log's compaction on a copy of the same store, twice: N turns, each logging
one Paxos entry of `LOG_WRITES` writes and applying them to the MVCC store
at a new timestamp (unsynced: the disk is not what is measured), the log
truncated as the Paxos core does (`PaxosConfig`), and the space loop's log
check (`SpaceLoop.reclaim`, with its pace) every `CHECK_TURNS` turns (its
5 s interval at 160 turns a second, one tablet's share of 64 writers).
Once with `log_min_share` 0 (the entry count alone decides, the rule
before 12-05), once with the default policy.
Each prints the process's CPU per turn (every thread: LevelDB's own
compaction thread too), the log compactions and their time, the truncated
log still on disk and the directory's size; then the ratio of the CPU.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import resource
import shutil
import tempfile
import time

import attrs
import trio

from hlc import Timestamp
from mvcc.engine_leveldb import LevelDbEngine
from paxos.messages import Ballot, Entry
from paxos.storage import PaxosStorage
from paxos.types import PaxosConfig, Persist
from tools.bench import count_or_zero, existing_directory, print_setup
from tools.errors import CliError
from txn.tablet.compaction import CompactionPolicy
from txn.tablet.space import SpaceLoop
from txn.tablet.state import TabletState

VALUE_BYTES = 100
BATCH_KEYS = 500
LOG_WRITES = 10  # writes per Paxos entry in the log stream
CHECK_TURNS = 800  # turns between two log checks of the space loop


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compaction", help="how long the space loop's compactions block a node on a big tablet",
        description="Build one tablet's LevelDB of about --mb MB, GC it and compact as the tablet's space loop "
        "does; print the compactions' durations (each blocks the node's loop), then one whole-range compaction.",
    )
    parser.add_argument("--mb", type=float, default=100.0, help="size of the live data before overwrites (default 100)")
    parser.add_argument("--overwritten", type=float, default=1.0,
                        help="share of the keys written a second time (default 1.0: half the data is garbage)")
    parser.add_argument("--log-turns", type=count_or_zero, default=20_000,
                        help="turns of the Paxos log stream measured with and without the log's share rule "
                        "(default 20,000; 0 skips it)")
    parser.add_argument("--tmp", type=existing_directory, default=None, help="directory for the LevelDB (default: the system's temp)")
    parser.set_defaults(func=run)


def build(path: pathlib.Path, keys: int, overwritten: float) -> tuple[LevelDbEngine, TabletState, int]:
    """The tablet's directory, compacted (everything in table files); returns its last write's wall time."""
    shutil.rmtree(path, ignore_errors=True)
    engine = LevelDbEngine(path)
    state = TabletState(engine)
    rng = random.Random(11)
    wall = 0
    for pass_keys in (range(keys), [k for k in range(keys) if rng.random() < overwritten]):
        for first in range(0, len(pass_keys), BATCH_KEYS):
            wall += 1
            batch = [(b"key-%09d" % k, rng.randbytes(VALUE_BYTES)) for k in pass_keys[first:first + BATCH_KEYS]]
            state.store.write(batch, Timestamp(wall), sync=False)
    engine.compact()
    return engine, state, wall


def log_stream(path: pathlib.Path, keys: int, wall: int, turns: int, policy: CompactionPolicy) -> float:
    """`turns` turns of the log stream (module docstring) on the store at `path`, writing above `wall`;
    the log checks are the tablet's space loop's own (`SpaceLoop.reclaim`, no GC: an hour's retention).
    Prints its line and returns the CPU seconds it took."""
    rng = random.Random(13)
    paxos, ballot = PaxosConfig(), Ballot(1, "n1")
    with LevelDbEngine(path) as engine:
        state, log = TabletState(engine), PaxosStorage(engine)
        snapshot = 0
        space = SpaceLoop(state=state, log=log, snapshot_index=lambda: snapshot, gc_retention_ns=3600 * 10**9,
                          monotonic_ns=time.monotonic_ns, policy=policy)
        before = resource.getrusage(resource.RUSAGE_SELF)
        for index in range(1, turns + 1):
            writes = [(b"key-%09d" % rng.randrange(keys), rng.randbytes(VALUE_BYTES)) for _ in range(LOG_WRITES)]
            entry = Entry(index, ballot, b"".join(key + value for key, value in writes))
            truncate = None
            if index - snapshot > paxos.truncate_threshold_entries:
                snapshot = truncate = index - paxos.truncate_keep_entries
            log.write(Persist(promised=ballot if index == 1 else None, entries=(entry,), truncate_through=truncate), sync=False)
            state.store.write(writes, Timestamp(wall + 1 + index), sync=False)
            if index % CHECK_TURNS == 0:
                trio.run(space.reclaim)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        dead, total = log.truncated_bytes(snapshot)
        counters = space.counters
        print(f"log stream, log_min_share {policy.log_min_share:g}: {turns:,} turns, CPU {cpu_s * 1e6 / turns:.0f} us a turn "
              f"({cpu_s:.1f} s); {counters.compactions} log compactions, {counters.compaction_ns / 1e9:.1f} s in all; "
              f"truncated log still in table files {dead / 1e6:.1f} MB of {total / 1e6:.0f} MB; "
              f"directory {engine.size_on_disk() / 1e6:.0f} MB")
    return cpu_s


def run(args: argparse.Namespace) -> int:
    if args.mb <= 0 or not 0 <= args.overwritten <= 1:
        raise CliError("--mb must be positive and --overwritten between 0 and 1")
    keys = int(args.mb * 1e6 / (VALUE_BYTES + 30))
    policy = CompactionPolicy()
    print_setup("compaction", tablet=f"{keys:,} keys x {VALUE_BYTES}-byte random values, {args.overwritten:.0%} of them "
                f"overwritten once, compacted into table files", policy=str(policy))
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-bench-compaction-", dir=args.tmp))
    try:
        engine, state, wall = build(directory / "tablet", keys, args.overwritten)
        with engine:
            before = engine.size_on_disk()
            state.safe_ts = Timestamp(wall + 2)
            space = SpaceLoop(state=state, log=PaxosStorage(engine), snapshot_index=lambda: 0, gc_retention_ns=1,
                              monotonic_ns=time.monotonic_ns, policy=policy)
            started = time.monotonic()
            trio.run(space.reclaim)
            took = time.monotonic() - started
            c = space.counters
            print(f"space loop turn: {took:.1f}s in all (GC, compactions and the pauses between them); "
                  f"{c.gc_dropped:,} versions dropped; {c.compactions} compactions, longest {c.compaction_max_ns / 1e6:.0f} ms, "
                  f"{c.compaction_ns / 1e6:.0f} ms in all; LevelDB {before / 1e6:.1f} MB -> {engine.size_on_disk() / 1e6:.1f} MB")
        engine, state, wall = build(directory / "tablet", keys, args.overwritten)
        with engine:
            before = engine.size_on_disk()
            resume = None
            while not (progress := state.store.gc(Timestamp(wall + 1), resume_from=resume)).done:
                resume = progress.resume_from
            started = time.monotonic()
            state.store.compact()
            print(f"for comparison, one compaction of the whole MVCC range after the same GC: "
                  f"{(time.monotonic() - started) * 1e3:.0f} ms; LevelDB {before / 1e6:.1f} MB -> {engine.size_on_disk() / 1e6:.1f} MB")
        if args.log_turns:
            print(f"log stream: {LOG_WRITES} writes of {VALUE_BYTES} bytes per entry, truncation past "
                  f"{PaxosConfig().truncate_threshold_entries:,} entries, a log check every {CHECK_TURNS} turns; "
                  f"each on a copy of the GC'd and compacted store", flush=True)
            by_share = {}
            for share in (0.0, policy.log_min_share):
                shutil.rmtree(directory / "log", ignore_errors=True)
                shutil.copytree(directory / "tablet", directory / "log")
                by_share[share] = log_stream(directory / "log", keys, wall, args.log_turns, attrs.evolve(policy, log_min_share=share))
            print(f"CPU a turn, entry count alone / with the share rule: "
                  f"x{by_share[0.0] / max(by_share[policy.log_min_share], 1e-9):.2f}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0
