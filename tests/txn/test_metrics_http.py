"""The /metrics endpoint's HTTP handling (txn/node/metrics_http.py): answers, limits, hostile clients.

One connection at a time over trio's in-memory streams (the deadline on
trio's autojump clock, so no test waits for it); the connection cap over a
real listener on 127.0.0.1.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from txn.node.metrics_http import CONTENT_TYPE, LINGER_S, HttpLimits, route, serve_connection, serve_metrics

BODY = b"# HELP chronodb_up demo\n# TYPE chronodb_up gauge\nchronodb_up 1.0\n"
LIMITS = HttpLimits(max_request_bytes=2048, deadline_s=5.0, max_connections=2)


def render() -> bytes:
    return BODY


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


def parse_response(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")
    response = client.next_event()
    assert isinstance(response, h11.Response), response
    body = b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    return response.status_code, dict(response.headers), body


async def exchange(request: bytes, *, render=render, limits: HttpLimits = LIMITS, close_after_sending: bool = True) -> bytes:
    """Send `request` to one served connection; everything the server wrote before closing."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, render, limits)
        if request:
            await client.send_all(request)
        if close_after_sending:
            await client.send_eof()
        return await read_all(client)


def test_routes() -> None:
    assert route(b"GET", b"/metrics") is None
    assert route(b"GET", b"/metrics?name[]=x") is None
    assert route(b"GET", b"/").status == 404
    assert route(b"GET", b"/metrics/../etc").status == 404
    assert route(b"POST", b"/metrics").status == 405
    assert route(b"POST", b"/other").status == 404


async def test_get_metrics_answers_the_rendered_text() -> None:
    status, headers, body = parse_response(await exchange(b"GET /metrics HTTP/1.1\r\nHost: n1\r\n\r\n"))
    assert status == 200 and body == BODY
    assert headers[b"content-type"] == CONTENT_TYPE.encode() and headers[b"connection"] == b"close"


@pytest.mark.parametrize("request_bytes, expected", [
    (b"GET /other HTTP/1.1\r\nHost: n1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nHost: n1\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400),  # a TLS hello
    (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"GET /metrics HTTP/1.1\r\nHost: n1\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431),
    (b"GET /" + b"m" * 10_000 + b" HTTP/1.1\r\n", 431),
])
async def test_other_requests_get_a_status_and_a_close(request_bytes: bytes, expected: int) -> None:
    status, _, _ = parse_response(await exchange(request_bytes))
    assert status == expected


async def test_a_client_that_closes_at_once_gets_nothing() -> None:
    assert await exchange(b"") == b""


async def test_half_a_request_then_eof_is_a_400() -> None:
    status, _, _ = parse_response(await exchange(b"GET /metr"))
    assert status == 400


async def test_a_silent_client_is_closed_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    started = trio.current_time()
    assert await exchange(b"GET /metrics HTTP/1.1\r\n", close_after_sending=False) == b""
    assert trio.current_time() - started == pytest.approx(LIMITS.deadline_s, abs=0.01)


async def test_a_client_that_never_reads_is_closed_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.lockstep_stream_pair()  # no buffer: the answer waits for a reader
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"GET /metrics HTTP/1.1\r\nHost: n1\r\n\r\n")
        await serve_connection(server, render, LIMITS)
    assert trio.current_time() - started == pytest.approx(LIMITS.deadline_s, abs=0.01)


async def test_after_answering_the_server_lingers_a_moment_then_closes(autojump_clock: trio.abc.Clock) -> None:
    """It half-closes and drains what the client still sends (so a reset cannot eat the answer),
    but a client that never closes its end is closed after LINGER_S."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, render, LIMITS)
        await client.send_all(b"GET /metrics HTTP/1.1\r\nHost: n1\r\n\r\n")
        status, _, body = parse_response(await read_all(client))  # the answer, then the server's EOF
        assert status == 200 and body == BODY
        answered = trio.current_time()
        await client.send_all(b"leftovers the server reads and drops")
        with pytest.raises(trio.BrokenResourceError):
            while True:
                await client.send_all(b"x")
                await trio.sleep(0.1)
    assert trio.current_time() - answered == pytest.approx(LINGER_S, abs=0.2)


async def test_a_failing_render_is_a_500_and_nothing_else() -> None:
    def broken() -> bytes:
        raise RuntimeError("a collector bug")

    status, _, body = parse_response(await exchange(b"GET /metrics HTTP/1.1\r\nHost: n1\r\n\r\n", render=broken))
    assert status == 500 and b"failed" in body


async def test_a_reset_connection_does_not_escape() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"GET /metrics HTTP/1.1\r\nHost: n1\r\n\r\n")
    await client.aclose()  # gone before the answer: writing it fails
    await serve_connection(server, render, LIMITS)  # returns quietly


async def test_connections_beyond_the_cap_wait_for_a_slot() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    limits = HttpLimits(max_request_bytes=2048, deadline_s=60.0, max_connections=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_metrics, listeners, render, limits)
        silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(limits.max_connections)]
        waiting = await trio.open_tcp_stream("127.0.0.1", port)  # the kernel completes the handshake
        await waiting.send_all(b"GET /metrics HTTP/1.1\r\nHost: n1\r\n\r\n")
        with trio.move_on_after(0.3):
            await waiting.receive_some(1)
            pytest.fail("answered while every slot was taken")
        await silent[0].aclose()  # frees one slot
        with trio.fail_after(30):
            status, _, body = parse_response(await read_all(waiting))
        assert status == 200 and body == BODY
        for stream in silent[1:]:
            await stream.aclose()
        nursery.cancel_scope.cancel()
