"""`send_plain`: a trio socket stream's `send_all` without its schedule point after a send.

Role: the send of a plain-TCP connection's writer (txn/net/connection.py) and of a
`TlsStream`'s ciphertext (txn/net/tls_stream.py). trio's `SocketStream.send_all` yields
after every send that succeeded: one more task step per send for the writer, which parks
right after, or sends what was queued meanwhile. Here the bytes go by write(2) on the socket's
descriptor, and the task waits (a schedule point) only while the kernel takes nothing.

Invariants:
- Cancellation is checked first, as by every trio operation: a cancelled caller raises
  before anything is written; it does not yield otherwise.
- Errors are trio's: OSError other than "would block" raises `trio.BrokenResourceError`
  from it, a closed socket `trio.ClosedResourceError`.
- The descriptor is read from the socket at each write (-1 once closed), never kept, so a
  closed socket's number, reused by a file, is never written to.
"""

from __future__ import annotations

import os

import trio


async def send_plain(stream: trio.SocketStream, data: bytes) -> None:
    """`stream.send_all(data)` without its schedule point after a send that succeeded (module
    docstring)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    sock = stream.socket
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket was already closed")
        try:
            sent += os.write(fd, view[sent:])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
        except OSError as error:
            raise trio.BrokenResourceError(f"socket connection broken: {error}") from error
