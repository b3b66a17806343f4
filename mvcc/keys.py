"""MVCC key encoding: where versions, intents and metadata live in the engine.

Role: turn (user key, timestamp) into engine keys and back, so that one
forward pass over the engine meets user keys in byte order and, within a key,
its versions newest first. Pure functions; `KeySpace` precomputes the
prefixes of one store.

Layout under the store's prefix P (b"m" for a tablet's MVCC data; the Paxos
log uses b"p" and tablet metadata b"t" in the same LevelDB):

    P "g"                                  -> GC horizon: Timestamp.to_bytes() (12 bytes)
    P "h"                                  -> present only while an import is unfinished
    P "i" escape(user_key) 00 01           -> intent: ts(12) txn_id_len(2) txn_id tagged_value
    P "v" escape(user_key) 00 01 inv(ts)   -> version: tagged_value

    escape(k):    every 0x00 byte of k becomes 0x00 0xff; other bytes are kept
    00 01:        the terminator; it never occurs inside escape(k)
    inv(ts):      12 bytes, (2**64-1 - wall) then (2**32-1 - logical), big-endian,
                  so byte order is reverse timestamp order (newest first)
    tagged_value: 0x01 + value for a value (empty values allowed), 0x00 for a tombstone

Invariants (property-tested in tests/mvcc/test_keys.py):
- escape(a) + 00 01 < escape(b) + 00 01  iff  a < b, for all byte strings:
  where a is a proper prefix of b, a's terminator 00 01 sorts below what
  follows in b (a byte >= 0x01, or 0x00 0xff); otherwise the first differing
  byte decides, and an escaped 0x00 (0x00 0xff) still sorts below any byte >= 1.
- escape(k) + 00 01 is never a prefix of another key's encoding, so the
  fixed-width timestamp suffix can never interleave two user keys, and all
  engine keys of one user key's versions lie in [group + inv(ts), group + ff*13).
- decode(encode(k, ts)) == (k, ts).
"""

from __future__ import annotations

import struct

import attrs

from hlc.timestamp import LOGICAL_MAX, WALL_MAX, Timestamp

TERMINATOR = b"\x00\x01"
TS_SIZE = 12
_INVERTED = struct.Struct(">QI")

TAG_TOMBSTONE = b"\x00"
TAG_VALUE = b"\x01"
TAGGED_TOMBSTONE = TAG_TOMBSTONE

# Above every 12-byte timestamp suffix of one group.
GROUP_END = b"\xff" * (TS_SIZE + 1)


def escape(user_key: bytes) -> bytes:
    """The order-preserving, terminator-free form of a user key."""
    return user_key.replace(b"\x00", b"\x00\xff")


def unescape(escaped: bytes) -> bytes:
    return escaped.replace(b"\x00\xff", b"\x00")


def inverted_ts(ts: Timestamp) -> bytes:
    """12 bytes whose byte order is the reverse of timestamp order."""
    return _INVERTED.pack(WALL_MAX - ts.wall, LOGICAL_MAX - ts.logical)


def ts_from_inverted(data: bytes) -> Timestamp:
    wall, logical = _INVERTED.unpack(data)
    return Timestamp(WALL_MAX - wall, LOGICAL_MAX - logical)


def tag_value(value: bytes | None) -> bytes:
    """The stored form of a value: a tag byte, then the value (none for a tombstone)."""
    return TAGGED_TOMBSTONE if value is None else TAG_VALUE + value


def untag_value(stored: bytes) -> bytes | None:
    tag = stored[:1]
    if tag == TAG_VALUE:
        return stored[1:]
    if tag == TAG_TOMBSTONE and len(stored) == 1:
        return None
    raise ValueError(f"not a tagged MVCC value: {stored[:16]!r}")


@attrs.frozen
class KeySpace:
    """The precomputed prefixes of one store's sub-keyspaces under `prefix`."""

    prefix: bytes
    horizon_key: bytes = attrs.field(init=False)
    importing_key: bytes = attrs.field(init=False)
    intents: bytes = attrs.field(init=False)
    intents_end: bytes = attrs.field(init=False)
    versions: bytes = attrs.field(init=False)
    versions_end: bytes = attrs.field(init=False)
    end: bytes | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.prefix, bytes) or not self.prefix:
            raise ValueError(f"a store prefix is a non-empty bytes string: {self.prefix!r}")
        set_field = object.__setattr__
        set_field(self, "horizon_key", self.prefix + b"g")
        set_field(self, "importing_key", self.prefix + b"h")
        set_field(self, "intents", self.prefix + b"i")
        set_field(self, "intents_end", self.prefix + b"j")
        set_field(self, "versions", self.prefix + b"v")
        set_field(self, "versions_end", self.prefix + b"w")
        set_field(self, "end", prefix_end(self.prefix))

    def group(self, user_key: bytes) -> bytes:
        """The common start of every version key of `user_key`."""
        return self.versions + user_key.replace(b"\x00", b"\x00\xff") + TERMINATOR

    def version_key(self, user_key: bytes, ts: Timestamp) -> bytes:
        return self.group(user_key) + inverted_ts(ts)

    def intent_key(self, user_key: bytes) -> bytes:
        return self.intents + user_key.replace(b"\x00", b"\x00\xff") + TERMINATOR

    def decode_version_key(self, key: bytes) -> tuple[bytes, Timestamp]:
        """(user key, ts) of a version key; ValueError if it is not one of ours."""
        if not key.startswith(self.versions) or key[-TS_SIZE - 2 : -TS_SIZE] != TERMINATOR:
            raise ValueError(f"not an MVCC version key under {self.prefix!r}: {key!r}")
        return unescape(key[len(self.versions) : -TS_SIZE - 2]), ts_from_inverted(key[-TS_SIZE:])

    def decode_intent_key(self, key: bytes) -> bytes:
        if not key.startswith(self.intents) or not key.endswith(TERMINATOR):
            raise ValueError(f"not an MVCC intent key under {self.prefix!r}: {key!r}")
        return unescape(key[len(self.intents) : -2])


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with `prefix` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
