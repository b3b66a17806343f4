"""Garbage collection of old versions: which version keys one bounded chunk drops.

Role: the pure planner behind `MvccStore.gc`. Given version entries in engine
order (user keys ascending, each key's versions newest first), a horizon and
a budget, it returns the keys to delete and where the next chunk resumes.

Rule (per user key): keep every version above the horizon and the newest
version at or below it, unless that one is a tombstone; drop the rest. No read
at or above the horizon can tell the difference.

Invariant kept after *every* chunk, so chunks can interleave with reads and a
crash between chunks is harmless: each key's remaining versions answer every
read at or above the horizon as the full history did. Hence a tombstone that
hides older versions is dropped only in the chunk that drops the last of those
versions (if a chunk ends in the middle, the next one resumes at the
tombstone); dropping it first would resurrect what it hides.

Each chunk also reports the oldest version it saw above the horizon (as its
inverted timestamp, `oldest_above`): `MvccStore` keeps the oldest over a
whole pass, to skip later passes that could drop nothing (mvcc/store.py, GC).

Resume token (opaque to callers): horizon (12 bytes) | passed (1 byte) | engine key.
`passed` means "this key's newest version at or below the horizon lies before
the resume point", so everything from it on in that key is garbage. A token
made under a lower horizon is still valid when `passed` (the newest version at
or below a higher horizon is no older); otherwise nothing of that key was
dropped yet and the next chunk restarts at the key's first version.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from hlc.timestamp import Timestamp
from mvcc.keys import TAGGED_TOMBSTONE, TS_SIZE, inverted_ts


@attrs.frozen
class GcChunk:
    """The keys one chunk drops, the resume point (engine key, passed) or None when done,
    how many version entries it examined, and `stop`: the first key it did not read
    (None: it read to the end). Every dropped key lies below `stop`; the resume point
    may lie below dropped keys (a pending tombstone). `oldest_above`: the inverted
    timestamp (mvcc/keys.py) of the oldest examined version above the horizon, the
    largest such suffix; b"" if it examined none."""

    deletes: tuple[bytes, ...] = attrs.field(converter=tuple)
    resume: tuple[bytes, bool] | None
    examined: int = 0
    stop: bytes | None = None
    oldest_above: bytes = b""


def plan_chunk(
    pairs: Iterable[tuple[bytes, bytes]], horizon: Timestamp, *, passed: bool, max_versions: int
) -> GcChunk:
    """Examine about `max_versions` version entries (at most two more: a chunk resumed at a
    pending tombstone always drops one version behind it, and a finished tombstone drop adds
    one delete); `passed` is the resume state of the first pair's key."""
    if max_versions < 1:
        raise ValueError(f"max_versions must be at least 1: {max_versions}")
    horizon_inverted = inverted_ts(horizon)
    deletes: list[bytes] = []
    group: bytes | None = None
    tombstone: bytes | None = None  # the visible tombstone of `group`, dropped once the group is done
    dropped_behind_tombstone = False
    examined = 0
    oldest_above = b""
    for key, stored in pairs:
        key_group = key[:-TS_SIZE]
        if key_group != group:
            if group is not None:
                passed = False
            if tombstone is not None:
                deletes.append(tombstone)
                tombstone, dropped_behind_tombstone = None, False
            if examined >= max_versions:
                return GcChunk(deletes, (key, False), examined, key, oldest_above)
            group = key_group
        elif examined >= max_versions and (tombstone is None or dropped_behind_tombstone):
            # Stopping inside a key: resume at its pending tombstone so that it is dropped last
            # (only once this chunk dropped something behind it, so every chunk makes progress).
            return GcChunk(deletes, (tombstone, False) if tombstone is not None else (key, passed), examined, key,
                           oldest_above)
        examined += 1
        if passed:
            deletes.append(key)
            dropped_behind_tombstone = tombstone is not None
        else:
            suffix = key[-TS_SIZE:]
            if suffix >= horizon_inverted:  # at or below the horizon: the newest such
                passed = True
                if stored == TAGGED_TOMBSTONE:
                    tombstone = key
            elif suffix > oldest_above:
                oldest_above = suffix
    if tombstone is not None:
        deletes.append(tombstone)
    return GcChunk(deletes, None, examined, None, oldest_above)


def encode_token(horizon: Timestamp, key: bytes, passed: bool) -> bytes:
    return horizon.to_bytes() + (b"\x01" if passed else b"\x00") + key


def decode_token(token: bytes, horizon: Timestamp) -> tuple[bytes, bool]:
    """Where to resume under `horizon`: (engine key, passed)."""
    if len(token) < 14 or token[12:13] not in (b"\x00", b"\x01"):
        raise ValueError(f"not a GC resume token: {token[:32]!r}")
    token_horizon = Timestamp.from_bytes(token[:12])
    passed = token[12:13] == b"\x01"
    key = token[13:]
    if token_horizon > horizon:
        raise ValueError(f"GC resume token is for horizon {token_horizon}, above {horizon}")
    if token_horizon != horizon and not passed:
        return key[:-TS_SIZE], False  # restart at the key's first version
    return key, passed
