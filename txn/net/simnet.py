"""Deterministic simulated network: a whole cluster's messages in one trio run.

Role: the same `send` / `call` / `statistics` interface as the TCP transport
(txn/messaging.py), in process, for simulation under
`trio.testing.MockClock(autojump_threshold=0)` (STYLE.md section 5).
Inputs: sends and calls from endpoints, fault commands (`partition`, `heal`,
`crash`, `restart`, `set_link`), timers (`call_at`). Output: deliveries to
handlers, and a trace of every delivery decision with its sha256 digest.

Invariants:
- One heap orders everything by (at_ns, rank, src, src_seq, copy): timers
  (rank 0) before messages (rank 1) at the same instant, then sender, then
  the sender's own sequence number. One `pump()` task sleeps until the next
  instant and delivers all that is due in key order, synchronously:
  `handle_message` (then `messages_read`, if the handler has it) and timers
  are called inline; `handle_request` runs in a
  task of the pump's nursery.
- Each sender draws latency, drop and duplication from its own stream,
  `random.Random(f"{seed}/net/{src}")`, in its own send order, so the order
  in which trio schedules *different* tasks cannot change the outcome. A
  response's draws and sequence number are taken when its request is
  delivered (inside the pump, in heap order), not when the handler finishes.
- Every delay is at least 1 ms, so a send never lands in the instant being
  delivered.
- Partitions and crashes are checked at delivery: a message queued before a
  partition or a crash is lost; one queued before a heal is delivered.
  `crash(n)` bumps n's incarnation, which drops everything queued to or from
  it; `restart(n)` lets it send and receive again (its stream continues).
- `pause(n)` models a stalled process (a GC or VM pause): every message to
  or from n that falls due is held, in due order, instead of delivered;
  `resume(n)` delivers what it held 1 ms apart, late but in order (unless
  the other end is still paused, or a crash or partition intervenes).
- With `check_wire=True` each envelope is round-tripped through
  `wire.encode`/`wire.decode` at send time.

HAZARD: two tasks of the same node sending in the same virtual instant take
their random draws in trio's scheduling order; node drivers keep one task per
core (STYLE.md section 2) so a node's sends come from one task at a time.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from typing import Any, Callable, Iterable, Optional

import attrs
import trio

from hlc import HybridClock, Timestamp
from txn import wire
from txn.net.peer_rules import ClockVerdict, absorb_sender_clock
from txn.net.messaging import (
    ClockRejectionLog,
    Handler,
    PeerCounters,
    PeerUnreachable,
    PendingCalls,
    TransportStatistics,
    set_request_arrival,
)
from txn.wire import Envelope, HandlerError, Kind

MIN_LATENCY_NS = 1_000_000
_RANK_TIMER = 0
_RANK_MESSAGE = 1


def _check_rate(_instance: object, attribute: attrs.Attribute, value: float) -> None:  # type: ignore[type-arg]
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1]: {value!r}")


@attrs.frozen
class SimNetConfig:
    """Fault model of one link (or, as the network default, of every link).

    reorder=False keeps each link FIFO (a message is never delivered before
    one sent earlier on the same link); with reorder=True each message draws
    its own latency, so later messages may overtake earlier ones.
    quantum_ns > 0 rounds every delivery time up to a multiple of it, so
    messages land together in fewer instants (fewer scheduler rounds in a
    simulation; the order within an instant stays the heap's key order).
    """

    latency_ns_min: int = 1_000_000
    latency_ns_max: int = 5_000_000
    drop_rate: float = attrs.field(default=0.0, validator=_check_rate)
    duplicate_rate: float = attrs.field(default=0.0, validator=_check_rate)
    reorder: bool = True
    check_wire: bool = False
    max_in_flight_per_link: int = 10_000
    quantum_ns: int = 0

    def __attrs_post_init__(self) -> None:
        if self.latency_ns_min < MIN_LATENCY_NS:
            raise ValueError(f"latency_ns_min must be >= {MIN_LATENCY_NS} (1 ms): {self.latency_ns_min}")
        if self.latency_ns_max < self.latency_ns_min:
            raise ValueError(f"latency_ns_max {self.latency_ns_max} < latency_ns_min {self.latency_ns_min}")
        if self.max_in_flight_per_link < 1:
            raise ValueError(f"max_in_flight_per_link must be positive: {self.max_in_flight_per_link}")


@attrs.frozen
class _Entry:
    at_ns: int
    rank: int
    src: str
    src_seq: int
    copy: int
    dst: str
    item: Any  # Envelope, or a timer callback
    src_incarnation: int
    dst_incarnation: int

    # The heap's order: (at_ns, rank, src, src_seq, copy). Hand-written, as hlc.Timestamp's: attrs'
    # generated ordering builds its tuples through a generator, 13% of a simulation's CPU.
    def __lt__(self, other: "_Entry") -> bool:
        return ((self.at_ns, self.rank, self.src, self.src_seq, self.copy)
                < (other.at_ns, other.rank, other.src, other.src_seq, other.copy))


def now_ns() -> int:
    """trio's (mock) clock in integer ns."""
    return round(trio.current_time() * 1e9)


@attrs.define(eq=False)
class _Node:
    node_id: str
    rng: random.Random
    handler: Optional[Handler] = None
    clock: Optional[HybridClock] = None
    endpoint: Optional["SimTransport"] = None
    seq: int = 0
    up: bool = True
    incarnation: int = 0
    counters: dict[str, PeerCounters] = attrs.field(factory=dict)
    protocol_errors: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def peer(self, peer_id: str) -> PeerCounters:
        counters = self.counters.get(peer_id)
        if counters is None:
            counters = self.counters[peer_id] = PeerCounters()
        return counters


class SimNetwork:
    """The in-process network of one simulated cluster."""

    def __init__(self, seed: int, config: SimNetConfig | None = None) -> None:
        self.seed = seed
        self.config = config or SimNetConfig()
        self._nodes: dict[str, _Node] = {}
        self._links: dict[tuple[str, str], SimNetConfig] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._paused: set[str] = set()
        self._held: list[_Entry] = []
        self._heap: list[_Entry] = []
        self._in_flight: dict[tuple[str, str], int] = {}
        self._last_at_ns: dict[tuple[str, str], int] = {}
        self._changed = trio.Event()
        self._trace: list[str] = []
        self._timer_seq = 0
        self._nursery: Optional[trio.Nursery] = None
        self.clock_log = ClockRejectionLog()
        self.log: Callable[[str], None] = lambda line: None

    # ------------------------------------------------------------ endpoints

    def endpoint(self, node_id: str, handler: Handler, clock: HybridClock | None = None) -> "SimTransport":
        """The transport of `node_id`; calling again (after restart) replaces the handler."""
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _Node(node_id, random.Random(f"{self.seed}/net/{node_id}"))
        node.handler = handler
        node.clock = clock
        if node.endpoint is None:
            node.endpoint = SimTransport(self, node)
        return node.endpoint

    def node_ids(self) -> list[str]:
        return sorted(self._nodes)

    # --------------------------------------------------------------- faults

    def set_link(self, src: str, dst: str, config: SimNetConfig | None) -> None:
        """Give the link src->dst its own fault model (None: back to the default)."""
        if config is None:
            self._links.pop((src, dst), None)
        else:
            self._links[(src, dst)] = config

    def partition(self, side_a: Iterable[str], side_b: Iterable[str], *, one_way: bool = False) -> None:
        """Block side_a -> side_b, and side_b -> side_a unless one_way."""
        side_a, side_b = sorted(side_a), sorted(side_b)
        for a in side_a:
            for b in side_b:
                self._blocked.add((a, b))
                if not one_way:
                    self._blocked.add((b, a))
        self._record(f"partition {','.join(side_a)} {'->' if one_way else '<->'} {','.join(side_b)}")

    def heal(self) -> None:
        self._blocked.clear()
        self._record("heal")

    def crash(self, node_id: str) -> None:
        """The node goes silent; everything queued to or from it is lost."""
        node = self._nodes[node_id]
        node.up = False
        node.incarnation += 1
        if node.endpoint is not None:
            node.endpoint._pending.fail_all("crashed")
        self._record(f"crash {node_id}")

    def restart(self, node_id: str) -> None:
        node = self._nodes[node_id]
        node.up = True
        node.incarnation += 1
        self._record(f"restart {node_id}")

    def pause(self, node_id: str) -> None:
        """Hold every message to or from `node_id` until `resume` (a stalled process)."""
        self._paused.add(node_id)
        self._record(f"pause {node_id}")

    def resume(self, node_id: str) -> None:
        """Deliver what was held for `node_id`, late, in the order it fell due."""
        self._paused.discard(node_id)
        self._record(f"resume {node_id}")
        keep, release = [], []
        for entry in self._held:
            (keep if entry.src in self._paused or entry.dst in self._paused else release).append(entry)
        self._held = keep
        start = now_ns() + MIN_LATENCY_NS
        for i, entry in enumerate(release):
            self._in_flight[(entry.src, entry.dst)] = self._in_flight.get((entry.src, entry.dst), 0) + 1
            self._push(attrs.evolve(entry, at_ns=start + i))

    def is_paused(self, node_id: str) -> bool:
        return node_id in self._paused

    def is_up(self, node_id: str) -> bool:
        return self._nodes[node_id].up

    # --------------------------------------------------------------- timers

    def call_at(self, node_id: str, at_ns: int, callback: Callable[[], None]) -> None:
        """Run `callback()` inside the pump at `at_ns` (before messages of that
        instant), unless `node_id` crashed meanwhile."""
        node = self._nodes[node_id]
        at_ns = max(at_ns, now_ns() + 1)
        self._timer_seq += 1
        self._push(_Entry(at_ns, _RANK_TIMER, node_id, self._timer_seq, 0, node_id, callback,
                          node.incarnation, node.incarnation))

    # ---------------------------------------------------------------- trace

    def trace(self) -> list[str]:
        return list(self._trace)

    def trace_digest(self) -> str:
        digest = hashlib.sha256()
        for line in self._trace:
            digest.update(line.encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def _record(self, text: str) -> None:
        self._trace.append(f"{now_ns()} {text}")

    # ------------------------------------------------------------- sending

    def _link(self, src: str, dst: str) -> SimNetConfig:
        return self._links.get((src, dst), self.config)

    def _draw(self, node: _Node, dst: str) -> tuple[bool, tuple[int, ...]]:
        """This message's fate from the sender's stream: dropped?, one latency per copy."""
        link = self._link(node.node_id, dst)
        rng = node.rng
        dropped = rng.random() < link.drop_rate
        copies = 2 if rng.random() < link.duplicate_rate else 1
        return dropped, tuple(rng.randint(link.latency_ns_min, link.latency_ns_max) for _ in range(copies))

    def _send(self, node: _Node, dst: str, envelope: Envelope,
              reserved: Optional[tuple[int, bool, tuple[int, ...]]] = None) -> None:
        """Queue a message, with its fate drawn now or `reserved` (seq, dropped, latencies) earlier."""
        link = self._link(node.node_id, dst)
        if reserved is None:
            seq = node.next_seq()
            dropped, latencies = self._draw(node, dst)
        else:
            seq, dropped, latencies = reserved
        copies = len(latencies)
        counters = node.peer(dst)
        if link.check_wire:
            envelope = wire.decode(wire.encode(envelope))
        if not node.up:
            counters.dropped += 1
            self._record(f"{node.node_id}->{dst} #{seq} lost (sender down) {envelope}")
            return
        if dropped:
            counters.dropped += 1
            self._record(f"{node.node_id}->{dst} #{seq} dropped {envelope}")
            return
        key = (node.node_id, dst)
        if self._in_flight.get(key, 0) + copies > link.max_in_flight_per_link:
            counters.dropped += 1
            self._record(f"{node.node_id}->{dst} #{seq} dropped (queue full) {envelope}")
            return
        counters.sent += 1
        dst_node = self._nodes.get(dst)
        dst_incarnation = dst_node.incarnation if dst_node is not None else 0
        start = now_ns()
        for copy, latency in enumerate(latencies):
            at_ns = start + latency
            if link.quantum_ns > 0:
                at_ns = -(-at_ns // link.quantum_ns) * link.quantum_ns
            if not link.reorder:
                at_ns = max(at_ns, self._last_at_ns.get(key, 0))
                self._last_at_ns[key] = at_ns
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self._push(_Entry(at_ns, _RANK_MESSAGE, node.node_id, seq, copy, dst, envelope,
                              node.incarnation, dst_incarnation))

    def _push(self, entry: _Entry) -> None:
        # Wake the pump only when the next instant moved earlier; it sleeps until the head's.
        if not self._heap or entry < self._heap[0]:
            self._changed.set()
        heapq.heappush(self._heap, entry)

    # ------------------------------------------------------------- delivery

    async def pump(self) -> None:
        """The single delivery task: run it in the simulation's nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                self._changed = trio.Event()
                deadline = self._heap[0].at_ns / 1e9 if self._heap else math.inf
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                self._deliver_due()

    def _deliver_due(self) -> None:
        now = now_ns()
        heap = self._heap
        # MockClock jumps exactly to the deadline; float rounding may leave now
        # a nanosecond short of at_ns, so the head is due once its deadline passed.
        while heap and (heap[0].at_ns <= now or heap[0].at_ns / 1e9 <= trio.current_time()):
            entry = heapq.heappop(heap)
            if entry.rank == _RANK_TIMER:
                self._fire_timer(entry)
            else:
                key = (entry.src, entry.dst)
                self._in_flight[key] -= 1
                self._deliver(entry)

    def _fire_timer(self, entry: _Entry) -> None:
        node = self._nodes[entry.dst]
        if node.up and node.incarnation == entry.dst_incarnation:
            entry.item()

    def _deliver(self, entry: _Entry) -> None:
        src, dst, envelope = entry.src, entry.dst, entry.item
        tag = f"{src}->{dst} #{entry.src_seq}{'+dup' if entry.copy else ''}"
        src_node, dst_node = self._nodes[src], self._nodes.get(dst)
        if dst_node is None or dst_node.handler is None:
            self._record(f"{tag} lost (no such node) {envelope}")
        elif src_node.incarnation != entry.src_incarnation or not src_node.up:
            self._record(f"{tag} lost (sender crashed) {envelope}")
        elif dst_node.incarnation != entry.dst_incarnation or not dst_node.up:
            self._record(f"{tag} lost (receiver crashed) {envelope}")
        elif (src, dst) in self._blocked:
            self._record(f"{tag} lost (partition) {envelope}")
        elif src in self._paused or dst in self._paused:
            self._record(f"{tag} held (paused) {envelope}")
            self._held.append(entry)
        elif not self._accept_clock(dst_node, src, envelope):
            self._record(f"{tag} rejected (clock) {envelope}")
        else:
            self._record(f"{tag} deliver {envelope}")
            dst_node.peer(src).received += 1
            self._dispatch(dst_node, src, envelope)

    def _accept_clock(self, node: _Node, src: str, envelope: Envelope) -> bool:
        if node.clock is None:
            return True
        verdict, reason = absorb_sender_clock(node.clock, envelope)
        if verdict is ClockVerdict.REJECTED:
            counters = node.peer(src)
            counters.rejected_clock += 1
            if self.clock_log.should_log(f"{node.node_id}<-{src}", now_ns()):
                self.log(f"{node.node_id}: rejected message from {src}: {reason} "
                         f"({counters.rejected_clock} rejected so far)")
            return False
        return True

    def _dispatch(self, node: _Node, src: str, envelope: Envelope) -> None:
        kind = envelope.kind
        assert node.handler is not None and node.endpoint is not None
        if kind is Kind.ONE_WAY:
            node.handler.handle_message(src, envelope.body)
            messages_read = getattr(node.handler, "messages_read", None)
            if messages_read is not None:  # as the TCP transport after each read: one message here
                messages_read()
        elif kind is Kind.REQUEST:
            # Reserve the response's sequence number and draws now, in heap order.
            reserved = (node.next_seq(), *self._draw(node, src))
            assert self._nursery is not None, "SimNetwork.pump() is not running"
            arrived = node.clock.now() if node.clock is not None else None
            self._nursery.start_soon(self._serve, node, node.incarnation, node.handler, src, envelope, reserved, arrived)
        else:
            node.endpoint.node_time = (envelope.ts, trio.current_time())  # as ClientConnection.node_time
            node.endpoint._pending.resolve(envelope.request_id, kind, envelope.body)

    async def _serve(self, node: _Node, incarnation: int, handler: Handler, src: str,
                     request: Envelope, reserved: tuple[int, bool, tuple[int, ...]], arrived: Optional[Timestamp]) -> None:
        set_request_arrival(arrived)
        try:
            body, kind = await handler.handle_request(src, request.body), Kind.RESPONSE
        except Exception as error:  # the handler's failure goes back to the caller
            body, kind = HandlerError(f"{type(error).__name__}: {error}"), Kind.ERROR
        if node.incarnation != incarnation:
            return  # crashed while handling: the reply dies with the process
        self._send(node, src, Envelope(_stamp(node), kind, request.request_id, body), reserved)


def _stamp(node: _Node) -> Timestamp:
    return node.clock.now() if node.clock is not None else Timestamp.MIN


class SimTransport:
    """One node's view of the simulated network (same interface as TcpTransport)."""

    def __init__(self, network: SimNetwork, node: _Node) -> None:
        self._network = network
        self._node = node
        self._pending = PendingCalls()
        # The newest response's sender clock reading and its arrival (trio time), as
        # ClientConnection.node_time: a simulated client's transaction priorities.
        self.node_time: Optional[tuple[Timestamp, float]] = None

    @property
    def node_id(self) -> str:
        return self._node.node_id

    @property
    def address(self) -> str:
        return f"sim:{self._node.node_id}"

    def send(self, dst: str, msg: Any) -> None:
        """One-way message; never blocks. Lost messages are counted, not raised."""
        self._network._send(self._node, dst, Envelope(_stamp(self._node), Kind.ONE_WAY, 0, msg))

    def connected(self, dst: str) -> bool:
        """As TcpTransport's: whether a message leaves at once. Always: nothing here is dialed
        (a message is delayed, lost or delivered by the network's faults, never held for a link)."""
        return True

    async def call(self, dst: str, msg: Any, *, timeout_s: float) -> Any:
        """Request/response; RpcTimeout if no response within timeout_s."""
        if not self._node.up:
            raise PeerUnreachable(f"{self._node.node_id} is crashed")
        request_id, waiter = self._pending.open()
        self._network._send(self._node, dst, Envelope(_stamp(self._node), Kind.REQUEST, request_id, msg))
        return await self._pending.wait(request_id, waiter, dst, timeout_s)

    def statistics(self) -> TransportStatistics:
        node = self._node
        return TransportStatistics(
            node_id=node.node_id,
            peers={peer: counters.snapshot() for peer, counters in sorted(node.counters.items())},
            connections=0,
            pending_calls=len(self._pending),
            protocol_errors=node.protocol_errors,
        )
