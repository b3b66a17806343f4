"""What the TCP transport and the simulated network share: the handler
protocol, errors, statistics, the table of calls awaiting a response, and the
rate limit for clock-rejection log lines.

Role: lets node code run unchanged over `txn/transport.py` (real TCP) and
`txn/simnet.py` (deterministic simulation). Both expose:

    send(dst, msg)                      one-way, never blocks; drops and counts when full
    await call(dst, msg, timeout_s=...)  request/response; RpcTimeout, RemoteError, ...
    statistics() -> TransportStatistics

Invariants:
- A call's state (its slot in `PendingCalls`) is freed when the call returns,
  raises or is cancelled, so expired calls leave nothing behind.
- A call's deadline is a cancel scope of its own (`wait`), or, where the
  owner runs `PendingCalls.sweep` (a client connection: one call per
  operation, so the scope per call cost a client a good part of its CPU;
  figures in ARCHITECTURE.md), the sweeper's: one task sleeping until the
  earliest pending deadline, which fails the calls past it with RpcTimeout
  at that moment.
- A handler's `handle_request` exception becomes an ERROR envelope, raised in
  the caller as `RemoteError(text)`; it never reaches the transport's tasks.
- While a handler serves a request, `request_arrival()` is the receiving
  node's HLC reading taken when the request arrived (just after its sender's
  clock was absorbed), before it waited for a task to serve it: the earliest
  true `now` of the request at this node (Spanner's start rule takes a
  commit timestamp no lower than it). None outside a transport's request.
- After a call returns its response, `response_taken_at()` in the calling
  task is trio's time when that response was taken from the network (its
  frame read and handed over), before the caller's task ran again: a round
  trip timed to it excludes the wait for a pass of the event loop (clock
  probes, txn/node/clock_watch.py).
"""

from __future__ import annotations

import contextvars
import math
from typing import Any, Optional, Protocol

import attrs
import trio

from hlc import Timestamp
from txn.wire import Kind

CLOCK_LOG_INTERVAL_NS = 60 * 1_000_000_000

# Set by the transports in each request's own task (the module docstring).
_REQUEST_ARRIVAL: contextvars.ContextVar[Optional[Timestamp]] = contextvars.ContextVar("request_arrival", default=None)


def request_arrival() -> Optional[Timestamp]:
    """The HLC reading taken when the request being served arrived (None outside one)."""
    return _REQUEST_ARRIVAL.get()


def set_request_arrival(arrived: Optional[Timestamp]) -> None:
    """For the transports: at the start of a request's own task (its context is its own)."""
    _REQUEST_ARRIVAL.set(arrived)


# Set in the calling task as a call returns its response (the module docstring).
_RESPONSE_TAKEN: contextvars.ContextVar[float] = contextvars.ContextVar("response_taken", default=math.nan)


def response_taken_at() -> float:
    """trio's time when the response to this task's last returned call was taken from the network
    (NaN before any): no earlier than the responder's answer, no later than the call's return."""
    return _RESPONSE_TAKEN.get()


class Handler(Protocol):
    """What a transport delivers to. `handle_message` must not block. A handler may also have
    `answer_now(src, msg)`, synchronous: the reply to a request it can answer at once, or None
    (the TCP transport asks it first while none of the connection's requests is in a task;
    txn/net/transport.py), `start_now(src, msg, arrived, reply)`, synchronous: True if it took
    the request, to answer later through `reply(body)` once, from any task (the TCP transport
    only; the simulated network serves every request with `handle_request`), and
    `messages_read()`, synchronous: called after the frames of each read were handed over (the
    simulated network: after each one-way message)."""

    def handle_message(self, src: str, msg: Any) -> None: ...

    async def handle_request(self, src: str, msg: Any) -> Any: ...


class TransportError(Exception):
    """Base of every error a transport raises to its caller."""


class RpcTimeout(TransportError):
    """No response before the call's deadline (the request may still have run)."""


class PeerUnreachable(TransportError):
    """The peer is unknown, refused us, or could not be connected to."""


