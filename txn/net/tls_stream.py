"""TLS 1.3 over a trio socket stream, for a connection with one reader and one writer.

Role: the TLS layer under every encrypted `Connection` (txn/net/connection.py): a
node accepting (txn/net/transport.py), a node dialing a peer
(txn/net/peer_links.py), a client (txn/net/client_connection.py). It does what
`trio.SSLStream` did there with about a third of its Python per record
(`chronodb bench rpc`, ARCHITECTURE.md): an `ssl.SSLObject` between two memory
BIOs, driven directly, without the general machinery trio's stream needs for
renegotiation and for several tasks sharing one direction. And it can hand a
lone frame to the kernel from the caller's task (`try_send_now`), as a plain
TCP connection can, so TLS connections take the one-client fast path too.

Invariants:
- TLS 1.3 only (the contexts, txn/net/tls.py): no renegotiation, so a write
  never needs a read and a read never needs a send before it returns. What
  OpenSSL writes while reading (the answer to a peer's KeyUpdate) waits in the
  outgoing BIO and leaves with the next send.
- The SSLObject is only called between awaits (trio runs one task at a time),
  so each record is in the outgoing BIO in the order OpenSSL made it, and
  bytes leave in that order: a send takes `_unsent` (what `try_send_now` could
  not hand to the kernel) and then everything in the BIO. The writer's
  records go by `send_plain` (txn/net/socket_send.py), without trio's
  schedule point after a send that succeeded: one connection writer step
  per send, as on plain TCP (under 64 writing clients, 0.99 -> 0.60 writer
  steps per write).
- At most one task sends and one receives at a time, as with the socket
  stream under it: a second sender meets BusyResourceError before it
  touches the SSLObject (checked here, since `send_plain` bypasses the
  socket stream's own conflict detector), and the first send goes on.
  `try_send_now` is for a caller that knows no send is in flight (the
  connection's writer is parked with nothing queued).
- Errors are trio's: an `ssl.SSLError` (a bad record, a refused certificate,
  an EOF without close_notify) raises `trio.BrokenResourceError` from it (so
  `tls_reason` reads the OpenSSL reason as before) and breaks the stream; a
  close_notify reads as a clean EOF (b""); after `aclose`, ClosedResourceError.
  A send cancelled or failed part-way breaks the stream (its records left the
  BIO and cannot be sent again); a receive cancelled while waiting for bytes
  loses nothing (bytes read are written into the BIO before the next await).
- A receive reads at most its `max_bytes` of ciphertext from the socket at a
  time, and only when no whole record is buffered, so a connection holds at
  most that plus one partial record (16 KiB) in its incoming BIO: the bound
  a client connection's input budget counts on (txn/net/input_budget.py)
  holds for TLS too.
- A handshake that fails sends nothing more (as trio's: the alert is not
  flushed); `aclose` sends a close_notify only if it can without blocking and
  without a send in flight, then closes the socket.
"""

from __future__ import annotations

import enum
import os
import ssl
from typing import Any, Optional

import trio

from txn.net.socket_send import send_plain

