"""Helpers for tests/e2e/test_hermitage.py: step-by-step interleavings of real transactions.

- `Steps`: named trio.Events, so one task per transaction can say "I got
  here" (`steps.done("t1 read x")`) and another can wait for it
  (`await steps.reach("t1 read x")`); `steps.log` keeps the order in which
  the steps were done (for messages on failure).
- `Outcome` + `attempt(...)`: run a transaction body and record how it ended:
  committed (with `commit_ts`) or `TxnAborted` (with its `reason`).
- `wait_waiting(client, key, holders)`: the observable sign that a request is
  blocked in a tablet leader's lock table. A request creates its lock-table
  entry before it learns it must wait, so the serving leader's
  `lock_holders` (StatusRequest) counts it. Tests call `quiesce` first so
  that every holder on the tablet is one of the test's own transactions.
- `gated_dialer`: a client dialer whose connections pass every call through
  an interceptor that may hold a message back until an event is set: it forces an order of delivery of parallel
  requests (e.g. two transactions' prepares at two tablets) that a slow
  network could produce anyway.

Keys: the default 4-tablet split puts keys starting with a.. on t1, b..i on
t2, j..s on t3 and t.. on t4; `key(tablet, name)` builds a key on the named
tablet ("t1".."t4").
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import attrs
import trio

from hlc import Timestamp
from txn.client import TxnAborted, open_client
from txn.client.client import Client, tcp_dialer

TABLET_PREFIX = {"t1": b"a", "t2": b"h", "t3": b"m", "t4": b"w"}
CLIENT_TIMEOUT_S = 30.0  # generous: the machine is shared and loaded
TEST_DEADLINE_S = 120.0


def key(tablet: str, name: str) -> bytes:
    return TABLET_PREFIX[tablet] + b"/" + name.encode()


class Steps:
    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self.log: list[str] = []

    def _event(self, name: str) -> trio.Event:
        return self._events.setdefault(name, trio.Event())

    def done(self, name: str) -> None:
        self.log.append(name)
        self._event(name).set()

    async def reach(self, name: str) -> None:
        await self._event(name).wait()

    def is_done(self, name: str) -> bool:
        return self._event(name).is_set()


@attrs.define
class Outcome:
    committed: bool = False
    commit_ts: Timestamp | None = None
    reason: str | None = None  # TxnAborted.reason
    error: TxnAborted | None = None
    reads: dict[str, Any] = attrs.Factory(dict)

    def __str__(self) -> str:
        state = f"committed at {self.commit_ts}" if self.committed else f"aborted ({self.reason}: {self.error})"
        return f"{state}, reads {self.reads}"


async def attempt(client: Client, priority: Timestamp, body: Callable[[Any, Outcome], Awaitable[None]],
                  outcome: Outcome) -> Outcome:
    """Run `body(tx, outcome)` in one transaction of `priority` and commit; record the end in `outcome`."""
    try:
        async with client.transaction(priority=priority) as tx:
            await body(tx, outcome)
    except TxnAborted as error:
        outcome.reason, outcome.error = error.reason, error
    else:
        outcome.committed, outcome.commit_ts = True, tx.commit_ts
    return outcome


async def priorities(client: Client, n: int) -> list[Timestamp]:
    """n wound-wait priorities, oldest first: explicit, 1 ms apart, from one node's clock.

    (Taking each from `client.transaction()` would ask whichever node answers,
    whose clocks differ by up to max_offset, so "started first" would not
    always mean "older".)"""
    base = (await client.node_timestamp()).now
    return [Timestamp(base.wall + i * 1_000_000, 0) for i in range(n)]


async def lock_holders(client: Client, tablet_id: str) -> int | None:
    """Transactions in the lock table of the tablet's serving leader (None: no serving leader answered)."""
    if not client.nodes:
        await client.refresh_map()
    for node_id in list(client.nodes):
        with contextlib.suppress(Exception):
            status = await client.node_status(node_id, timeout_s=5.0)
            for tablet in status.tablets:
                if tablet.id == tablet_id and tablet.serving:
                    return tablet.lock_holders
    return None


async def quiesce(client: Client) -> None:
    """Wait until no tablet leader holds locks (a previous 2PC's participants resolve asynchronously)."""
    if not client.tablets:
        await client.refresh_map()
    for tablet in client.tablets:
        while await lock_holders(client, tablet.id) != 0:
            await trio.sleep(0.05)


