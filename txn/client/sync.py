"""`SyncClient`: the client library for scripts that do not run trio.

Each call runs one short trio run with its own connections; fine for a
script, too slow for a hot loop (use `open_client` there).
"""

from __future__ import annotations

from typing import Any, Sequence

import trio

from txn.client.client import DEFAULT_TIMEOUT_S, GetResult, ScanResult, WriteResult, open_client


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
