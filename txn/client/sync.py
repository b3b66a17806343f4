"""`SyncClient`: the client library for scripts that do not run trio.

Each call runs one short trio run with its own connections; fine for a
script, too slow for a hot loop (use `open_client` there).

Transactions cannot hand a blocking `tx` to a plain function (the reads are
async under the hood), so `SyncClient.transaction(ops)` takes the whole
transaction as a list of operations, `("get", k)`, `("put", k, v)`,
`("delete", k)`, `("scan", start, end[, limit])`, runs them in order (retrying
`TxnAborted` like `Client.run_transaction`), and returns `(reads, commit_ts)`.
A value written can therefore not depend on a value read in the same call;
use the async `run_transaction` for read-modify-write.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import trio

from hlc import Timestamp
from txn.client.client import DEFAULT_TIMEOUT_S, GetResult, ScanResult, WriteResult, open_client
from txn.client.transaction import Op, apply_ops
from txn.client.txn_plan import ReadRow


class SyncClient:
    """Blocking wrapper for scripts: each call runs one short trio run."""

    def __init__(self, addresses: Sequence[tuple[str, int]], *, cluster_id: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 tls: Any = None) -> None:
        self.addresses = list(addresses)
        self.cluster_id = cluster_id
        self.timeout_s = timeout_s
        self.tls = tls  # txn.net.tls.ClientTls, or None for an --insecure cluster

    def _run(self, method: str, *args, **kwargs):
        async def go():
            async with open_client(self.addresses, cluster_id=self.cluster_id, timeout_s=self.timeout_s,
                                   tls=self.tls) as client:
                return await getattr(client, method)(*args, **kwargs)
        return trio.run(go)

    def put(self, key: bytes, value: bytes) -> WriteResult:
        return self._run("put", key, value)

    def delete(self, key: bytes) -> WriteResult:
        return self._run("delete", key)

    def get(self, key: bytes, **options) -> GetResult:
        return self._run("get", key, **options)

    def scan(self, start: bytes, end: bytes | None, **options) -> ScanResult:
        return self._run("scan", start, end, **options)

    def transaction(self, ops: Sequence[Op], *, max_attempts: int = 10) -> tuple[list[ReadRow], Timestamp | None]:
        """Run `ops` as one read-write transaction; (the reads of the attempt that committed, commit_ts)."""
        async def go():
            async with open_client(self.addresses, cluster_id=self.cluster_id, timeout_s=self.timeout_s, tls=self.tls) as client:
                async def body(tx):
                    await apply_ops(tx, ops)
                    return tx
                tx = await client.run_transaction(body, max_attempts=max_attempts)
                return tx.reads, tx.commit_ts
        return trio.run(go)

    def snapshot_get(self, keys: Iterable[bytes], *, at: Timestamp | None = None,
                     stale: int | str | None = None) -> tuple[list[ReadRow], Timestamp]:
        """Read `keys` at one timestamp (strong by default); (one ReadRow per key, the read timestamp)."""
        async def go():
            async with open_client(self.addresses, cluster_id=self.cluster_id, timeout_s=self.timeout_s, tls=self.tls) as client:
                async with client.snapshot(at=at, stale=stale) as snap:
                    for key in keys:
                        await snap.get(key)
                    return snap.reads, snap.ts
        return trio.run(go)
