"""The client's connections: one per node, opened once, held in the client's own nursery.

Role: `ConnectionPool` is the part of `Client` (txn/client/client.py) that
opens, reuses and forgets connections to nodes through the client's dialer
(TCP, TLS, or the simulated network), and makes one call on one. It knows
whether a request can have been delivered: `Unreachable` means it was not
(safe to send elsewhere), any other `TransportError` means it may have been.

Invariant: each connection lives in a task of the client's nursery (trio
wants a connection's nursery entered and left by one task; callers are any
of many tasks); a broken connection is forgotten and re-dialed on next use.
Only dialing takes the per-address connect lock; a call on an open, unbroken
connection goes straight to it (the lock, a schedule point even when free,
made a busy client's tasks queue: x1.6 strong reads/s in `bench kv`).
"""

from __future__ import annotations

from typing import Any

import trio

from txn.client.errors import Unreachable
from txn.net.messaging import TransportError

CONNECT_TIMEOUT_S = 2.0


class ConnectionPool:
    """Mixin of Client: its attributes (`dial`, `cluster_id`, `clock`, `_connections`,
    `_connect_locks`, `_nursery`) are set by Client.__init__ and open_client."""

    dial: Any
    cluster_id: str | None
    clock: Any
    _connections: dict[tuple[str, int], tuple[Any, trio.CancelScope]]
    _connect_locks: dict[tuple[str, int], trio.Lock]
    _nursery: trio.Nursery | None

    async def _connection(self, address: tuple[str, int], timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
        """Open (once) a connection within timeout_s; raises Unreachable when it cannot.

        Each connection lives in a task of the client's own nursery: trio wants
        a connection's nursery entered and left by one task, and the caller's
        task may be any of many concurrent ones. Nothing has been sent while
        this runs, so giving up here never leaves a request delivered."""
        with trio.move_on_after(timeout_s):
            return await self._open_connection(address)
        raise Unreachable(f"{address[0]}:{address[1]}: no connection within {timeout_s:.2g}s")

    async def _open_connection(self, address: tuple[str, int]) -> Any:
        lock = self._connect_locks.setdefault(address, trio.Lock())
        async with lock:
            held = self._connections.get(address)
            if held is None:
                assert self._nursery is not None, "use the client inside `async with open_client(...)`"
                try:
                    held = await self._nursery.start(self._hold_connection, address)
                except (TransportError, OSError) as error:
                    raise Unreachable(str(error)) from None
                self.cluster_id = held[0].cluster_id
                self._connections[address] = held
            return held[0]

    async def _hold_connection(self, address: tuple[str, int], *, task_status: trio.TaskStatus) -> None:
        started = False
        with trio.CancelScope() as scope:
            try:
                async with self.dial(address, self.cluster_id, self.clock) as connection:
                    task_status.started((connection, scope))
                    started = True
                    await trio.sleep_forever()
            except Exception:
                if not started:
                    raise
                # A connection that fails later is `broken`; callers reconnect.

    def _forget(self, address: tuple[str, int]) -> None:
        held = self._connections.pop(address, None)
        if held is not None:
            held[1].cancel()

    async def _call(self, address: tuple[str, int], message: object, timeout_s: float, *,
                    connect_timeout_s: float | None = None) -> object:
        """Raises Unreachable (not delivered) or TransportError (delivery unknown).

        Connecting (not yet sent) is bounded by connect_timeout_s, default
        min(timeout_s, CONNECT_TIMEOUT_S); the call itself by timeout_s."""
        connect_s = min(timeout_s, CONNECT_TIMEOUT_S) if connect_timeout_s is None else connect_timeout_s
        held = self._connections.get(address)
        if held is not None and held[0].broken is None:
            # The common case: an open connection, taken without the connect lock and its
            # deadline (acquiring a trio.Lock is a schedule point: one more task switch per call).
            connection = held[0]
        else:
            connection = await self._connection(address, connect_s)
        if connection.broken is not None:
            # Known dead before we send anything: reconnecting is safe.
            self._forget(address)
            connection = await self._connection(address, connect_s)
        try:
            return await connection.call(message, timeout_s=timeout_s)
        except TransportError:
            self._forget(address)
            raise

