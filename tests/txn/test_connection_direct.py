"""A frame alone on a plain-TCP connection goes to the kernel at once, and the writer's own
sends (`send_plain`, txn/net/socket_send.py) take one task step each, lose no byte and fail as
trio's would (txn/net/connection.py).

Over real loopback sockets: the receiving end is a plain blocking socket read
without letting the event loop run, so a frame that went through the writer
task (which cannot run before the test awaits) is not there yet.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
import trio.testing

from txn.net.connection import Connection


async def connected_pair() -> tuple[Connection, socket.socket]:
    """A Connection on a trio TCP stream, and the other end as a blocking stdlib socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        stream = await trio.open_tcp_stream("127.0.0.1", listener.getsockname()[1])
        peer, _ = listener.accept()
    peer.settimeout(10.0)
    return Connection(stream, "test", max_frame_bytes=1 << 20), peer


def recv_exactly(peer: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = peer.recv(min(count - len(data), 1 << 20))
        assert chunk, "the connection closed early"
        data += chunk
    return bytes(data)


@asynccontextmanager
async def parked_writer(connection: Connection) -> AsyncIterator[None]:
    """The connection's writer running, parked with nothing queued; stopped on leaving."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run_writer)
        await trio.sleep(0.001)
        assert connection.queued_frames() == 0
        yield
        nursery.cancel_scope.cancel()


async def test_a_frame_alone_reaches_the_peer_before_the_writer_runs() -> None:
    connection, peer = await connected_pair()
    with peer:
        async with parked_writer(connection):
            connection.write(b"first frame", alone=True)
            # No checkpoint since the write: only a direct write can have put it on the wire.
            assert recv_exactly(peer, 11) == b"first frame"
            assert connection.queued_bytes() == 0
        await connection.stream.aclose()


async def test_frames_not_alone_are_batched_by_the_writer() -> None:
    connection, peer = await connected_pair()
    with peer:
        async with parked_writer(connection):
            connection.write(b"one")
            connection.write(b"two")
            assert connection.queued_frames() == 2  # other exchanges in flight: queued, one send later
            assert await trio.to_thread.run_sync(recv_exactly, peer, 6) == b"onetwo"  # the writer's turn
        await connection.stream.aclose()


async def test_what_the_kernel_does_not_take_is_sent_by_the_writer_in_order() -> None:
    connection, peer = await connected_pair()
    big = bytes(range(256)) * (64 << 10)  # 16 MiB: more than loopback's socket buffers take at once
    with peer:
        async with parked_writer(connection):
            connection.write(big, alone=True)
            taken = len(big) - connection.queued_bytes()
            assert 0 < taken < len(big)  # part went at once, the rest waits
            await trio.sleep(0.001)  # the writer sends what fits, then waits mid-send
            head = recv_exactly(peer, taken)  # in the kernel already; its room is free again
            # Alone, and room to write, but the writer is mid-send: this frame must queue behind.
            connection.write(b"after", alone=True)
            rest = await trio.to_thread.run_sync(recv_exactly, peer, len(big) + 5 - len(head))
            assert head + rest == big + b"after"
        await connection.stream.aclose()


async def test_a_stream_replaced_by_tls_is_never_written_around() -> None:
    connection, peer = await connected_pair()
    with peer:
        async with parked_writer(connection):
            raw = connection.stream
            connection.stream, _ = trio.testing.memory_stream_pair()  # as TLS wraps the socket after the handshake
            connection.write(b"for the wrapping stream only", alone=True)
            assert connection.queued_frames() == 1  # not sent around the wrapper on the raw socket
        await raw.aclose()


async def test_a_closed_connection_never_writes_to_its_old_descriptor_number() -> None:
    connection, peer = await connected_pair()
    with peer:
        async with parked_writer(connection):
            old_fd = connection.stream.socket.fileno()
            connection.stream.socket.close()  # under the parked writer: only the fd check stands
            with tempfile.TemporaryFile() as file:
                os.dup2(file.fileno(), old_fd)  # a file now holds the closed socket's number
                try:
                    connection.write(b"must not land in the file", alone=True)
                    assert os.pread(old_fd, 100, 0) == b""
                finally:
                    os.close(old_fd)
            assert connection.queued_frames() == 1  # queued for a writer that will meet the closed socket


class WriterSteps(trio.abc.Instrument):
    """Counts the task steps of the tasks running `Connection.run_writer`."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.coro.cr_code.co_name == "run_writer":
            self.steps += 1


async def writer_steps_for_five_frames(connection: Connection, peer: socket.socket) -> int:
    """The writer's task steps for five frames queued one at a time, each read by `peer` (which
    reads plaintext: a blocking stdlib socket, or its TLS wrapping) before the next is queued."""
    counter = WriterSteps()
    async with parked_writer(connection):
        trio.lowlevel.add_instrument(counter)
        try:
            for number in range(5):
                connection.write(b"frame %d" % number)
                assert await trio.to_thread.run_sync(recv_exactly, peer, 7) == b"frame %d" % number
                await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(counter)
    return counter.steps


async def test_the_writer_sends_a_queued_frame_in_one_task_step() -> None:
    # trio's send_all yields after a send that succeeded: one more writer step per send.
    connection, peer = await connected_pair()
    with peer:
        assert await writer_steps_for_five_frames(connection, peer) == 5
        await connection.stream.aclose()


async def test_the_writer_sends_more_than_the_kernel_takes_at_once_in_order() -> None:
    connection, peer = await connected_pair()
    big = bytes(range(256)) * (64 << 10)  # 16 MiB: the writer's write(2) takes part, then waits for room
    with peer:
        async with parked_writer(connection):
            connection.write(big)
            connection.write(b"next")
            received = await trio.to_thread.run_sync(recv_exactly, peer, len(big) + 4)
            assert received == big + b"next"
            assert connection.queued_bytes() == 0
        await connection.stream.aclose()


async def test_a_peer_gone_is_a_broken_stream_for_the_writer() -> None:
    connection, peer = await connected_pair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends a reset
    peer.close()
    await trio.sleep(0.01)
    broken: list[BaseException] = []

    async def keep_writing() -> None:
        while True:
            connection.write(b"x" * 1000)
            await trio.sleep(0.001)

    with trio.fail_after(10):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_writing)
                await connection.run_writer()
        except* trio.BrokenResourceError as group:
            broken.extend(group.exceptions)
    assert len(broken) == 1 and isinstance(broken[0].__cause__, OSError)
    await connection.stream.aclose()


async def test_the_writer_meets_a_closed_socket_as_closed() -> None:
    connection, peer = await connected_pair()
    with peer:
        connection.stream.socket.close()
        connection.write(b"after close")
        with trio.fail_after(10):
            try:
                await connection.run_writer()
            except trio.ClosedResourceError:
                pass
            else:
                raise AssertionError("run_writer returned")
