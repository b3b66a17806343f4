"""The register workload's checker for `chronodb verify`: single-key writes and reads with timestamps.

Role: given the history of a run (writes of unique values, strong reads,
reads at past timestamps, stale reads, scans), say whether the contract held,
and if not, what broke. Input: a list of `RegisterOp`; output: a `Verdict` of
`Anomaly` records (txn/sim/elle_records.py, the same vocabulary as the
list-append and bank checkers). Pure: no I/O, no clock, no randomness.

What is checked (DESIGN.md contract 1, 2, 5):
- every value read was written (`garbage-read`), by a write that was not
  reported failed (`aborted-read`), at the timestamp its writer was
  acknowledged with (`wrong-version-ts`), never above the read timestamp
  (`future-read`); a write whose outcome is unknown is seen at one timestamp
  only (`inconsistent-unknown-write`); no two versions of a key share a
  timestamp (`duplicate-timestamp`);
- the committed versions are the acknowledged writes plus the unknown ones
  some read observed (once seen, it happened); a read (or scan row) at T
  returns exactly the newest of them at or below T (`stale-read`; in the
  read-back of a write at its own timestamp, `lost-write`);
- strong reads are linearizable, judged on the harness's clock alone: a
  strong read returns a version at least as new as every write acknowledged
  and every version observed before it was invoked (`stale-strong-read`),
  and never a write invoked after it completed (`read-from-the-future`);
- timestamps respect real-time order (`realtime-write-write`,
  `realtime-write-read`, `realtime-read-write`, `realtime-read-read`): an
  operation invoked after an acknowledged write or a completed read that
  observed version v has ts > ts(v) if it writes, ts >= ts(v) if it is a
  strong read;
- liveness after healing (`check_liveness`): every tablet served an ok
  operation after the heal.

HAZARD: real-time judgements trust the harness's one monotonic clock for
invoke and complete times; timestamps come from the nodes' clocks, which is
the point: skew within max_offset must not show here.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from typing import Iterable

import attrs

from hlc.timestamp import Timestamp
from txn.sim.elle_records import FAIL, INFO, OK, Anomaly, Verdict

WRITE, READ, SCAN = "write", "read", "scan"
STRONG, AT, STALE, MAX_STALE, READBACK = "strong", "at", "stale", "max_stale", "readback"
MAX_LISTED = 25  # anomalies listed per class; every one is counted


@attrs.frozen
class RegisterOp:
    """One client operation as the harness saw it. A scan covers every written key in [key, end)."""

    process: int
    kind: str  # WRITE, READ or SCAN
    invoke_ns: int
    complete_ns: int
    outcome: str  # OK, FAIL or INFO
    key: str = ""
    value: str | None = None  # write: the value written; read: the value read (None: nothing)
    mode: str = ""  # read and scan: STRONG, AT, STALE, MAX_STALE or READBACK
    ts: Timestamp | None = None  # write: commit ts; read and scan: read ts
    version_ts: Timestamp | None = None  # read: the commit ts of the version read
    rows: tuple[tuple[str, str, Timestamp], ...] = attrs.field(converter=tuple, default=())  # scan
    end: str | None = None  # scan: exclusive end (None: to the end)
    error: str = ""

    def observations(self) -> list[tuple[str, str | None, Timestamp | None]]:
        """(key, value, version_ts) this ok read or scan saw; a scan's missing keys are not listed."""
        if self.kind == READ:
            return [(self.key, self.value, self.version_ts)]
        if self.kind == SCAN:
            return [(key, value, version_ts) for key, value, version_ts in self.rows]
        return []


@attrs.frozen
class Version:
    ts: Timestamp
    value: str
    writer: int  # history index


def _anomaly(name: str, ops: Iterable[int], timestamps: Iterable[Timestamp | None], explanation: str) -> Anomaly:
    return Anomaly(name, tuple(ops), (), tuple(timestamps), explanation)


def check_register(history: list[RegisterOp]) -> Verdict:
    """Every anomaly of a register history; valid iff there is none."""
    writers = {(op.key, op.value): i for i, op in enumerate(history) if op.kind == WRITE}
    anomalies, observed_ts = _observations(history, writers)
    versions = _committed_versions(history, observed_ts)
    anomalies += _duplicate_timestamps(versions)
    anomalies += _snapshot_reads(history, versions, writers)
    anomalies += _strong_reads(history, versions, writers)
    anomalies += _realtime_timestamps(history, writers, observed_ts)
    counts = Counter(anomaly.name for anomaly in anomalies)
    listed: Counter[str] = Counter()
    kept = []
    for anomaly in anomalies:
        listed[anomaly.name] += 1
        if listed[anomaly.name] <= MAX_LISTED:
            kept.append(anomaly)
    stats = Counter(f"{op.kind}-{op.outcome}" for op in history)
    stats.update({f"anomaly:{name}": count for name, count in counts.items()})
    stats.update(ops=len(history), keys=len(versions), unknown_writes_seen=len(observed_ts))
    return Verdict(not anomalies, kept, stats.items())


