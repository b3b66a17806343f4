"""One framed TCP connection: batched writes, frame reads, handshake I/O.

Role: the byte-level half of the transport, shared by node-to-node links,
the listener's inbound connections and client connections. Inputs: a trio
stream; frames to write. Outputs: frame payloads read, in order.

Invariants:
- Exactly one task writes to the stream (`run_writer`): `write()` only
  appends to the outgoing queue and wakes it, never blocks, and the writer
  sends the frames queued since its last write, up to `WRITE_BATCH_BYTES`
  at a time, as one `send_all` (one syscall for many small frames under
  load; a large frame goes alone, never copied into a joined buffer). On
  a plain TCP stream that send is `send_plain` (txn/net/socket_send.py):
  write(2) on the socket, waiting (a schedule point) only while the
  kernel takes nothing, where trio's `send_all` also yields after every
  send that succeeded (under 64 writing clients that was 0.4 of the
  nodes' 1.0 writer steps per write). A `TlsStream` sends its records
  the same way.
  The one exception, on a plain TCP stream or a `TlsStream`
  (txn/net/tls_stream.py; never the simulated network's, nor any other
  stream a connection is given): a frame its caller marks `alone` (nothing
  to batch it with:
  a request with no other call waiting and at most one answered by the
  last read (`frames_last_read`), the reply to the only request
  being served, the reply to the last of the frames read together),
  written while the writer is parked with nothing queued (so no send is in
  flight), is handed to the kernel at once by a non-blocking write;
  whatever the kernel does not take is queued for the writer, in front of
  anything later (on TLS the frame is encrypted first, and the records the
  kernel did not take stay in the TlsStream, which sends them before
  anything else; an empty frame queued wakes the writer to do so). The
  stream's type is read at each write: a client connection's becomes TLS
  after its handshake. That saves the writer's wake-up, one event loop pass,
  on each request and reply of a lone client (ARCHITECTURE.md, one
  client's latency); a busy connection's frames are batched as before (a
  rule by time since the last frame instead, which sent the first frame
  of every burst at once, cost a quarter of the reads per second at 64
  clients). The socket's fd is read from the socket at each write (-1
  once closed), never kept, so a closed connection's fd number, reused by
  a file, is never written to.
  `queued_bytes()` counts every frame written and not yet fully handed to
  the stream, the batch being sent included, so the bounds callers keep on
  it (txn/net/peer_links.py, txn/net/transport.py) bound this memory. Not
  counted: the records of one lone frame a `TlsStream` holds because the
  kernel did not take them (at most one frame per connection: nothing
  else goes around the writer while they wait).
- Frames are read through `FrameDecoder`, so an oversized length prefix is
  refused before its body is buffered; an EOF inside a frame is reported as
  a truncated frame (ProtocolError), never silently dropped.
- A client connection (the transport sets `budget`, txn/net/input_budget.py)
  reads at most `CLIENT_RECEIVE_BYTES` at a time, only when the node-wide
  input budget allows, and keeps its charge there current: its incomplete
  frame, the frames of the batch being dispatched, and `request_bytes` (its
  requests being served; the transport adds and removes them and calls
  `recharge`). With `frame_timeout_s`, a frame that is still incomplete
  that long after its first byte arrived (time spent waiting for budget not
  counted) raises ProtocolError: a client trickling a frame cannot hold its
  buffer forever.
- `close()` is idempotent and wakes whoever waits in `wait_closed()`.
- `last_received_s` / `last_written_s` (trio time) move on every chunk of
  bytes read and every frame queued; the transport's silence deadline and
  keepalives (txn/net/transport.py) read them.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Optional

import trio

from txn import wire
from txn.net.input_budget import InputBudget
from txn.net.socket_send import send_plain
from txn.net.tls_stream import TlsStream
from txn.wire import FrameDecoder, ProtocolError

RECEIVE_BYTES = 256 << 10
# A client connection's read: small, since every connection reading at once may each bring
# this much past the node-wide input budget (1,024 connections x 64 KiB = 64 MiB at most).
CLIENT_RECEIVE_BYTES = 64 << 10
WRITE_BATCH_BYTES = 1 << 20


class Connection:
    """A framed, handshake-aware wrapper around a trio stream."""

    def __init__(self, stream: trio.SocketStream, label: str, max_frame_bytes: int,
                 first_frame_max_bytes: Optional[int] = None) -> None:
        self.stream = stream
        self.label = label
        self.peer_id: Optional[str] = None
        self.decoder = FrameDecoder(max_frame_bytes, first_frame_max_bytes=first_frame_max_bytes)
        self._out: deque[bytes] = deque()
        self._out_bytes = 0  # bytes in _out and in the batch being sent
        self.requests_in_flight = 0  # inbound requests being served (the transport counts them)
        self.frames_last_read = 0  # how many frames the last read brought (a client's lone-request rule)
        self.request_done = trio.lowlevel.ParkingLot()
        self.budget: Optional[InputBudget] = None  # client connections: the node-wide input budget
        self.request_bytes = 0  # frame bytes of inbound requests being served (the transport counts them)
        self._batch_bytes = 0  # frame bytes read and not yet dispatched
        self.frame_started_s: Optional[float] = None  # when the incomplete frame's first byte arrived
        self.frame_paused_s = 0.0  # of the time since, spent waiting for input budget
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

    def write(self, frame: bytes, *, alone: bool = False) -> None:
        """Queue one frame (already length-prefixed), or send it at once if it is `alone` (the
        only exchange in flight on this connection) and nothing is being sent (module
        docstring); never blocks."""
        self.last_written_s = trio.current_time()
        stream = self.stream  # read at each write: a client connection's becomes TLS after its handshake
        # A writer in the lot parked with nothing queued and was not woken since: no send is in flight.
        if alone and self._writer_lot and not self._out:
            if type(stream) is trio.SocketStream:
                fd = stream.socket.fileno()
                if fd >= 0:
                    try:
                        sent = os.write(fd, frame)
                    except OSError:  # full (BlockingIOError) or broken: the writer sends it, or meets the error
                        sent = 0
                    if sent == len(frame):
                        return
                    frame = frame[sent:]
            elif type(stream) is TlsStream and stream.try_send_now(frame):
                if not stream.has_unsent:
                    return
                frame = b""  # the stream holds the rest of its records: the writer's send_all(b"") sends them
        self._out.append(frame)
        self._out_bytes += len(frame)
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
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            stream = self.stream
            if type(stream) is trio.SocketStream:
                await send_plain(stream, data)
            else:
                await stream.send_all(data)
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

    async def read_batches(self, frame_timeout_s: Optional[float] = None) -> Any:
        """Yield lists of frame payloads as they arrive; ends at a clean EOF."""
        if self._ready:
            batch = list(self._ready)
            self._ready.clear()
            yield batch
        receive_bytes = RECEIVE_BYTES if self.budget is None else CLIENT_RECEIVE_BYTES
        self._track_frame_start(False)  # a frame begun in the handshake's read
        self.recharge()
        while True:
            if self.budget is not None:
                waited_s = await self.budget.wait_to_read(self)
                if self.frame_started_s is not None:
                    self.frame_paused_s += waited_s
            data = await self._receive(receive_bytes, frame_timeout_s)
            if not data:
                if self.decoder.buffered_bytes():
                    raise ProtocolError(self.decoder.describe_truncation())
                return
            self.last_received_s = trio.current_time()
            was_partial = self.decoder.buffered_bytes() > 0
            frames = self.decoder.feed(data)
            self._track_frame_start(was_partial and not frames)
            self._batch_bytes = sum(map(len, frames))
            self.recharge()
            if frames:
                self.frames_last_read = len(frames)
                yield frames
            self._batch_bytes = 0
            self.recharge()

    async def _receive(self, receive_bytes: int, frame_timeout_s: Optional[float]) -> bytes:
        if frame_timeout_s is None or self.frame_started_s is None:
            return await self.stream.receive_some(receive_bytes)
        with trio.move_on_at(self.frame_started_s + self.frame_paused_s + frame_timeout_s):
            return await self.stream.receive_some(receive_bytes)
        raise ProtocolError(f"frame incomplete {frame_timeout_s:g}s after its first byte "
                            f"({self.decoder.describe_progress()} in)")

    def _track_frame_start(self, same_frame: bool) -> None:
        """After a read: the incomplete frame now held began earlier (same_frame), now, or there is none."""
        if not self.decoder.buffered_bytes():
            self.frame_started_s = None
        elif not same_frame or self.frame_started_s is None:
            self.frame_started_s, self.frame_paused_s = trio.current_time(), 0.0

    def recharge(self) -> None:
        """Tell the input budget what this connection holds now (client connections only)."""
        if self.budget is not None:
            partial = self.decoder.buffered_bytes()
            other = self._batch_bytes + self.request_bytes
            self.budget.charge(self, partial + other, self.frame_started_s, only_partial=not other)

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
        if self.budget is not None:
            self.budget.forget(self)
            self.budget = None
        with trio.CancelScope(shield=True):
            with trio.move_on_after(0.2):
                await self.stream.aclose()