class RemoteError(TransportError):
    """The peer's handler raised; `text` is its description."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class FrameTooLarge(Exception):
    """A message encodes to a frame larger than the receiver accepts; it was NOT sent.

    Deliberately not a TransportError: a caller must not take it for a
    delivery failure whose outcome is unknown."""


class AddressInUse(TransportError):
    """The listening port is taken by another process."""


@attrs.frozen
class PeerStatistics:
    sent: int = 0
    dropped: int = 0
    rejected_clock: int = 0
    received: int = 0
    connect_failures: int = 0
    silent_closes: int = 0  # connections closed because the peer fell silent past the deadline


@attrs.frozen
class TransportStatistics:
    """A snapshot for `status` and tests. `peers` maps peer id -> counters."""

    node_id: str
    peers: dict[str, PeerStatistics]
    connections: int
    pending_calls: int
    protocol_errors: int

    def peer(self, peer_id: str) -> PeerStatistics:
        return self.peers.get(peer_id, PeerStatistics())


@attrs.define(eq=False)
class PeerCounters:
    """The mutable counters behind PeerStatistics."""

    sent: int = 0
    dropped: int = 0
    rejected_clock: int = 0
    received: int = 0
    connect_failures: int = 0
    silent_closes: int = 0

    def snapshot(self) -> PeerStatistics:
        return PeerStatistics(self.sent, self.dropped, self.rejected_clock, self.received, self.connect_failures,
                              self.silent_closes)


@attrs.define(eq=False)
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)
    kind: Optional[Kind] = None
    body: Any = None
    deadline_s: float = math.inf  # trio time; kept by `PendingCalls.sweep` (`wait_swept`)
    taken_s: float = math.nan  # trio time the response was handed over (`resolve`)


_TIMED_OUT = object()  # a swept waiter's body: its deadline passed


@attrs.define(eq=False)
class PendingCalls:
    """Calls waiting for a response, by request id (ids start at 1; 0 is one-way)."""

    _next_id: int = 1
    _waiters: dict[int, _Waiter] = attrs.field(factory=dict)
    _sweep_scope: Optional[trio.CancelScope] = None  # the sweeper's sleep, while it runs

    def __len__(self) -> int:
        return len(self._waiters)

    def open(self) -> tuple[int, _Waiter]:
        request_id = self._next_id
        self._next_id += 1
        waiter = _Waiter()
        self._waiters[request_id] = waiter
        return request_id, waiter

    def close(self, request_id: int) -> None:
        self._waiters.pop(request_id, None)

    def resolve(self, request_id: int, kind: Kind, body: Any) -> bool:
        """Hand a response to its caller; False if nobody waits (late or unknown id)."""
        waiter = self._waiters.pop(request_id, None)
        if waiter is None:
            return False
        waiter.kind, waiter.body, waiter.taken_s = kind, body, trio.current_time()
        waiter.event.set()
        return True

    def resolve_failure(self, request_id: int, reason: str) -> None:
        """Wake one caller with PeerUnreachable(reason)."""
        waiter = self._waiters.pop(request_id, None)
        if waiter is not None:
            waiter.kind, waiter.body = None, reason
            waiter.event.set()

    def fail_all(self, reason: str) -> None:
        """Wake every caller with a PeerUnreachable (connection lost, shutdown)."""
        for waiter in self._waiters.values():
            waiter.kind, waiter.body = None, reason
            waiter.event.set()
        self._waiters.clear()

    async def wait(self, request_id: int, waiter: _Waiter, dst: str, timeout_s: float) -> Any:
        """The response body; raises RpcTimeout, RemoteError or PeerUnreachable."""
        try:
            with trio.move_on_after(timeout_s):
                await waiter.event.wait()
        finally:
            self.close(request_id)
        return self._outcome(waiter, dst, timeout_s)

    async def wait_swept(self, request_id: int, waiter: _Waiter, dst: str, timeout_s: float) -> Any:
        """As `wait`, with no cancel scope of its own: the deadline is kept by `sweep`, which
        the owner must be running (else this is `wait`). A NaN timeout, which no deadline
        compares with, goes to `wait` too, whose scope refuses it (ValueError), as before."""
        scope = self._sweep_scope
        if scope is None or math.isnan(timeout_s):
            return await self.wait(request_id, waiter, dst, timeout_s)
        waiter.deadline_s = trio.current_time() + timeout_s
        if waiter.deadline_s < scope.deadline:
            scope.deadline = waiter.deadline_s  # wakes the sweeper earlier
        try:
            await waiter.event.wait()
        finally:
            self.close(request_id)
        return self._outcome(waiter, dst, timeout_s)

    async def sweep(self) -> None:
        """Until cancelled: sleep until the earliest deadline of the calls waiting in
        `wait_swept`, then fail those past theirs with RpcTimeout. Its wake-ups: one per
        earliest deadline, about once per call timeout while calls finish in time."""
        try:
            while True:
                deadline_s = min((w.deadline_s for w in self._waiters.values()), default=math.inf)
                with trio.CancelScope(deadline=deadline_s) as self._sweep_scope:
                    await trio.sleep_forever()
                now_s = trio.current_time()
                for request_id, waiter in list(self._waiters.items()):
                    if waiter.deadline_s <= now_s:
                        del self._waiters[request_id]
                        waiter.kind, waiter.body = None, _TIMED_OUT
                        waiter.event.set()
        finally:
            self._sweep_scope = None

    @staticmethod
    def _outcome(waiter: _Waiter, dst: str, timeout_s: float) -> Any:
        if not waiter.event.is_set() or waiter.body is _TIMED_OUT:
            raise RpcTimeout(f"no response from {dst} within {timeout_s:g}s")
        if waiter.kind is Kind.RESPONSE:
            _RESPONSE_TAKEN.set(waiter.taken_s)
            return waiter.body
        if waiter.kind is Kind.ERROR:
            raise RemoteError(getattr(waiter.body, "text", str(waiter.body)))
        raise PeerUnreachable(f"{dst}: {waiter.body}")


@attrs.define(eq=False)
class ClockRejectionLog:
    """Decides whether a clock rejection from a peer is logged: once per peer per minute."""

    interval_ns: int = CLOCK_LOG_INTERVAL_NS
    _last_logged_ns: dict[str, int] = attrs.field(factory=dict)

    def should_log(self, peer: str, now_ns: int) -> bool:
        last = self._last_logged_ns.get(peer)
        if last is not None and now_ns - last < self.interval_ns:
            return False
        self._last_logged_ns[peer] = now_ns
        return True


