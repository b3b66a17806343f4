"""The client library: timestamped reads and writes against a running cluster.

Role: connects to any node, learns the tablet map, routes each request by key
range, follows leader redirects, retries what is safe to retry, and reports
what it cannot know as `OutcomeUnknown`. `SyncClient` wraps it for scripts.

Retry rules (what is safe):
- a request that was never delivered (connection refused, `not_leader`,
  read timeouts, unknown tablet) is retried, on the hinted leader or the next
  replica, with capped backoff, until the caller's deadline;
- each attempt of a read has `attempt_timeout_s` (routing.py: a quarter of
  the deadline, at least 0.5 s; configurable): a stalled replica (paused
  process, partition) costs one attempt, then the next replica is asked, and
  the stalled node is tried last for `SLOW_NODE_S`;
- "delivered" means the request's bytes were handed to a connection: TCP may
  have carried them even if no answer ever comes. So a write gets the
  per-attempt timeout only while it is not yet sent (opening the connection:
  TCP connect and the handshake); once sent it waits for the whole deadline;
- a write that was delivered but whose reply never came (connection lost,
  deadline passed) or that the leader reported as `outcome_unknown` is NOT
  retried: it raises `OutcomeUnknown` carrying the request. A user retrying it
  may apply it twice (writes are idempotent puts, so a plain retry is harmless
  for a single key, but the commit timestamp then differs).

Connections are mutual TLS with a client certificate (`tls`, txn/net/tls.py)
unless the cluster runs --insecure; `connect(dir)` finds both in DIR
(DIR/certs/client.<user>.crt, or the DIR/INSECURE marker).

Stale reads (`at`, exact and bounded staleness) go to the nearest replica:
the node this client first reached if it holds the tablet, else a follower,
so that leaders keep their capacity for writes and strong reads. "Now" for a
stale read is a node's clock (`TimestampRequest`), never the client's own: a
client whose clock is an hour off still reads 5 s back, not an hour.

Transactions (`transaction()`, `run_transaction()`, `snapshot()`) live in
txn/client/transaction.py; their ids are `<client token>-<counter>`, the
token drawn from the client's `rng` (pass a seeded `random.Random` in
simulation; by default it is seeded from os.urandom).

HAZARD: a stale read's `now` comes from one node; it is within `max_offset`
of every other serving node (DESIGN.md contract point 6), so "5 s stale" is
5 s +- max_offset.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
from typing import Any, AsyncContextManager, AsyncIterator, Awaitable, Callable, Iterable, Protocol, Sequence

import attrs
import trio

from hlc import HybridClock, Timestamp
from hlc.physical import SystemClock
from txn import api
from txn.net.client_connection import open_client_connection
from txn.net.tls import DEFAULT_CLIENT, CertError, ClientTls, client_tls_for_dir
from txn.api.limits import oversize
from txn.node.config import ConfigError, load_config
from txn.client.routing import (
    ATTEMPT_TIMEOUT_FRACTION, ATTEMPT_TIMEOUT_MIN_S, Backoff, attempt_timeout_s, demote, holds, leader_order,
    nearest_order, tablet_containing,
)
from txn.client.connections import CONNECT_TIMEOUT_S, ConnectionPool
from txn.client.errors import (
    ClientError, NoLeader, OutcomeUnknown, ReadFailed, Refused, RequestTimeout, TooLarge, TxnAborted, Unreachable,
)
from txn.client.txn_plan import node_now_estimate
from txn.client.transaction import Snapshot, Transaction, open_transaction, run_transaction, snapshot_ts
from txn.net.messaging import FrameTooLarge, RpcTimeout, TransportError

DEFAULT_DIR = "./chronodb-data"
DEFAULT_TIMEOUT_S = 10.0
SCAN_PAGE = 1000
SLOW_NODE_S = 5.0  # a node that let an attempt time out is tried last for this long
# A reply's node clock reading serves as "a node's now" (transaction priorities) this long
# after it arrived; after that a TimestampRequest asks (txn_plan.node_now_estimate).
NODE_TIME_FRESH_S = 1.0


class Connection(Protocol):
    """What the client needs of a connection to one node (TCP or simulated)."""

    cluster_id: str | None
    # The newest response's node clock reading and the trio time it arrived, or None.
    node_time: tuple[Timestamp, float] | None

    @property
    def broken(self) -> str | None: ...

    async def call(self, message: object, *, timeout_s: float) -> object: ...


# Opens a connection to (host, port) for a cluster id (None: learn it); raises
# TransportError or OSError when it cannot.
Dialer = Callable[[tuple[str, int], "str | None", HybridClock], AsyncContextManager[Any]]


def tcp_dialer(address: tuple[str, int], cluster_id: str | None, clock: HybridClock, *,
               tls: ClientTls | None = None) -> AsyncContextManager[Any]:
    """Plain TCP, or TLS with `tls` (bind it with functools.partial, as open_client does)."""
    return open_client_connection(address[0], address[1], cluster_id=cluster_id, clock=clock,
                                  timeout_s=CONNECT_TIMEOUT_S, tls=tls)


@attrs.frozen
class WriteResult:
    ts: Timestamp
    commit_wait_ns: int
    node: str


@attrs.frozen
class GetResult:
    key: bytes
    value: bytes | None
    ts: Timestamp  # the read timestamp
    version_ts: Timestamp | None  # commit timestamp of the version read
    served_by: str


@attrs.frozen
class ScanResult:
    ts: Timestamp
    rows: tuple[api.Row, ...] = attrs.field(converter=tuple)


class Client(ConnectionPool):
    """Use as `async with open_client(addresses) as client:`."""

    def __init__(self, addresses: Sequence[tuple[str, int]], *, cluster_id: str | None, clock: HybridClock, timeout_s: float,
                 dial: Dialer = tcp_dialer, attempt_timeout_min_s: float = ATTEMPT_TIMEOUT_MIN_S,
                 attempt_timeout_fraction: float = ATTEMPT_TIMEOUT_FRACTION, rng: random.Random | None = None) -> None:
        self.addresses = list(addresses)
        # The one random stream of this client (transaction ids, retry jitter).
        self.rng = rng if rng is not None else random.Random(os.urandom(16))
        self.client_token = f"{self.rng.getrandbits(48):012x}"
        self._txn_counter = 0
        self.dial = dial
        self.cluster_id = cluster_id
        self.clock = clock
        self.timeout_s = timeout_s
        self.attempt_timeout_min_s = attempt_timeout_min_s
        self.attempt_timeout_fraction = attempt_timeout_fraction
        self._slow_until: dict[str, float] = {}  # node -> trio time until which it is tried last
        self.node_time_fresh_s = NODE_TIME_FRESH_S
        self.tablets: tuple[api.TabletInfo, ...] = ()
        self.nodes: dict[str, tuple[str, int]] = {}
        self.leaders: dict[str, str] = {}
        self.home: str | None = None
        # The cluster's size limits, from the tablet map (the defaults until it is loaded).
        self.max_key_bytes = api.TabletMapReply.__attrs_attrs__.max_key_bytes.default
        self.max_value_bytes = api.TabletMapReply.__attrs_attrs__.max_value_bytes.default
        self._connections: dict[tuple[str, int], tuple[Connection, trio.CancelScope]] = {}
        self._connect_locks: dict[tuple[str, int], trio.Lock] = {}
        self._nursery: trio.Nursery | None = None  # set by open_client

    async def refresh_map(self, deadline_s: float | None = None) -> None:
        deadline_s = deadline_s if deadline_s is not None else trio.current_time() + self.timeout_s
        errors = []
        candidates = ([self.nodes[self.home]] if self.home in self.nodes else []) + self.addresses
        for address in candidates:
            remaining_s = deadline_s - trio.current_time()
            if remaining_s <= 0:
                break
            try:
                reply = await self._call(address, api.TabletMapRequest(), min(remaining_s, CONNECT_TIMEOUT_S))
            except (Unreachable, TransportError) as error:
                errors.append(str(error))
                continue
            if not isinstance(reply, api.TabletMapReply):
                continue
            self.tablets = reply.tablets
            self.max_key_bytes, self.max_value_bytes = reply.max_key_bytes, reply.max_value_bytes
            self.nodes = {node.id: (node.host, node.port) for node in reply.nodes}
            for tablet in reply.tablets:
                if tablet.leader:
                    self.leaders[tablet.id] = tablet.leader
            if self.home is None:
                self.home = next((n for n, a in self.nodes.items() if a == address), None)
            return
        raise Unreachable("no node answered (" + ("; ".join(errors[-3:]) or "deadline passed") + ")")

    # ---- routing -------------------------------------------------------------

    async def tablet_for(self, key: bytes) -> api.TabletInfo:
        if not self.tablets:
            await self.refresh_map()
        tablet = tablet_containing(self.tablets, key)
        if tablet is None:
            raise ClientError(f"no tablet holds key {key!r}")
        return tablet

    async def _send(self, tablet: api.TabletInfo, build, *, leader: bool, is_write: bool, timeout_s: float | None,
                    txn_id: str | None = None):
        """Send to the tablet's leader (or nearest replica), retrying what is safe.

        A read attempt gets attempt_timeout_s; a write only while it is not yet
        sent (see the module docstring), then the rest of the deadline.
        `txn_id`: the transaction this request belongs to, for the errors it
        raises (`TxnAborted` on a `txn_aborted` reply, `OutcomeUnknown`)."""
        total_s = timeout_s or self.timeout_s
        deadline_s = trio.current_time() + total_s
        backoff: Backoff | None = None  # made at the first retry: most requests succeed at once
        attempt = 0
        last_problem = "no replica answered"
        while True:
            remaining_s = deadline_s - trio.current_time()
            if remaining_s <= 0:
                break
            attempt_s = attempt_timeout_s(remaining_s, total_s, min_s=self.attempt_timeout_min_s,
                                          fraction=self.attempt_timeout_fraction)
            known_leader = self.leaders.get(tablet.id)
            order = leader_order(tablet, known_leader) if leader else nearest_order(tablet, known_leader, self.home)
            if self._slow_until:
                order = demote(order, self._slow_nodes())
            node = order[attempt % len(order)]
            attempt += 1
            address = self.nodes.get(node)
            if address is None:
                await self.refresh_map(deadline_s)
                continue
            call_s = remaining_s if is_write else attempt_s
            message = build(int(call_s * 1e9 * 0.9))
            try:
                reply = await self._call(address, message, call_s, connect_timeout_s=min(attempt_s, CONNECT_TIMEOUT_S))
            except FrameTooLarge as error:
                raise TooLarge(f"tablet {tablet.id}: {error}") from None
            except Unreachable as error:
                last_problem = str(error)
                self._mark_slow(tablet, node)
                attempt = 0  # the order changed: start it over, the slow node now last
                backoff = await self._back_off(backoff, deadline_s)
                continue
            except TransportError as error:
                if is_write:
                    raise OutcomeUnknown(f"write to tablet {tablet.id} sent to {node}, then {error}: it may or may not have committed",
                                         tablet_id=tablet.id, node=node, txn_id=txn_id) from None
                last_problem = f"{node}: {error}"
                if isinstance(error, RpcTimeout):
                    self._mark_slow(tablet, node)
                    attempt = 0
                backoff = await self._back_off(backoff, deadline_s)
                continue
            if not isinstance(reply, api.ErrorReply):
                if leader:
                    self.leaders[tablet.id] = node
                self._slow_until.pop(node, None)
                return reply
            if reply.code == api.ErrorCode.OUTCOME_UNKNOWN:
                raise OutcomeUnknown(f"tablet {tablet.id} at {node}: {reply.message}", tablet_id=tablet.id, node=node, txn_id=txn_id)
            if reply.code == api.ErrorCode.TXN_ABORTED:
                raise TxnAborted(txn_id or "?", str(reply.abort_reason or "aborted"), f"tablet {tablet.id} at {node}: {reply.message}")
            if reply.code in (api.ErrorCode.BELOW_GC_HORIZON, api.ErrorCode.FUTURE_READ, api.ErrorCode.BAD_REQUEST,
                              api.ErrorCode.PERMISSION_DENIED):
                raise Refused(reply) if is_write else ReadFailed(reply)
            last_problem = f"{node}: {reply.message}"
            hint = reply.leader_hint
            if hint and hint in tablet.replicas and hint != node and hint not in self._slow_nodes():
                self.leaders[tablet.id] = hint
                attempt = 0
                if not leader:
                    leader = True  # a replica that cannot serve sends us to the leader
            else:
                # No hint, or one naming a node that just timed out on us (the
                # replica has not noticed yet): ask the next replica instead.
                self.leaders.pop(tablet.id, None)
                backoff = await self._back_off(backoff, deadline_s)
        if leader or is_write:
            raise NoLeader(f"tablet {tablet.id} had no serving leader within {total_s:g}s ({last_problem})")
        raise RequestTimeout(f"no replica of tablet {tablet.id} served the read in time ({last_problem})")

    @staticmethod
    async def _back_off(backoff: Backoff | None, deadline_s: float) -> Backoff:
        """Wait out the next delay of `backoff` (made here at a request's first retry), never past
        `deadline_s`; returns it for the next retry."""
        backoff = backoff or Backoff()
        await trio.sleep(min(backoff.take(), max(0.0, deadline_s - trio.current_time())))
        return backoff

    def _mark_slow(self, tablet: api.TabletInfo, node: str) -> None:
        """The node let an attempt time out or could not be reached: ask it last for a while."""
        self._slow_until[node] = trio.current_time() + SLOW_NODE_S
        if self.leaders.get(tablet.id) == node:
            self.leaders.pop(tablet.id)

    def _slow_nodes(self) -> list[str]:
        """Nodes to try last, least recently slow first."""
        now_s = trio.current_time()
        slow = sorted((until_s, node) for node, until_s in self._slow_until.items() if until_s > now_s)
        return [node for _, node in slow]

    # ---- operations ----------------------------------------------------------

    async def write(self, writes: Iterable[tuple[bytes, bytes | None]], *, timeout_s: float | None = None) -> WriteResult:
        """Write several keys of ONE tablet atomically at one timestamp (None deletes)."""
        items = tuple(api.KeyWrite(key, value) for key, value in writes)
        if not items:
            raise ClientError("nothing to write")
        tablet = await self.tablet_for(items[0].key)
        if any(not holds(tablet, w.key) for w in items):
            raise ClientError("keys of one write must belong to one tablet (cross-tablet transactions are not built yet)")
        self.check_sizes(items)
        reply = await self._send(tablet, lambda t: api.WriteRequest(tablet.id, items, t), leader=True, is_write=True, timeout_s=timeout_s)
        return WriteResult(reply.ts, reply.commit_wait_ns, self.leaders.get(tablet.id, "?"))

    def check_sizes(self, writes: Iterable[api.KeyWrite]) -> None:
        """Raise `TooLarge` for writes over the cluster's limits (the node checks again)."""
        problem = oversize(writes, self.max_key_bytes, self.max_value_bytes)
        if problem is not None:
            raise TooLarge(problem)

    async def put(self, key: bytes, value: bytes, *, timeout_s: float | None = None) -> WriteResult:
        return await self.write([(key, value)], timeout_s=timeout_s)

    async def delete(self, key: bytes, *, timeout_s: float | None = None) -> WriteResult:
        return await self.write([(key, None)], timeout_s=timeout_s)

    async def node_timestamp(self, *, timeout_s: float | None = None) -> api.TimestampReply:
        """`now` from a node's clock (the home node first, then any other) and the cluster's max_offset."""
        deadline_s = trio.current_time() + (timeout_s or self.timeout_s)
        if not self.nodes:
            await self.refresh_map(deadline_s)
        candidates = ([self.home] if self.home in self.nodes else []) + [n for n in self.nodes if n != self.home]
        problems = []
        for node in candidates:
            remaining_s = deadline_s - trio.current_time()
            if remaining_s <= 0:
                break
            try:
                reply = await self._call(self.nodes[node], api.TimestampRequest(), min(remaining_s, CONNECT_TIMEOUT_S))
            except (Unreachable, TransportError) as error:
                problems.append(f"{node}: {error}")
                continue
            if isinstance(reply, api.TimestampReply):
                return reply
            problems.append(f"{node}: {reply}")
        raise Unreachable("no node answered a timestamp request (" + ("; ".join(problems[-3:]) or "deadline passed") + ")")

    async def node_now(self) -> Timestamp:
        """A node's clock now, for a transaction's priority: estimated from the newest reply
        (`node_now_estimate`) when one arrived within `node_time_fresh_s`, so a busy client
        pays no round trip for it; else asked (`node_timestamp`). Not for read timestamps:
        the estimate trails by the newest reply's flight, which a strong snapshot's
        max_offset margin does not cover."""
        estimate = node_now_estimate((held[0].node_time for held in self._connections.values()),
                                     trio.current_time(), self.node_time_fresh_s)
        return estimate if estimate is not None else (await self.node_timestamp()).now

    @staticmethod
    def read_mode(*, at: Timestamp | None, stale_ns: int | None,
                  max_stale_ns: int | None) -> tuple[api.ReadMode, Timestamp | None, int]:
        """(mode, ts, stale_ns) of a read request. Staleness is measured on the
        serving replica's clock (not the client's, which no bound covers), in
        the same round trip as the read."""
        if sum(x is not None for x in (at, stale_ns, max_stale_ns)) > 1:
            raise ClientError("choose at most one of at, stale and max_stale")
        for name, value in (("stale", stale_ns), ("max_stale", max_stale_ns)):
            if value is not None and value < 0:
                raise ClientError(f"{name} must not be negative, got {value} ns")
        if at is not None:
            return api.ReadMode.AT, at, 0
        if stale_ns is not None:
            return api.ReadMode.STALE, None, stale_ns
        if max_stale_ns is not None:
            return api.ReadMode.MAX_STALE, None, max_stale_ns
        return api.ReadMode.STRONG, None, 0

    async def get(
        self, key: bytes, *, at: Timestamp | None = None, stale_ns: int | None = None,
        max_stale_ns: int | None = None, timeout_s: float | None = None,
    ) -> GetResult:
        mode, ts, stale = self.read_mode(at=at, stale_ns=stale_ns, max_stale_ns=max_stale_ns)
        tablet = await self.tablet_for(key)
        reply = await self._send(
            tablet, lambda t: api.ReadRequest(tablet.id, key, mode, ts, t, stale),
            leader=(mode == api.ReadMode.STRONG), is_write=False, timeout_s=timeout_s,
        )
        return GetResult(key, reply.value, reply.ts, reply.version_ts, reply.served_by)

    async def scan(
        self, start: bytes, end: bytes | None, *, at: Timestamp | None = None, limit: int | None = None,
        timeout_s: float | None = None,
    ) -> ScanResult:
        """Rows of [start, end) at one timestamp across tablets, in key order.

        Without `at`, the first tablet's leader picks a strong timestamp and
        every further tablet is read at that same timestamp (a consistent cut)."""
        if not self.tablets:
            await self.refresh_map()
        rows_left = math.inf if limit is None else limit
        mode, ts = (api.ReadMode.STRONG, None) if at is None else (api.ReadMode.AT, at)
        rows: list[api.Row] = []
        for tablet in sorted(self.tablets, key=lambda t: t.start):
            if (tablet.end is not None and tablet.end <= start) or (end is not None and tablet.start >= end):
                continue
            cursor = max(start, tablet.start)
            while rows_left > 0:
                page = int(min(rows_left, SCAN_PAGE))
                reply = await self._send(
                    tablet, lambda t, c=cursor, m=mode, s=ts, p=page: api.ScanRequest(tablet.id, c, end, m, s, p, t),
                    leader=(mode == api.ReadMode.STRONG), is_write=False, timeout_s=timeout_s,
                )
                mode, ts = api.ReadMode.AT, reply.ts
                rows.extend(reply.rows)
                rows_left -= len(reply.rows)
                if len(reply.rows) < page and not reply.more:
                    break
                cursor = reply.rows[-1].key + b"\x00"
            if rows_left <= 0:
                break
        if ts is None:
            ts = self.clock.now()
        return ScanResult(ts, rows)

    # ---- transactions ------------------------------------------------------------

    def next_txn_id(self) -> str:
        self._txn_counter += 1
        return f"{self.client_token}-{self._txn_counter}"

    def transaction(self, *, priority: Timestamp | None = None) -> AsyncContextManager[Transaction]:
        """`async with client.transaction() as tx:` commits at the end of the block, aborts if it raises.

        `priority` (wound-wait; older wins) defaults to now on a node's clock (`node_now`)."""
        return open_transaction(self, priority)

    async def run_transaction(self, fn: Callable[[Transaction], Awaitable[Any]], *, max_attempts: int = 10) -> Any:
        """`await fn(tx)` in a fresh transaction and commit; again after `TxnAborted` (same priority); fn's result."""
        return await run_transaction(self, fn, max_attempts=max_attempts)

    @contextlib.asynccontextmanager
    async def snapshot(self, *, at: Timestamp | None = None, stale: int | str | None = None) -> AsyncIterator[Snapshot]:
        """`async with client.snapshot() as snap:` reads at one timestamp `snap.ts`: strong by default
        (covers every write acknowledged before it began), `at=TS`, or `stale=` ns or a duration like "5s"."""
        yield Snapshot(self, await snapshot_ts(self, at=at, stale=stale))

    async def node_status(self, node_id: str, *, timeout_s: float = 2.0) -> api.NodeStatusReply:
        if not self.nodes:
            await self.refresh_map()
        reply = await self._call(self.nodes[node_id], api.StatusRequest(), timeout_s)
        assert isinstance(reply, api.NodeStatusReply), reply
        return reply


@contextlib.asynccontextmanager
async def open_client(
    addresses: Sequence[tuple[str, int]], *, cluster_id: str | None = None, max_offset_ns: int = 10_000_000,
    timeout_s: float = DEFAULT_TIMEOUT_S, clock: HybridClock | None = None, dial: Dialer = tcp_dialer,
    attempt_timeout_min_s: float = ATTEMPT_TIMEOUT_MIN_S, attempt_timeout_fraction: float = ATTEMPT_TIMEOUT_FRACTION,
    rng: random.Random | None = None,
    tls: ClientTls | None = None,
) -> AsyncIterator[Client]:
    """A client of the nodes at `addresses`; TCP connections are TLS with `tls` (None: plain, --insecure)."""
    if tls is not None:
        dial = functools.partial(dial, tls=tls)
    client = Client(addresses, cluster_id=cluster_id, clock=clock or HybridClock(SystemClock(), max_offset_ns),
                    timeout_s=timeout_s, dial=dial, attempt_timeout_min_s=attempt_timeout_min_s,
                    attempt_timeout_fraction=attempt_timeout_fraction, rng=rng)
    # An error from the caller's block is re-raised after the connections are
    # closed, so it is not wrapped in an ExceptionGroup by the nursery.
    error: Exception | None = None
    async with trio.open_nursery() as nursery:
        client._nursery = nursery
        try:
            yield client
        except Exception as raised:
            error = raised
        finally:
            nursery.cancel_scope.cancel()
    if error is not None:
        raise error


@contextlib.asynccontextmanager
async def connect(dir: str | os.PathLike[str] = DEFAULT_DIR, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                  user: str = DEFAULT_CLIENT) -> AsyncIterator[Client]:
    """The documented way to open a client from Python: `async with connect() as client:`.

    Reads the cluster's configuration (nodes, cluster id, max_offset) from the
    data directory `dir`, and the client certificate DIR/certs/client.<user>
    (unless DIR is marked --insecure); raises `ClientError` naming the problem
    if there is no readable cluster.toml or certificate there."""
    try:
        config = load_config(dir)
        tls = client_tls_for_dir(dir, user)
    except (ConfigError, CertError) as error:
        raise ClientError(str(error)) from None
    addresses = [node.address for node in config.nodes]
    async with open_client(addresses, cluster_id=config.cluster_id, max_offset_ns=config.max_offset_ns,
                           timeout_s=timeout_s, tls=tls) as client:
        yield client
