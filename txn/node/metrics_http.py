"""The node's `/metrics` endpoint: plain HTTP/1.1 on its own port, served from the node's trio loop.

Role: answers `GET /metrics` with the Prometheus text exposition format of
the node's registry (`render()`: txn/node/metrics.py). HTTP parsing is h11's;
this module only bounds it and decides the answer (`route`, pure).

Invariants (everything from the network is hostile):
- at most `max_connections` connections are served at once; further ones wait
  in the kernel's accept backlog, never as tasks or buffers of ours;
- each connection lives at most `deadline_s` in all (reading the request,
  rendering, writing the answer, lingering), then is closed whatever it is
  doing;
- after the answer the server half-closes and reads what the client still
  sends, at most `LINGER_BYTES` for `LINGER_S`, before closing (RFC 9112
  9.6): closing with unread input sends a reset, which can destroy the
  answer (a 431 to an oversized request) before the client reads it;
- a request's line and headers may hold `max_request_bytes` in all, then the
  answer is 431; a request body is never read; one request per connection
  (`Connection: close`);
- only `/metrics` exists (404 elsewhere) and only for `GET` (405 otherwise);
  garbage is 400 (h11's verdict) or a plain close;
- no connection's failure (a reset, a render bug) leaves this module: it is
  logged at debug level (clients' faults) or as a warning (ours) and the
  connection closed; the node goes on.

Security: no TLS and no authentication (what Prometheus scrapes by default);
it shows counts and timings, never keys or values. Bind it where only your
monitoring reaches (cluster.toml's `metrics_port`, on the node's host).
"""

from __future__ import annotations

import logging
from typing import Callable

import attrs
import h11
import trio

log = logging.getLogger("chronodb.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format, what generate_latest writes
METRICS_PATH = b"/metrics"
RECEIVE_BYTES = 4096
ACCEPT_RETRY_S = 0.1
LINGER_S = 2.0
LINGER_BYTES = 1 << 20


@attrs.frozen
class HttpLimits:
    max_request_bytes: int = 8192
    deadline_s: float = 5.0
    max_connections: int = 8


@attrs.frozen
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def route(method: bytes, target: bytes) -> Answer | None:
    """The answer to a request line, or None for "serve the metrics". Pure."""
    path = target.split(b"?", 1)[0]
    if path != METRICS_PATH:
        return Answer(404, b"not found: only /metrics is served here\n")
    if method != b"GET":
        return Answer(405, b"method not allowed: GET /metrics\n", headers=(("allow", "GET"),))
    return None


def _response_bytes(connection: h11.Connection, answer: Answer) -> bytes:
    headers = [("content-type", answer.content_type), ("content-length", str(len(answer.body))),
               ("connection", "close"), *answer.headers]
    return (connection.send(h11.Response(status_code=answer.status, headers=headers))  # type: ignore[operator]
            + connection.send(h11.Data(data=answer.body))  # type: ignore[operator]
            + connection.send(h11.EndOfMessage()))  # type: ignore[operator]


async def _read_request(stream: trio.abc.Stream, connection: h11.Connection) -> h11.Request | None:
    """The request's head, or None when the client closed before sending one."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(RECEIVE_BYTES))
            continue
        if isinstance(event, h11.Request):
            return event
        if isinstance(event, h11.ConnectionClosed):
            return None
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} before a request", 400)


async def answer_one(stream: trio.abc.Stream, render: Callable[[], bytes], limits: HttpLimits) -> None:
    """Read one request from `stream` and answer it (the caller bounds the time and closes)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_request_bytes)
    try:
        request = await _read_request(stream, connection)
    except h11.RemoteProtocolError as error:
        if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = error.error_status_hint if 400 <= error.error_status_hint < 500 else 400
            await stream.send_all(_response_bytes(connection, Answer(status, f"bad request: {error}\n".encode())))
        return
    if request is None:
        return
    answer = route(request.method, request.target)
    if answer is None:
        try:
            answer = Answer(200, render(), CONTENT_TYPE)
        except Exception:  # noqa: BLE001 - a collector bug must not take the node down
            log.warning("metrics: rendering failed", exc_info=True)
            answer = Answer(500, b"metrics collection failed; see the node's log\n")
    await stream.send_all(_response_bytes(connection, answer))


async def serve_connection(stream: trio.abc.Stream, render: Callable[[], bytes], limits: HttpLimits) -> None:
    """One connection, start to close, within `limits.deadline_s`; never raises (but Cancelled)."""
    try:
        with trio.move_on_after(limits.deadline_s) as scope:
            await answer_one(stream, render, limits)
            await _linger(stream)
        if scope.cancelled_caught:
            log.debug("metrics: a connection ran past its %gs deadline; closed", limits.deadline_s)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError) as error:
        log.debug("metrics: connection failed: %r", error)
    except Exception:  # noqa: BLE001 - ours, not the client's: say so, but serve on
        log.warning("metrics: unexpected failure serving a connection", exc_info=True)
    finally:
        await trio.aclose_forcefully(stream)


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then drain the client's leftovers for a moment, so the answer is not lost to a reset."""
    send_eof = getattr(stream, "send_eof", None)
    if send_eof is None:
        return
    await send_eof()
    drained = 0
    with trio.move_on_after(LINGER_S):
        while drained < LINGER_BYTES:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return
            drained += len(data)


async def open_metrics_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind the metrics port (raises OSError, e.g. EADDRINUSE, for the caller to report)."""
    return await trio.open_tcp_listeners(port, host=host)


async def serve_metrics(listeners: list[trio.SocketListener], render: Callable[[], bytes],
                        limits: HttpLimits = HttpLimits(), *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `/metrics` on already bound `listeners` until cancelled; closes them on the way out."""
    slots = trio.Semaphore(limits.max_connections)
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, listener, slots, render, limits, nursery)
            task_status.started()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _accept_loop(listener: trio.SocketListener, slots: trio.Semaphore, render: Callable[[], bytes],
                       limits: HttpLimits, nursery: trio.Nursery) -> None:
    while True:
        await slots.acquire()  # a free slot first: beyond the cap, connections wait in the backlog
        try:
            stream = await listener.accept()
        except OSError as error:  # EMFILE and the like: wait, do not spin or die
            slots.release()
            log.warning("metrics: accept failed: %s", error)
            await trio.sleep(ACCEPT_RETRY_S)
            continue
        except BaseException:
            slots.release()
            raise
        nursery.start_soon(_serve_in_slot, stream, slots, render, limits)


async def _serve_in_slot(stream: trio.abc.Stream, slots: trio.Semaphore, render: Callable[[], bytes],
                         limits: HttpLimits) -> None:
    try:
        await serve_connection(stream, render, limits)
    finally:
        slots.release()
