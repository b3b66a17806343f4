"""`chronodb bench mvcc`: the MVCC store beside raw plyvel doing the unversioned equivalent.

Measures, in one process and one run, each on its own LevelDB in a temporary
directory, compacted after loading (sync=False writes, as Paxos group commit
syncs separately):
- versioned writes/s: `MvccStore.write([(key, value)], ts)`, one key per batch,
  timestamps increasing and made before timing (the HLC's cost is `chronodb
  bench hlc`'s); baseline: one `put` per plyvel write batch.
- point reads/s at a past timestamp over keys with 10 versions each (the read
  lands in the middle of the history); baseline: `get` of an unversioned key.
- 1,000-key scans/s at a past timestamp over the same data; baseline: a plyvel
  iterator over 1,000 unversioned keys.
Prints each figure and its ratio to the baseline. Targets: writes >= 0.60,
point reads >= 0.40. A diagnostic line shows raw plyvel gets of exact version
keys in the versioned database: how much of the read gap is LevelDB working
over ten times the data rather than the store's seek and code. Another shows
raw gets that verify block checksums, as every engine read does
(mvcc/engine_leveldb.py): the share of the gap that is checked storage.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from itertools import islice

from hlc.timestamp import Timestamp
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.store import MvccStore
from tools.bench import positive_int, positive_seconds, print_setup

VERSIONS = 10
VALUE_BYTES = 100
SCAN_KEYS = 1000
WALL_BASE = 1_800_000_000_000_000_000
STAMPS = 1 << 18  # write timestamps made ahead; a multiple of the key ring, so (key, ts) pairs recur rarely


ROUNDS = 4


def ops_per_second(call: Callable[[int], object], seconds: float, batch: int, first: int = 0) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            call(first + count)
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def compare(raw: Callable[[int], object], versioned: Callable[[int], object], seconds: float,
            batch: int = 200) -> tuple[float, float]:
    """Best rate of each over ROUNDS alternating rounds, so that noise from other
    processes hits both sides alike."""
    best_raw = best_versioned = 0.0
    offset = 0
    for _ in range(ROUNDS):
        best_raw = max(best_raw, ops_per_second(raw, seconds / ROUNDS, batch, offset))
        rate = ops_per_second(versioned, seconds / ROUNDS, batch, offset)
        best_versioned = max(best_versioned, rate)
        offset += int(rate * seconds)  # versioned writes need fresh, increasing timestamps
    return best_raw, best_versioned


def user_key(index: int) -> bytes:
    return b"user%010d" % index


def load(store: MvccStore, raw_put: Callable[[bytes, bytes], None], keys: int, value: bytes) -> None:
    for version in range(1, VERSIONS + 1):
        for first in range(0, keys, 1000):
            writes = [(user_key(index), value) for index in range(first, min(first + 1000, keys))]
            store.write(writes, Timestamp(WALL_BASE + version * 1000), sync=False)
    for index in range(keys):
        raw_put(user_key(index), value)


def report(name: str, rate: float, baseline: float, unit: str, target: float | None) -> None:
    ratio = rate / baseline
    verdict = "" if target is None else f"  (target >= {target:.2f}: {'met' if ratio >= target else 'MISSED'})"
    print(f"{name:<34} {rate:>11,.0f} {unit}  raw plyvel {baseline:>11,.0f}  ratio {ratio:.2f}{verdict}")


def run(args: argparse.Namespace) -> int:
    keys = args.keys
    print_setup("mvcc", keys=f"{keys:,} x {VERSIONS} versions", value=f"{VALUE_BYTES} bytes",
                duration=f"{args.seconds}s per figure and side, best of {ROUNDS} alternating rounds", writes="sync=False, one key per batch")
    rng = random.Random(0)
    order = [rng.randrange(keys) for _ in range(1 << 16)]
    value = bytes(rng.randrange(256) for _ in range(VALUE_BYTES))
    with tempfile.TemporaryDirectory(prefix="chronodb-bench-") as directory, \
            LevelDbEngine(f"{directory}/mvcc") as engine, LevelDbEngine(f"{directory}/raw") as raw_engine:
        store = MvccStore(engine)
        raw = raw_engine.plyvel_db
        load(store, raw.put, keys, value)
        # Both as a long-running replica's would be: flushed and compacted.
        engine.compact()
        raw_engine.compact()
        mask = len(order) - 1

        past = Timestamp(WALL_BASE + (VERSIONS // 2) * 1000 + 500)  # between versions 5 and 6
        read_keys = [user_key(index) for index in order]

        def raw_read(n: int) -> object:
            return raw.get(read_keys[n & mask])

        def versioned_read(n: int) -> object:
            return store.read(read_keys[n & mask], past)

        assert store.read(read_keys[0], past).version_ts == Timestamp(WALL_BASE + (VERSIONS // 2) * 1000)
        raw_reads, reads = compare(raw_read, versioned_read, args.seconds)
        # Diagnostic: raw plyvel gets of exact version keys in the versioned database,
        # i.e. the same data volume without the seek and without the store's code.
        exact_keys = [store.space.version_key(key, Timestamp(WALL_BASE + (VERSIONS // 2) * 1000)) for key in read_keys]
        versioned_db = engine.plyvel_db

        def raw_read_same_volume(n: int) -> object:
            return versioned_db.get(exact_keys[n & mask])

        _, same_volume_reads = compare(raw_read, raw_read_same_volume, args.seconds / 2)

        def raw_read_verified(n: int) -> object:
            return raw.get(read_keys[n & mask], verify_checksums=True)

        raw_reads_again, verified_reads = compare(raw_read, raw_read_verified, args.seconds / 2)

        starts = [user_key(rng.randrange(max(1, keys - SCAN_KEYS))) for _ in range(256)]

        def raw_scan(n: int) -> object:
            return list(islice(raw.iterator(start=starts[n & 255]), SCAN_KEYS))

        def versioned_scan(n: int) -> object:
            return store.scan(starts[n & 255], None, past, limit=SCAN_KEYS)

        assert len(store.scan(starts[0], None, past, limit=SCAN_KEYS).rows) == min(SCAN_KEYS, keys)
        raw_scans, scans = compare(raw_scan, versioned_scan, args.seconds, batch=1)

        def raw_write(n: int) -> None:
            batch = raw.write_batch(sync=False)
            batch.put(user_key(order[n & mask]), value)
            batch.write()

        # Timestamps come from the HLC (`chronodb bench hlc`), so they are made before timing.
        stamps = [Timestamp(WALL_BASE + 1_000_000 + n) for n in range(STAMPS)]
        stamp_mask = STAMPS - 1

        def versioned_write(n: int) -> None:
            store.write([(user_key(order[n & mask]), value)], stamps[n & stamp_mask], sync=False)

        raw_writes, writes = compare(raw_write, versioned_write, args.seconds)

    report("versioned writes", writes, raw_writes, "writes/s", 0.60)
    report("point reads at a past ts", reads, raw_reads, "reads/s ", 0.40)
    report("  (diagnostic: raw get, 10x data)", same_volume_reads, raw_reads, "reads/s ", None)
    report("  (diagnostic: raw get, verified)", verified_reads, raw_reads_again, "reads/s ", None)
    report(f"{SCAN_KEYS:,}-key scans at a past ts", scans, raw_scans, "scans/s ", None)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mvcc", help="versioned writes, past-timestamp reads and scans beside raw plyvel")
    parser.add_argument("--keys", type=positive_int, default=20_000, help="user keys, each written 10 times (default 20000)")
    parser.add_argument("--seconds", type=positive_seconds, default=1.0, help="measuring time per figure (default 1.0)")
    parser.set_defaults(func=run)
