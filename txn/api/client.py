"""Client requests and replies: the tablet map, writes, reads and scans.

Role: what a client says to a node (type ids in txn/wire/type_ids.py). Pure:
attrs classes and their registration.

Conventions:
- every request that can wait carries `timeout_ns`, the caller's remaining
  deadline; the node never waits longer;
- every read reply carries the timestamp it was served at;
- failures are `ErrorReply` values (txn/api/errors.py).
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from hlc.timestamp import Timestamp
from txn.wire.codec import register_classes


class ReadMode(enum.StrEnum):
    STRONG = "strong"  # the leader picks a timestamp covering every acknowledged write
    AT = "at"  # at the given timestamp (exact staleness is `at now - d`)
    MAX_STALE = "max_stale"  # the freshest timestamp served without waiting, >= ts (or >= now - stale_ns)
    STALE = "stale"  # exact staleness in one round trip: at now - stale_ns on the serving replica's clock


@attrs.frozen
class KeyWrite:
    key: bytes
    value: bytes | None  # None: delete


@attrs.frozen
class NodeInfo:
    id: str
    host: str
    port: int


@attrs.frozen
class TabletInfo:
    id: str
    start: bytes
    end: bytes | None
    replicas: tuple[str, ...] = attrs.field(converter=tuple)
    leader: str | None  # the answering node's best knowledge


@attrs.frozen
class TabletMapRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off


@attrs.frozen
class TabletMapReply:
    cluster_id: str
    max_offset_ns: int
    nodes: tuple[NodeInfo, ...] = attrs.field(converter=tuple)
    tablets: tuple[TabletInfo, ...] = attrs.field(converter=tuple)
    # cluster.toml's size limits (txn/api/limits.py): the client refuses larger writes before sending.
    max_key_bytes: int = 4 << 10
    max_value_bytes: int = 4 << 20


@attrs.frozen
class WriteRequest:
    tablet_id: str
    writes: tuple[KeyWrite, ...] = attrs.field(converter=tuple)
    timeout_ns: int

    def __str__(self) -> str:
        return f"WriteRequest {self.tablet_id} keys={len(self.writes)}"


@attrs.frozen
class WriteReply:
    ts: Timestamp
    commit_wait_ns: int  # how long the ack waited for commit-wait after the write was chosen


@attrs.frozen
class ReadRequest:
    tablet_id: str
    key: bytes
    mode: ReadMode
    ts: Timestamp | None
    timeout_ns: int
    # STALE, or MAX_STALE without ts: how far behind the serving replica's clock
    # (its now - stale_ns; one round trip instead of asking a node for now first).
    stale_ns: int = 0


@attrs.frozen
class ReadReply:
    ts: Timestamp  # the timestamp the read was served at
    value: bytes | None
    version_ts: Timestamp | None  # commit timestamp of the version read
    served_by: str


@attrs.frozen
class ScanRequest:
    tablet_id: str
    start: bytes
    end: bytes | None
    mode: ReadMode
    ts: Timestamp | None
    limit: int
    timeout_ns: int


@attrs.frozen
class Row:
    key: bytes
    value: bytes
    version_ts: Timestamp


@attrs.frozen
class ScanReply:
    ts: Timestamp
    rows: tuple[Row, ...] = attrs.field(converter=tuple)
    served_by: str
    # The node cut the reply short of the requested limit (its per-reply row and
    # byte bounds, txn/api/limits.py): ask again from just past the last row.
    more: bool = False


register_classes(
    KeyWrite, NodeInfo, TabletInfo, TabletMapRequest, TabletMapReply, WriteRequest, WriteReply,
    ReadRequest, ReadReply, ScanRequest, Row, ScanReply,
)
