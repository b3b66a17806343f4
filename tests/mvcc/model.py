"""A plain in-memory model of the MVCC store, for the property tests to compare against.

`history` keeps every version ever written (never garbage-collected), so that
tests can check that GC changed no read at or above the horizon; `versions` is
what the store should still hold after GC.
"""

from __future__ import annotations

import copy

import attrs

from hlc.timestamp import Timestamp
from mvcc.records import Intent


@attrs.define
class Model:
    versions: dict[bytes, dict[Timestamp, bytes | None]] = attrs.field(factory=dict)
    history: dict[bytes, dict[Timestamp, bytes | None]] = attrs.field(factory=dict)
    intents: dict[bytes, Intent] = attrs.field(factory=dict)
    horizon: Timestamp = Timestamp.MIN

    def copy(self) -> "Model":
        return copy.deepcopy(self)

    def write(self, key: bytes, ts: Timestamp, value: bytes | None) -> None:
        self.versions.setdefault(key, {})[ts] = value
        self.history.setdefault(key, {})[ts] = value

    def read(self, key: bytes, ts: Timestamp, *, source: str = "versions") -> tuple[bytes | None, Timestamp | None, Intent | None]:
        versions = getattr(self, source).get(key, {})
        visible = [t for t in versions if t <= ts]
        intent = self.intents.get(key)
        intent = intent if intent is not None and intent.ts <= ts else None
        if not visible:
            return None, None, intent
        newest = max(visible)
        value = versions[newest]
        return (None, None, intent) if value is None else (value, newest, intent)

    def scan(
        self, start: bytes, end: bytes | None, ts: Timestamp, limit: int | None, reverse: bool
    ) -> tuple[list[tuple[bytes, bytes, Timestamp]], list[Intent]]:
        in_range = sorted(k for k in self.versions if k >= start and (end is None or k < end))
        rows = []
        for key in reversed(in_range) if reverse else in_range:
            value, version_ts, _ = self.read(key, ts)
            if value is not None:
                rows.append((key, value, version_ts))
        if limit is not None:
            rows = rows[:limit]
        low, high = start, end
        if limit is not None and len(rows) == limit and limit > 0:
            if reverse:
                low = rows[-1][0]
            else:
                high = rows[-1][0] + b"\x00"
        if limit == 0 or (end is not None and end <= start):
            return [], []
        intents = [
            intent
            for key, intent in sorted(self.intents.items())
            if key >= low and (high is None or key < high) and intent.ts <= ts
        ]
        return rows, intents

    def gc(self, horizon: Timestamp) -> None:
        self.horizon = max(self.horizon, horizon)
        for key, versions in self.versions.items():
            at_or_below = sorted(t for t in versions if t <= self.horizon)
            if not at_or_below:
                continue
            newest = at_or_below[-1]
            drop = at_or_below[:-1] if versions[newest] is not None else at_or_below
            for ts in drop:
                del versions[ts]
        self.versions = {key: versions for key, versions in self.versions.items() if versions}

    def all_keys(self) -> list[bytes]:
        return sorted(set(self.history) | set(self.intents))
