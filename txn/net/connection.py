"""One framed TCP connection: batched writes, frame reads, handshake I/O.

Role: the byte-level half of the transport, shared by node-to-node links,
the listener's inbound connections and client connections. Inputs: a trio
stream; frames to write. Outputs: frame payloads read, in order.

Invariants:
- Exactly one task writes to the stream (`run_writer`): `write()` only
  appends to the outgoing queue and wakes it, never blocks, and the writer
  sends the frames queued since its last write, up to `WRITE_BATCH_BYTES`
  at a time, as one `send_all` (one syscall for many small frames under
  load; a large frame goes alone, never copied into a joined buffer).
  `queued_bytes()` counts every frame written and not yet fully handed to
  the stream, the batch being sent included, so the bounds callers keep on
  it (txn/net/peer_links.py, txn/net/transport.py) bound this memory.
- Frames are read through `FrameDecoder`, so an oversized length prefix is
  refused before its body is buffered; an EOF inside a frame is reported as
  a truncated frame (ProtocolError), never silently dropped.
- `close()` is idempotent and wakes whoever waits in `wait_closed()`.
- `last_received_s` / `last_written_s` (trio time) move on every chunk of
  bytes read and every frame queued; the transport's silence deadline and
  keepalives (txn/net/transport.py) read them.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import trio

from txn import wire
from txn.wire import FrameDecoder, ProtocolError

RECEIVE_BYTES = 256 << 10
WRITE_BATCH_BYTES = 1 << 20


class Connection:
    """A framed, handshake-aware wrapper around a trio stream."""

    def __init__(self, stream: trio.SocketStream, label: str, max_frame_bytes: int) -> None:
        self.stream = stream
        self.label = label
        self.peer_id: Optional[str] = None
        self.decoder = FrameDecoder(max_frame_bytes)
        self._out: deque[bytes] = deque()
        self._out_bytes = 0  # bytes in _out and in the batch being sent
        self.requests_in_flight = 0  # inbound requests being served (the transport counts them)
        self.request_done = trio.lowlevel.ParkingLot()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._ready: deque[bytes] = deque()
        self._closed = trio.Event()
        now_s = trio.current_time()
        self.last_received_s = now_s
        self.last_written_s = now_s

    @staticmethod
    def describe_address(stream: trio.SocketStream) -> str:
        try:
            host, port = stream.socket.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "unknown address"

    # ------------------------------------------------------------- writing

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def queued_frames(self) -> int:
        return len(self._out)

    def queued_bytes(self) -> int:
        """Bytes written to this connection and not yet handed to the stream."""
        return self._out_bytes

    def write(self, frame: bytes) -> None:
        """Queue one frame (already length-prefixed); never blocks."""
        self._out.append(frame)
        self._out_bytes += len(frame)
        self.last_written_s = trio.current_time()
        if self._writer_lot:
            self._writer_lot.unpark()

    def write_message(self, msg: Any) -> None:
        self.write(wire.encode_frame(wire.encode(msg)))

    async def flush(self) -> None:
        """Send what is queued now (handshake phase, before run_writer starts)."""
        if self._out:
            batch, self._out, self._out_bytes = list(self._out), deque(), 0
            await self.stream.send_all(b"".join(batch))

    async def run_writer(self) -> None:
        """Send queued frames, batched, until the connection closes or breaks."""
        while True:
            if not self._out:
                await self._writer_lot.park()
                continue
            batch = [self._out.popleft()]
            size = len(batch[0])
            while self._out and size + len(self._out[0]) <= WRITE_BATCH_BYTES:
                batch.append(self._out.popleft())
                size += len(batch[-1])
            await self.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
            self._out_bytes -= size

    # ------------------------------------------------------------- reading

    async def read_frame(self) -> Optional[bytes]:
        """The next frame payload, or None at a clean EOF between frames."""
        while not self._ready:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                if self.decoder.buffered_bytes():
                    raise ProtocolError(self.decoder.describe_truncation())
                return None
            self.last_received_s = trio.current_time()
            self._ready.extend(self.decoder.feed(data))
        return self._ready.popleft()

    async def read_batches(self) -> Any:
        """Yield lists of frame payloads as they arrive; ends at a clean EOF."""
        if self._ready:
            batch = list(self._ready)
            self._ready.clear()
            yield batch
        while True:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                if self.decoder.buffered_bytes():
                    raise ProtocolError(self.decoder.describe_truncation())
                return
            self.last_received_s = trio.current_time()
            frames = self.decoder.feed(data)
            if frames:
                yield frames

    async def read_message(self) -> Optional[Any]:
        payload = await self.read_frame()
        return None if payload is None else wire.decode(payload)

    # ------------------------------------------------------------- closing

    def close(self) -> None:
        """Mark closed and wake waiters; the owner's nursery closes the socket."""
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self) -> None:
        self._closed.set()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(0.2):
                await self.stream.aclose()
