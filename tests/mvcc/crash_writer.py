"""Child process for tests/mvcc/test_crash.py: applies synced batches until killed.

Usage: python -m tests.mvcc.crash_writer DIR FIRST_BATCH

Batch n writes KEYS_PER_BATCH keys `b"batch%06d/%d" % (n, i)` at timestamp n+1
and moves the key b"last" to n, in one synced write; only after it returns
does the child print `n` (the acknowledgement).
"""

from __future__ import annotations

import sys

from hlc.timestamp import Timestamp
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.store import MvccStore

KEYS_PER_BATCH = 5
WALL_BASE = 1_000


def batch_writes(number: int) -> list[tuple[bytes, bytes]]:
    writes = [(b"batch%06d/%d" % (number, index), b"v%d" % number * 20) for index in range(KEYS_PER_BATCH)]
    writes.append((b"last", b"%d" % number))
    return writes


def main() -> None:
    directory, first = sys.argv[1], int(sys.argv[2])
    store = MvccStore(LevelDbEngine(directory))
    number = first
    while True:
        store.write(batch_writes(number), Timestamp(WALL_BASE + number + 1), sync=True)
        print(number, flush=True)
        number += 1


if __name__ == "__main__":
    main()
