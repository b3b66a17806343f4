"""Snapshot reads replayed: a read-only transaction at T sees exactly the commits at or below T.

Role: chronodb gives every committed read-write transaction a commit
timestamp and serves a read-only transaction from one snapshot at its read
timestamp. So replaying the committed appends in commit-timestamp order
against a dict of lists, the state at T must equal what the read-only
transaction read, key by key. Input: the history, which transactions took
effect, and who appended each element; output: `snapshot-mismatch` anomalies.

Invariants:
- Appends of one transaction keep their micro-operation order; transactions
  sharing a commit timestamp (which chronodb never issues) keep history order.
- An element appended by a committed transaction whose commit timestamp is
  unknown (an `info` one that some read observed) cannot be placed: it is
  ignored on both sides of the comparison rather than guessed.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import bisect

from txn.sim.elle_records import OK, SNAPSHOT_MISMATCH, Anomaly, Op


def snapshot_anomalies(history: list[Op], committed: tuple, writer: dict) -> list[Anomaly]:
    timelines = _timelines(history, committed)
    unplaced = {element for element, index in writer.items() if committed[index] and history[index].commit_ts is None}
    anomalies = []
    for index, op in enumerate(history):
        if op.outcome == OK and op.read_only and op.read_ts is not None:
            anomalies += _check_read_only(index, op, timelines, unplaced)
    return anomalies


def _timelines(history: list[Op], committed: tuple) -> dict:
    """key -> (ascending commit timestamps, the element appended at each)."""
    entries: dict = {}
    for index, op in enumerate(history):
        if not committed[index] or op.read_only or op.commit_ts is None:
            continue
        for position, mop in enumerate(op.mops):
            if mop[0] == "append":
                entries.setdefault(mop[1], []).append((op.commit_ts, index, position, mop[2]))
    timelines = {}
    for key, key_entries in entries.items():
        key_entries.sort(key=lambda entry: (entry[0].wall, entry[0].logical, entry[1], entry[2]))
        timelines[key] = ([entry[0] for entry in key_entries], [entry[3] for entry in key_entries])
    return timelines


def _check_read_only(index: int, op: Op, timelines: dict, unplaced: set) -> list[Anomaly]:
    for mop in op.mops:
        if mop[0] != "r":
            continue
        key = mop[1]
        seen = tuple(value for value in (mop[2] or ()) if (key, value) not in unplaced)
        stamps, values = timelines.get(key, ([], []))
        expected = tuple(values[: bisect.bisect_right(stamps, op.read_ts)])
        if seen != expected:
            missing = [value for value in expected if value not in seen]
            extra = [value for value in seen if value not in expected]
            text = (
                f"Snapshot mismatch: read-only T{index} at ts={op.read_ts} read {key}={list(seen)}, but replaying "
                f"the committed read-write transactions with commit ts <= {op.read_ts} gives {list(expected)} "
                f"(missing {missing}, unexpected {extra}, or a different order)."
            )
            return [Anomaly(SNAPSHOT_MISMATCH, (index,), (), (op.read_ts,), text)]
    return []