def _observations(history: list[RegisterOp], writers: dict) -> tuple[list[Anomaly], dict[int, Timestamp]]:
    """Per-observation checks; the timestamp at which each unknown-outcome write was seen."""
    anomalies: list[Anomaly] = []
    observed_ts: dict[int, Timestamp] = {}
    for i, op in enumerate(history):
        if op.outcome != OK:
            continue
        for key, value, version_ts in op.observations():
            if value is None:
                continue
            w = writers.get((key, value))
            if w is None:
                anomalies.append(_anomaly("garbage-read", [i], [version_ts], f"op {i} read {key}={value!r}, which no write wrote"))
                continue
            writer = history[w]
            if version_ts is not None and op.ts is not None and version_ts > op.ts:
                anomalies.append(_anomaly("future-read", [w, i], [version_ts, op.ts],
                                          f"op {i} read at {op.ts} returned {key}={value!r} with version {version_ts}, above its read timestamp"))
            if writer.outcome == FAIL:
                anomalies.append(_anomaly("aborted-read", [w, i], [version_ts],
                                          f"op {i} read {key}={value!r}, written by op {w}, which was reported failed ({writer.error})"))
            elif writer.outcome == OK and version_ts != writer.ts:
                anomalies.append(_anomaly("wrong-version-ts", [w, i], [writer.ts, version_ts],
                                          f"op {i} read {key}={value!r} as version {version_ts}; its write was acknowledged at {writer.ts}"))
            elif writer.outcome == INFO and version_ts is not None:
                seen = observed_ts.setdefault(w, version_ts)
                if seen != version_ts:
                    anomalies.append(_anomaly("inconsistent-unknown-write", [w, i], [seen, version_ts],
                                              f"write op {w} ({key}={value!r}, outcome unknown) was read at version {seen} and at {version_ts}"))
    return anomalies, observed_ts


def _committed_versions(history: list[RegisterOp], observed_ts: dict[int, Timestamp]) -> dict[str, list[Version]]:
    """Per key, ascending: acknowledged writes and the unknown-outcome writes some read observed."""
    versions: dict[str, list[Version]] = defaultdict(list)
    for i, op in enumerate(history):
        if op.kind != WRITE:
            continue
        ts = op.ts if op.outcome == OK else observed_ts.get(i) if op.outcome == INFO else None
        if ts is not None and op.value is not None:
            versions[op.key].append(Version(ts, op.value, i))
    for key in versions:
        versions[key].sort(key=lambda v: (v.ts, v.writer))
    return dict(versions)


def _duplicate_timestamps(versions: dict[str, list[Version]]) -> list[Anomaly]:
    anomalies = []
    for key, vs in versions.items():
        for a, b in zip(vs, vs[1:]):
            if a.ts == b.ts:
                anomalies.append(_anomaly("duplicate-timestamp", [a.writer, b.writer], [a.ts],
                                          f"writes op {a.writer} and op {b.writer} of {key} both committed at {a.ts}"))
    return anomalies


def newest_at(vs: list[Version], ts: Timestamp) -> Version | None:
    i = bisect.bisect_right([v.ts for v in vs], ts)
    return vs[i - 1] if i else None


def _expected_and_got(op: RegisterOp, versions: dict[str, list[Version]]) -> list[tuple[str, Version | None, str | None, Timestamp | None]]:
    """(key, expected version, value got, version ts got) for each key an ok read or scan covers."""
    assert op.ts is not None
    if op.kind == READ:
        return [(op.key, newest_at(versions.get(op.key, []), op.ts), op.value, op.version_ts)]
    got = {key: (value, version_ts) for key, value, version_ts in op.rows}
    keys = sorted(k for k in set(versions) | set(got) if k >= op.key and (op.end is None or k < op.end))
    return [(key, newest_at(versions.get(key, []), op.ts), *got.get(key, (None, None))) for key in keys]


def _snapshot_reads(history: list[RegisterOp], versions: dict[str, list[Version]], writers: dict) -> list[Anomaly]:
    anomalies = []
    for i, op in enumerate(history):
        if op.outcome != OK or op.kind not in (READ, SCAN) or op.ts is None:
            continue
        for key, expected, value, version_ts in _expected_and_got(op, versions):
            if expected is None or (expected.value == value and expected.ts == version_ts):
                continue
            if value is not None and (key, value) not in writers:
                continue  # garbage-read, already reported
            name = "lost-write" if op.mode == READBACK else "stale-read"
            got = f"{value!r} (version {version_ts})" if value is not None else "nothing"
            anomalies.append(_anomaly(name, [expected.writer, i], [expected.ts, op.ts],
                                      f"op {i} ({op.kind} {op.mode} at {op.ts}) got {key}={got}; the newest committed version "
                                      f"at or below {op.ts} is {expected.value!r} at {expected.ts}, written by op {expected.writer}"))
    return anomalies