DEFAULT_RECEIVE_BYTES = 64 << 10
HANDSHAKE_RECEIVE_BYTES = 64 << 10
_SSL_ERRORS = (ssl.SSLError, ssl.CertificateError)


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class TlsStream(trio.abc.Stream):
    """An `ssl.SSLObject` driven over `transport_stream` (module docstring)."""

    def __init__(self, transport_stream: trio.SocketStream, context: ssl.SSLContext, *, server_side: bool) -> None:
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._state = _State.OK
        self._handshook = False
        self._sending = False
        self._unsent = b""  # ciphertext try_send_now could not hand to the kernel; sent before anything else

    # ------------------------------------------------------------- handshake and identity

    async def do_handshake(self) -> None:
        """Run the TLS handshake to its end (the caller bounds it with a deadline)."""
        self._check()
        while not self._handshook:
            try:
                self._ssl.do_handshake()
                self._handshook = True
            except ssl.SSLWantReadError:
                pass
            except _SSL_ERRORS as error:
                self._state = _State.BROKEN
                raise trio.BrokenResourceError from error
            out = self._outgoing.read()
            if out:
                await self._send_raw(out)
            if not self._handshook:
                await self._receive_raw(HANDSHAKE_RECEIVE_BYTES)

    def getpeercert(self) -> Optional[dict[str, Any]]:
        """The peer's verified certificate, as `ssl.SSLObject.getpeercert()` gives it."""
        return self._ssl.getpeercert()

    # ------------------------------------------------------------- sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check()
        if self._sending:  # `send_plain` has no conflict detector of its own, as trio's send_all had
            raise trio.BusyResourceError("another task is already sending on this TLS stream")
        if data:
            try:
                self._ssl.write(data)
            except _SSL_ERRORS as error:
                self._state = _State.BROKEN
                raise trio.BrokenResourceError from error
        out = self._outgoing.read()
        if self._unsent:
            out, self._unsent = self._unsent + out, b""
        if out:
            await self._send_raw(out)
        else:
            await trio.lowlevel.checkpoint()

    def try_send_now(self, data: bytes) -> bool:
        """Encrypt `data` and hand it to the kernel without blocking. The caller knows no send is in
        flight. False: nothing was done (queue `data` for the writer as usual). True: `data` is
        taken; if `has_unsent`, part of it is still here and the next `send_all` (even of b"") sends it."""
        if self._state is not _State.OK or not self._handshook or self._unsent or self._sending or not data:
            return False
        fd = self.transport_stream.socket.fileno()
        if fd < 0:
            return False
        try:
            self._ssl.write(data)
        except _SSL_ERRORS:
            return False  # nothing was queued; the writer's send_all meets the error again and reports it
        out = self._outgoing.read()
        try:
            sent = os.write(fd, out)
        except OSError:  # full (BlockingIOError) or broken: the writer's send_all sends it, or meets the error
            sent = 0
        self._unsent = out[sent:]
        return True

    @property
    def has_unsent(self) -> bool:
        return bool(self._unsent)

    @property
    def buffered_ciphertext_bytes(self) -> int:
        """Bytes read from the socket and not yet decrypted (bounded: module docstring)."""
        return self._incoming.pending

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    # ------------------------------------------------------------- receiving

    async def receive_some(self, max_bytes: Optional[int] = None) -> bytes:
        """Some plaintext (at most `max_bytes`, all that is decrypted without waiting), or b"" at
        the peer's close_notify."""
        self._check()
        limit = DEFAULT_RECEIVE_BYTES if max_bytes is None else max_bytes
        while True:
            try:
                data = self._ssl.read(limit)
            except ssl.SSLWantReadError:
                await self._receive_raw(limit)
                continue
            except ssl.SSLZeroReturnError:
                return b""
            except _SSL_ERRORS as error:
                self._state = _State.BROKEN
                raise trio.BrokenResourceError from error
            if not data or len(data) >= limit or not self._incoming.pending:
                return data
            chunks = [data]  # more records already here: decrypt them too (one call per record otherwise)
            size = len(data)
            while size < limit:
                try:
                    more = self._ssl.read(limit - size)
                except ssl.SSLError:  # want-read, or an error the next call reports
                    break
                if not more:
                    break
                chunks.append(more)
                size += len(more)
            return b"".join(chunks)

    # ------------------------------------------------------------- closing

    async def aclose(self) -> None:
        """Send a close_notify if that cannot block, then close the socket. Idempotent."""
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        graceful = self._state is _State.OK and self._handshook and not self._sending
        self._state = _State.CLOSED
        if graceful:
            try:
                self._ssl.unwrap()
            except _SSL_ERRORS:  # want-read (no answer awaited) or already broken: send what there is
                pass
            out = self._unsent + self._outgoing.read()
            fd = self.transport_stream.socket.fileno()
            if out and fd >= 0:
                try:
                    os.write(fd, out)
                except OSError:
                    pass
        await self.transport_stream.aclose()

    # ------------------------------------------------------------- internals

    def _check(self) -> None:
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError("this TLS stream broke earlier")
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("this TLS stream is closed")

    async def _send_raw(self, out: bytes) -> None:
        self._sending = True
        try:
            await send_plain(self.transport_stream, out)
        except BaseException:
            if self._state is _State.OK:
                self._state = _State.BROKEN
            raise
        finally:
            self._sending = False

    async def _receive_raw(self, max_bytes: int) -> None:
        data = await self.transport_stream.receive_some(max_bytes)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()  # the next SSL call raises SSLEOFError, or reads the close_notify
