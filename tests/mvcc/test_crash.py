"""Crash safety: a child applying synced batches is SIGKILLed at random points; on
reopen the store holds exactly a prefix of the batches, including every acknowledged one."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys

from hlc.timestamp import Timestamp
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.store import MvccStore
from tests.mvcc.crash_writer import KEYS_PER_BATCH, WALL_BASE, batch_writes

ROOT = pathlib.Path(__file__).resolve().parents[2]
ITERATIONS = 5


def run_child_until_killed(directory: pathlib.Path, first: int, acks_before_kill: int) -> int:
    """Start the writer, read `acks_before_kill` acknowledgements, SIGKILL it; the last ack."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.mvcc.crash_writer", str(directory), str(first)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    last_ack = first - 1
    try:
        for _ in range(acks_before_kill):
            line = child.stdout.readline()
            assert line, f"writer exited early with {child.poll()}"
            last_ack = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return last_ack


def batches_present(store: MvccStore) -> list[int]:
    """Batch numbers present, from a scan of every batch key; asserts each is all-or-nothing."""
    rows = store.scan(b"batch", b"batch\xff", Timestamp.MAX.prev()).rows
    keys_by_batch: dict[int, list[bytes]] = {}
    for key, value, version_ts in rows:
        number = int(key[5:11])
        assert version_ts == Timestamp(WALL_BASE + number + 1)
        keys_by_batch.setdefault(number, []).append(key)
    for number, keys in keys_by_batch.items():
        assert keys == [key for key, _ in batch_writes(number)[:KEYS_PER_BATCH]], f"batch {number} is torn: {keys}"
    return sorted(keys_by_batch)


def test_killed_writer_leaves_a_prefix_of_batches_with_every_acknowledged_one(
    tmp_path: pathlib.Path, replay_seed: int | None
) -> None:
    rng = random.Random(f"{replay_seed if replay_seed is not None else 4}/mvcc-crash")
    directory = tmp_path / "db"
    next_batch, acknowledged = 0, -1
    for _ in range(ITERATIONS):
        acknowledged = run_child_until_killed(directory, next_batch, rng.randint(1, 40))
        with LevelDbEngine(directory, create_if_missing=False) as engine:
            store = MvccStore(engine)
            present = batches_present(store)
            assert present == list(range(len(present))), f"not a prefix: {present}"
            assert len(present) - 1 >= acknowledged
            last = store.read(b"last", Timestamp.MAX.prev())
            assert last.value == b"%d" % (len(present) - 1)
            next_batch = len(present)