async def wait_waiting(client: Client, k: bytes, holders: int) -> None:
    """Wait until the leader of k's tablet has `holders` transactions in its lock table (one of them waiting)."""
    tablet = await client.tablet_for(k)
    while (await lock_holders(client, tablet.id) or 0) < holders:
        await trio.sleep(0.02)


async def tablet_of(client: Client, k: bytes) -> str:
    return (await client.tablet_for(k)).id


# ---- a dialer that holds chosen messages back -------------------------------------------

# intercept(message, send) -> reply: may wait before `await send()` and look at the reply after.
Gate = Callable[[object, Callable[[], Awaitable[object]]], Awaitable[object]]


@attrs.define(eq=False)
class _GatedConnection:
    inner: Any
    gate: Gate

    @property
    def cluster_id(self) -> str | None:
        return self.inner.cluster_id

    @property
    def broken(self) -> str | None:
        return self.inner.broken

    async def call(self, message: object, *, timeout_s: float) -> object:
        return await self.gate(message, lambda: self.inner.call(message, timeout_s=timeout_s))


def gated_dialer(gate: Gate, tls) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def dial(address, cluster_id, clock) -> AsyncIterator[_GatedConnection]:
        async with tcp_dialer(address, cluster_id, clock, tls=tls) as connection:
            yield _GatedConnection(connection, gate)
    return dial


@contextlib.asynccontextmanager
async def cluster_client(cluster, *, gate: Gate | None = None, timeout_s: float = CLIENT_TIMEOUT_S) -> AsyncIterator[Client]:
    addresses = [n.address for n in cluster.config.nodes]
    options: dict[str, Any] = {}
    if gate is not None:
        options["dial"] = gated_dialer(gate, cluster.tls)
        tls = None  # bound inside the gated dialer
    else:
        tls = cluster.tls
    async with open_client(addresses, cluster_id=cluster.config.cluster_id, max_offset_ns=cluster.config.max_offset_ns,
                           timeout_s=timeout_s, tls=tls, **options) as client:
        yield client


class CommitWatch:
    """An interceptor marking `steps.done(f"{name} commit sent")` when a named transaction's
    commit request (one-phase, or two-phase to its coordinator) is about to be sent.

    Register a transaction with `watch.names[tx.txn_id] = name`. "Sent" is what
    a client can know; where a request's arrival cannot be seen in the lock
    table (its transaction already holds locks on that tablet) the tests only
    rely on it being sent, and their assertions hold whichever arrives first."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.names: dict[str, str] = {}

    async def intercept(self, message: object, send: Callable[[], Awaitable[object]]) -> object:
        txn_id = getattr(message, "txn_id", None)
        if txn_id in self.names and type(message).__name__ in ("OnePhaseCommitRequest", "CommitRequest"):
            name = f"{self.names[txn_id]} commit sent"
            if not self.steps.is_done(name):
                self.steps.done(name)
        return await send()


def settle(cluster, timeout_s: float = 60.0) -> None:
    """Wait (bounded; then go on anyway) until every tablet is served by its preferred leader.

    A new cluster moves leadership to the preferred leaders a few seconds
    after it starts; a move drops the unprepared locks (then `lost_locks`) and
    would disturb the interleavings, so the tests start after it."""
    preferred = {t.id: t.preferred_leader for t in cluster.config.tablets}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and cluster.leaders() != preferred:
        time.sleep(0.1)


def run(cluster, scenario: Callable[[Client], Awaitable[Any]], *, deadline_s: float = TEST_DEADLINE_S,
        watch: CommitWatch | None = None) -> Any:
    """trio.run a scenario with a fresh client, after the leaders settled and the lock tables are empty."""
    settle(cluster)

    async def main() -> Any:
        with trio.fail_after(deadline_s):
            async with cluster_client(cluster, gate=None if watch is None else watch.intercept) as client:
                await quiesce(client)
                return await scenario(client)
    return trio.run(main)


__all__ = ["CommitWatch", "Outcome", "Steps", "attempt", "cluster_client", "gated_dialer", "key", "lock_holders",
           "priorities", "quiesce", "run", "settle", "tablet_of", "wait_waiting"]
