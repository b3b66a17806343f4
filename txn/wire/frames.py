"""Framing: a byte stream <-> frame payloads.

Role: a frame is a 4-byte big-endian length, then that many payload bytes.
`FrameDecoder` refuses a length above its limit (default 16 MiB) as soon as
the 4 length bytes are in, before any of the body is buffered. Pure.
"""

from __future__ import annotations

from typing import Optional

from txn.wire.codec import ProtocolError

MAX_FRAME_BYTES_DEFAULT = 16 << 20
FRAME_HEADER_BYTES = 4


def encode_frame(payload: bytes) -> bytes:
    """4-byte big-endian length, then the payload."""
    return len(payload).to_bytes(FRAME_HEADER_BYTES, "big") + payload


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    `feed(data)` returns the payloads completed so far. A length prefix above
    `max_frame_bytes` raises ProtocolError as soon as its 4 bytes arrive.
    After an error the decoder is unusable (the connection is to be closed).
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT, *,
                 first_frame_max_bytes: Optional[int] = None) -> None:
        """`first_frame_max_bytes`: a smaller limit for the first frame only (an inbound
        connection's handshake, before anyone is authenticated)."""
        if max_frame_bytes <= 0 or (first_frame_max_bytes is not None and first_frame_max_bytes <= 0):
            raise ValueError(f"frame limits must be positive: {max_frame_bytes!r}, {first_frame_max_bytes!r}")
        self.max_frame_bytes = max_frame_bytes
        self._first_frame_max_bytes = first_frame_max_bytes
        self._buffer = bytearray()
        self._failed: Optional[str] = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed is not None:
            raise ProtocolError(self._failed)
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        position = 0
        available = len(buffer)
        while available - position >= FRAME_HEADER_BYTES:
            length = int.from_bytes(buffer[position:position + FRAME_HEADER_BYTES], "big")
            limit = self.max_frame_bytes
            if self._first_frame_max_bytes is not None:
                limit = self._first_frame_max_bytes
            if length > limit:
                what = "handshake frame" if self._first_frame_max_bytes is not None else "frame"
                self._failed = f"{what} length {length} bytes exceeds the limit of {limit} bytes"
                buffer.clear()
                raise ProtocolError(self._failed)
            end = position + FRAME_HEADER_BYTES + length
            if end > available:
                break
            frames.append(bytes(buffer[position + FRAME_HEADER_BYTES:end]))
            self._first_frame_max_bytes = None
            position = end
        if position:
            del buffer[:position]
        return frames

    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame held (nonzero at EOF means a truncated frame)."""
        return len(self._buffer)

    def describe_truncation(self) -> str:
        """What an EOF now would have cut short, for the log line."""
        return f"truncated frame: connection closed after {self.describe_progress()}"

    def describe_progress(self) -> str:
        """How much of the incomplete frame is in: "N of M payload bytes" (or length bytes)."""
        held = len(self._buffer)
        if held < FRAME_HEADER_BYTES:
            return f"{held} of {FRAME_HEADER_BYTES} length bytes"
        length = int.from_bytes(self._buffer[:FRAME_HEADER_BYTES], "big")
        return f"{held - FRAME_HEADER_BYTES} of {length} payload bytes"
