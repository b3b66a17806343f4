"""The real client library (txn/client/) on the simulated network, recording a history.

Role: `SimClient` opens `txn.client.open_client` with a dialer that returns
a `SimConnection` (a node's simulated endpoint) instead of TCP, so the
client's routing, retry and outcome-unknown rules run in simulation. Every
operation is appended to the shared history as a `txn.sim.checkers.Op`
with its start and end on trio's clock (the one reference clock).

Client links behave like TCP: no drops, duplicates or reordering short of a
partition, a pause or a crash. The nodes do not deduplicate requests, so a
duplicated write would apply twice; over TCP that cannot happen, and the
client never retries a write that may have been delivered.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, AsyncIterator, Callable

import attrs
import trio

from hlc import HybridClock, Timestamp
from hlc.physical import VirtualClock
from txn.client import Client, ClientError, OutcomeUnknown, open_client
from txn.net.simnet import SimNetwork
from txn.sim.checkers import FAILED, OK, UNKNOWN, Op


def now_ns() -> int:
    return round(trio.current_time() * 1e9)


class SimConnection:
    """The client library's view of one node over the simulated network."""

    def __init__(self, endpoint: Any, node_id: str) -> None:
        self.endpoint = endpoint
        self.node_id = node_id
        self.cluster_id: str | None = "sim"
        self.broken: str | None = None

    @property
    def node_time(self) -> tuple[Timestamp, float] | None:
        """The newest response's node clock reading, from any node (one endpoint serves them all)."""
        return self.endpoint.node_time

    async def call(self, message: object, *, timeout_s: float) -> object:
        return await self.endpoint.call(self.node_id, message, timeout_s=timeout_s)


class SimClient:
    """One client process: the real `Client` plus the history it records."""

    def __init__(self, name: str, net: SimNetwork, node_ids: tuple[str, ...], max_offset_ns: int,
                 history: list[Op], *, home: str, in_flight: Callable[[bytes, int], None] = lambda key, delta: None,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.node_ids = node_ids
        self.home = home
        self.max_offset_ns = max_offset_ns
        self.endpoint = net.endpoint(name, self)
        tcp_like = attrs.evolve(net.config, drop_rate=0.0, duplicate_rate=0.0, reorder=False)
        for node_id in node_ids:
            net.set_link(name, node_id, tcp_like)
            net.set_link(node_id, name, tcp_like)
        self.history = history
        self.in_flight = in_flight  # (key, +1/-1) around each write, for the failover-under-load mark
        self.read_stamps: list[Timestamp] = []  # read timestamps seen, to read at again (repeatable reads)
        self.client: Client | None = None
        self.rng = rng  # the client library's stream (transaction ids, retry jitter): seeded, so it replays

    def handle_message(self, src: str, msg: object) -> None:
        pass

    async def handle_request(self, src: str, msg: object) -> object:
        raise AssertionError("clients serve nothing")

    @contextlib.asynccontextmanager
    async def _dial(self, address: tuple[str, int], cluster_id: str | None, clock: HybridClock) -> AsyncIterator[SimConnection]:
        yield SimConnection(self.endpoint, address[0])

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator["SimClient"]:
        order = [self.home] + [n for n in self.node_ids if n != self.home]
        async with open_client([(n, 0) for n in order], cluster_id="sim", clock=HybridClock(VirtualClock(), self.max_offset_ns),
                               timeout_s=1.0, dial=self._dial, rng=self.rng) as client:
            self.client = client
            yield self

    async def write(self, key: bytes, value: bytes | None, *, timeout_s: float | None = None) -> Op:
        assert self.client is not None
        start = now_ns()
        outcome, ts = OK, None
        self.in_flight(key, 1)
        try:
            ts = (await self.client.write([(key, value)], timeout_s=timeout_s)).ts
        except OutcomeUnknown:
            outcome = UNKNOWN
        except ClientError:
            outcome = FAILED
        finally:
            self.in_flight(key, -1)
        op = Op("write", key, value, start, now_ns(), outcome, ts)
        self.history.append(op)
        return op

    async def read(self, key: bytes, *, at: Timestamp | None = None, stale_ns: int | None = None) -> None:
        """A strong read (neither `at` nor `stale_ns`), a read at `at`, or a stale read."""
        assert self.client is not None
        start = now_ns()
        try:
            result = await self.client.get(key, at=at, stale_ns=stale_ns, timeout_s=0.6)
        except ClientError:
            return
        strong = at is None and stale_ns is None
        self.history.append(Op("read", key, result.value, start, now_ns(), OK, result.ts, result.version_ts, strong=strong))
        self.read_stamps.append(result.ts)