def _strong_reads(history: list[RegisterOp], versions: dict[str, list[Version]], writers: dict) -> list[Anomaly]:
    """Linearizability of strong reads on the harness's clock: per key, the newest version known
    (acknowledged or observed) before the read was invoked is a floor for what it returns."""
    anomalies = []
    done = sorted((i for i, op in enumerate(history) if op.outcome == OK), key=lambda i: history[i].complete_ns)
    strong = sorted((i for i, op in enumerate(history) if op.outcome == OK and op.kind in (READ, SCAN) and op.mode == STRONG),
                    key=lambda i: history[i].invoke_ns)
    floor: dict[str, tuple[Timestamp, int]] = {}
    finished = 0
    for r in strong:
        read = history[r]
        while finished < len(done) and history[done[finished]].complete_ns < read.invoke_ns:
            j = done[finished]
            for key, ts in _known_versions(history[j]):
                if key not in floor or ts > floor[key][0]:
                    floor[key] = (ts, j)
            finished += 1
        for key, version_ts in _got(read, floor).items():
            if key in floor and (version_ts is None or version_ts < floor[key][0]):
                ts, j = floor[key]
                anomalies.append(_anomaly("stale-strong-read", [j, r], [ts, version_ts],
                                          f"strong {read.kind} op {r} returned {key} at version {version_ts}, but op {j}, which "
                                          f"completed before op {r} was invoked, had already established version {ts}"))
        for key, value, _ in read.observations():
            w = writers.get((key, value))
            if w is not None and history[w].invoke_ns > read.complete_ns:
                anomalies.append(_anomaly("read-from-the-future", [w, r], [],
                                          f"strong {read.kind} op {r} returned {key}={value!r}, written by op {w}, which was invoked only after op {r} completed"))
    return anomalies


def _got(read: RegisterOp, floor: dict) -> dict[str, Timestamp | None]:
    """The version ts a strong read returned for each key it covers (None: nothing),
    a scan's missing keys included."""
    if read.kind == READ:
        return {read.key: read.version_ts if read.value is not None else None}
    got: dict[str, Timestamp | None] = {k: None for k in floor if k >= read.key and (read.end is None or k < read.end)}
    got.update((key, version_ts) for key, _, version_ts in read.rows)
    return got


def _known_versions(op: RegisterOp) -> list[tuple[str, Timestamp]]:
    """(key, version ts) that a completed ok operation made known to everyone after it."""
    if op.kind == WRITE:
        return [(op.key, op.ts)] if op.ts is not None else []
    return [(key, version_ts) for key, value, version_ts in op.observations() if value is not None and version_ts is not None]


def _realtime_timestamps(history: list[RegisterOp], writers: dict, observed_ts: dict[int, Timestamp]) -> list[Anomaly]:
    """Across all keys: ts(later write) > ts(v), ts(later strong read) >= ts(v), for every version v
    acknowledged or observed by an operation that completed before the later one was invoked."""
    anomalies = []
    done = sorted((i for i, op in enumerate(history) if op.outcome == OK), key=lambda i: history[i].complete_ns)
    later = sorted(range(len(history)), key=lambda i: history[i].invoke_ns)
    known: tuple[Timestamp, int] | None = None
    finished = 0
    for b in later:
        op = history[b]
        while finished < len(done) and history[done[finished]].complete_ns < op.invoke_ns:
            j = done[finished]
            for _, ts in _known_versions(history[j]):
                if known is None or ts > known[0]:
                    known = (ts, j)
            finished += 1
        if known is None:
            continue
        ts_known, a = known
        first = "write" if history[a].kind == WRITE else "read"
        if op.kind == WRITE:
            ts = op.ts if op.outcome == OK else observed_ts.get(b)
            if ts is not None and not ts > ts_known:
                anomalies.append(_anomaly(f"realtime-{first}-write", [a, b], [ts_known, ts],
                                          f"write op {b} committed at {ts}, not above version {ts_known}, which op {a} "
                                          f"({history[a].kind}) had {'acknowledged' if first == 'write' else 'observed'} before op {b} was invoked"))
        elif op.outcome == OK and op.mode == STRONG and op.ts is not None and op.ts < ts_known:
            anomalies.append(_anomaly(f"realtime-{first}-read", [a, b], [ts_known, op.ts],
                                      f"strong {op.kind} op {b} read at {op.ts}, below version {ts_known}, which op {a} "
                                      f"({history[a].kind}) had {'acknowledged' if first == 'write' else 'observed'} before op {b} was invoked"))
    return anomalies


def check_liveness(history: list[RegisterOp], healed_ns: int, groups: dict[str, list[str]]) -> list[Anomaly]:
    """After `healed_ns` every group of keys (a tablet) must have served an ok operation:
    a write, a read or a scan row of one of its keys."""
    served: set[str] = set()
    for op in history:
        if op.outcome == OK and op.invoke_ns >= healed_ns:
            served.update([op.key] if op.kind != SCAN else [key for key, _, _ in op.rows])
            if op.kind == SCAN:
                served.update(k for keys in groups.values() for k in keys if k >= op.key and (op.end is None or k < op.end))
    return [_anomaly("unavailable-after-heal", [], [], f"tablet {group} served no operation after every fault was healed")
            for group, keys in sorted(groups.items()) if not served.intersection(keys)]
