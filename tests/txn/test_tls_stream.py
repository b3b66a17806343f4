"""TlsStream (txn/net/tls_stream.py) against independent TLS implementations, over real loopback TCP.

The other end is either the standard library's blocking `ssl.SSLSocket`, read
in this thread without letting the event loop run (so a frame that went
through a connection's writer task, which cannot run before the test awaits,
is not there yet), or trio's own `trio.SSLStream`.
"""

from __future__ import annotations

import os
import random
import socket
import ssl

import pytest
import trio
import trio.testing

from tests.txn.test_connection_direct import parked_writer, recv_exactly, writer_steps_for_five_frames
from tools.bench_tls import tcp_pair
from txn.net.connection import Connection
from txn.net.tls import ClientTls, NodeTls, ensure_cluster_certs, load_client_tls, load_node_tls, tls_reason
from txn.net.tls_stream import TlsStream


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeTls, ClientTls]:
    directory = tmp_path_factory.mktemp("certs")
    ensure_cluster_certs(directory, [("n1", "127.0.0.1")])
    return load_node_tls(directory, "n1"), load_client_tls(directory)


async def socket_pair() -> tuple[trio.SocketStream, socket.socket]:
    """A trio TCP stream, and the other end as a blocking stdlib socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        stream = await trio.open_tcp_stream("127.0.0.1", listener.getsockname()[1])
        peer, _ = listener.accept()
    peer.settimeout(10.0)
    return stream, peer


async def tls_to_stdlib(certs: tuple[NodeTls, ClientTls]) -> tuple[TlsStream, ssl.SSLSocket]:
    """A client TlsStream, handshaken with a stdlib server socket (the handshake's blocking half in a thread)."""
    node, client = certs
    stream, peer = await socket_pair()
    peer_tls = node.server.wrap_socket(peer, server_side=True, do_handshake_on_connect=False)
    tls = TlsStream(stream, client.context, server_side=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, peer_tls.do_handshake)
        await tls.do_handshake()
    return tls, peer_tls


async def test_a_lone_frame_over_tls_reaches_the_peer_before_the_writer_runs(certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    with peer:
        connection = Connection(tls, "test", max_frame_bytes=1 << 20)
        async with parked_writer(connection):
            connection.write(b"first frame", alone=True)
            # No checkpoint since the write: only a direct write can have put it on the wire.
            assert recv_exactly(peer, 11) == b"first frame"
            assert connection.queued_frames() == 0
            connection.write(b"one")
            connection.write(b"two")
            assert connection.queued_frames() == 2  # not alone: queued for the writer's one send
            assert await trio.to_thread.run_sync(recv_exactly, peer, 6) == b"onetwo"
        await tls.aclose()


async def test_the_writer_sends_a_queued_frame_over_tls_in_one_task_step(certs: tuple[NodeTls, ClientTls]) -> None:
    # The records go by send_plain (txn/net/socket_send.py): no schedule point after a send that
    # succeeded, as trio's SocketStream.send_all has (two writer steps per frame with it).
    tls, peer = await tls_to_stdlib(certs)
    with peer:
        connection = Connection(tls, "test", max_frame_bytes=1 << 20)
        assert await writer_steps_for_five_frames(connection, peer) == 5
        await tls.aclose()


async def test_a_second_sender_is_refused_while_a_send_waits_and_the_first_goes_on(
        certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    big = bytes(range(256)) * (64 << 10)  # 16 MiB: the first send waits for room mid-way
    with peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tls.send_all, big)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await tls.send_all(b"interleaved")
            got = await trio.to_thread.run_sync(recv_exactly, peer, len(big))
        assert got == big  # nothing of the refused send got in between
        await tls.send_all(b"after")  # the stream is still whole
        assert await trio.to_thread.run_sync(recv_exactly, peer, 5) == b"after"
        await tls.aclose()


async def test_what_the_kernel_does_not_take_over_tls_is_sent_by_the_writer_in_order(
        certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    big = bytes(range(256)) * (64 << 10)  # 16 MiB: more than loopback's socket buffers take at once
    with peer:
        connection = Connection(tls, "test", max_frame_bytes=1 << 25)
        async with parked_writer(connection):
            connection.write(big, alone=True)
            assert tls.has_unsent  # part of its records went at once, the rest waits in the stream
            assert connection.queued_frames() == 1  # the writer was woken to send that rest
            connection.write(b"after", alone=True)  # the stream still holds records: this must queue behind
            assert connection.queued_frames() == 2
            got = await trio.to_thread.run_sync(recv_exactly, peer, len(big) + 5)
            assert got == big + b"after"
            assert not tls.has_unsent
        await tls.aclose()


@pytest.mark.parametrize("lean_side", ["server", "client"])
async def test_records_of_every_size_cross_both_ways_with_trios_tls(certs: tuple[NodeTls, ClientTls],
                                                                    lean_side: str) -> None:
    node, client = certs
    seed = int(os.environ.get("TLS_STREAM_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (replay: TLS_STREAM_SEED={seed} pytest {__file__})")
    rng = random.Random(seed)
    sizes = [1, 100, 16383, 16384, 16385, 1 << 20] + [rng.randrange(1, 300_000) for _ in range(20)]
    rng.shuffle(sizes)
    left, right = await tcp_pair()
    if lean_side == "server":
        server: trio.abc.Stream = TlsStream(left, node.server, server_side=True)
        other: trio.abc.Stream = trio.SSLStream(right, client.context, server_side=False)
    else:
        server = trio.SSLStream(left, node.server, server_side=True)
        other = TlsStream(right, client.context, server_side=False)

    async def pump(sender: trio.abc.Stream, receiver: trio.abc.Stream) -> None:
        expected = b"".join(rng.randbytes(size) for size in sizes)
        received = bytearray()
        async with trio.open_nursery() as nursery:
            async def send() -> None:
                offset = 0
                for size in sizes:
                    await sender.send_all(expected[offset:offset + size])
                    offset += size
            nursery.start_soon(send)
            while len(received) < len(expected):
                chunk = await receiver.receive_some(1 << 16)
                assert chunk, f"EOF after {len(received)} of {len(expected)} bytes (seed {seed})"
                received += chunk
        assert bytes(received) == expected, f"seed {seed}"

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await other.do_handshake()
        async with trio.open_nursery() as nursery:  # both directions at once
            nursery.start_soon(pump, server, other)
            nursery.start_soon(pump, other, server)
        await server.aclose()
        assert await other.receive_some(10) == b""  # our close_notify (or trio's) reads as a clean EOF
        await other.aclose()


async def test_an_eof_without_close_notify_breaks_the_stream_and_says_so(certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    socket.socket(fileno=peer.detach()).close()  # the TCP connection ends with no close_notify
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as caught:
        await tls.receive_some(10)
    assert isinstance(caught.value.__cause__, ssl.SSLEOFError)
    assert "UNEXPECTED_EOF" in tls_reason(caught.value)
    with pytest.raises(trio.BrokenResourceError):  # and it stays broken
        await tls.send_all(b"more")
    await tls.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await tls.receive_some(10)
    await tls.aclose()  # idempotent


async def test_a_close_notify_reads_as_a_clean_eof(certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    peer.sendall(b"last words")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, peer.unwrap)  # sends close_notify, then waits for ours
            assert await tls.receive_some(100) == b"last words"
            assert await tls.receive_some(100) == b""
            await tls.aclose()  # sends our close_notify: the peer's unwrap returns (it times out otherwise)
    peer.close()


async def test_bytes_that_are_not_tls_records_break_the_stream(certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    raw = socket.socket(fileno=peer.detach())  # the TLS session's socket, written to around it
    raw.sendall(b"\x17\x03\x03\x00\x05hello")  # an application-data record header over bytes no key made
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as caught:
        await tls.receive_some(100)
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    with pytest.raises(trio.BrokenResourceError):
        await tls.receive_some(100)
    assert not tls.try_send_now(b"x")  # a broken stream sends nothing around its writer
    await tls.aclose()
    raw.close()


async def test_a_receive_reads_no_more_ciphertext_than_it_was_asked_for(certs: tuple[NodeTls, ClientTls]) -> None:
    tls, peer = await tls_to_stdlib(certs)
    with peer:
        total = 1 << 20
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, peer.sendall, bytes(total))
                got = 0
                for _ in range(20):
                    got += len(await tls.receive_some(1000))
                    # What a client connection's input budget does not see: one read's worth and one partial record.
                    assert tls.buffered_ciphertext_bytes <= 1000 + (17 << 10)
                assert 0 < got <= 20 * 1000
                while got < total:  # the rest, so the sender's thread finishes
                    got += len(await tls.receive_some(1 << 16))
        await tls.aclose()
