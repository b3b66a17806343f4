"""Messaging frames (type ids 1-99): handshake, envelope, handler errors, ping, keepalive.

Role: what every connection carries around the payload messages. The first
frame each way is a `Handshake`; every later frame is an `Envelope` carrying
the sender's HLC reading, a kind, a request id and a registered body, or a
bare `Keepalive` that a node sends on an otherwise idle node-to-node link so
that the other side can tell a quiet peer from a silent (partitioned,
stalled) one. Pure.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

import attrs

from hlc.timestamp import Timestamp
from txn.wire.codec import ProtocolError, _decode_tagged, _enum_spec, _timestamp_decoder, register_classes, to_plain


@attrs.frozen
class Handshake:
    """First frame each way on a connection. cluster_id None: a client asking."""

    protocol_version: int
    cluster_id: Optional[str]
    speaker: str  # a node id, or "client"

    def __str__(self) -> str:
        return f"Handshake v{self.protocol_version} cluster={self.cluster_id!r} speaker={self.speaker!r}"


@attrs.frozen
class HandshakeRefused:
    """Sent instead of a Handshake reply before closing: says why."""

    reason: str

    def __str__(self) -> str:
        return f"HandshakeRefused {self.reason!r}"


class Kind(enum.IntEnum):
    ONE_WAY = 0
    REQUEST = 1
    RESPONSE = 2
    ERROR = 3


@attrs.frozen
class HandlerError:
    """Body of an ERROR envelope: the remote handler's failure, as text."""

    text: str

    def __str__(self) -> str:
        return f"HandlerError {self.text!r}"


@attrs.frozen
class Envelope:
    """Every frame after the handshake: sender's HLC reading, kind, request id, body.

    request_id is 0 for ONE_WAY; a RESPONSE/ERROR repeats its REQUEST's id.
    Hand-written to_wire/from_wire: this is the hot path.
    """

    ts: Timestamp
    kind: Kind
    request_id: int
    body: object

    def to_wire(self) -> list[Any]:
        return [self.ts.to_bytes(), int(self.kind), self.request_id, to_plain(self.body)]

    @classmethod
    def from_wire(cls, fields: list[Any]) -> "Envelope":
        if len(fields) != 4:
            raise ProtocolError(f"Envelope: field count: expected 4, got {len(fields)}")
        ts, kind, request_id, body = fields
        if type(request_id) is not int or request_id < 0:
            raise ProtocolError(f"field request_id of Envelope: expected a non-negative int, got {request_id!r}")
        return cls(_ENVELOPE_TS(ts), _ENVELOPE_KIND(kind), request_id, _decode_tagged(body, "field body of Envelope"))

    def __str__(self) -> str:
        return f"{self.kind.name} #{self.request_id} ts={self.ts} {self.body}"

    @classmethod
    def wire_examples(cls) -> tuple["Envelope", ...]:
        """Instances for the round-trip tests (custom to_wire has no derived spec)."""
        ts = Timestamp(1_800_000_000_000_000_000, 3)
        return (
            cls(ts, Kind.ONE_WAY, 0, Ping(b"")),
            cls(ts, Kind.REQUEST, 7, Ping(b"x" * 100)),
            cls(Timestamp.MAX, Kind.RESPONSE, 2**63, Pong(b"\x00")),
            cls(Timestamp.MIN, Kind.ERROR, 1, HandlerError("boom")),
        )


_ENVELOPE_TS = _timestamp_decoder("field ts of Envelope")
_ENVELOPE_KIND = _enum_spec(Kind, "field kind of Envelope", "kind").decode


@attrs.frozen
class Ping:
    """A request with opaque bytes (tests, benchmarks, liveness probes)."""

    payload: bytes

    def __str__(self) -> str:
        return f"Ping {len(self.payload)}B"


@attrs.frozen
class Pong:
    """The answer to a Ping."""

    payload: bytes

    def __str__(self) -> str:
        return f"Pong {len(self.payload)}B"


@attrs.frozen
class Keepalive:
    """A bare frame on an idle node-to-node link: "still here". Carries no clock
    reading and reaches no handler; only the transport's silence deadline sees it."""

    def __str__(self) -> str:
        return "Keepalive"


register_classes(Handshake, HandshakeRefused, Envelope, HandlerError, Ping, Pong, Keepalive)
