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
"""

from __future__ import annotations

import argparse
import pathlib
import random
import shutil
import tempfile
import time

import trio

from hlc import Timestamp
from mvcc.engine_leveldb import LevelDbEngine
from paxos.storage import PaxosStorage
from tools.bench import existing_directory, print_setup
from tools.errors import CliError
from txn.tablet.compaction import CompactionPolicy
from txn.tablet.space import SpaceLoop
from txn.tablet.state import TabletState

VALUE_BYTES = 100
BATCH_KEYS = 500


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compaction", help="how long the space loop's compactions block a node on a big tablet",
        description="Build one tablet's LevelDB of about --mb MB, GC it and compact as the tablet's space loop "
        "does; print the compactions' durations (each blocks the node's loop), then one whole-range compaction.",
    )
    parser.add_argument("--mb", type=float, default=100.0, help="size of the live data before overwrites (default 100)")
    parser.add_argument("--overwritten", type=float, default=1.0,
                        help="share of the keys written a second time (default 1.0: half the data is garbage)")
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
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0
