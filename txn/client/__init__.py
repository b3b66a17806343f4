"""txn.client: the client library (above txn.node).

- `errors.py`   what the client reports (`OutcomeUnknown`, `NoLeader`, ...)
- `routing.py`  the tablet map, replica order and the retry policy
- `client.py`   `Client`, `open_client()`, `connect(dir=...)`
- `sync.py`     `SyncClient`, a blocking wrapper for scripts

`from txn.client import connect, open_client, SyncClient, OutcomeUnknown` is
the documented way in.
"""

from txn.client.client import (
    Client,
    ClientError,
    GetResult,
    NoLeader,
    OutcomeUnknown,
    ReadFailed,
    RequestTimeout,
    ScanResult,
    SyncClient,
    Unreachable,
    WriteResult,
    open_client,
)

__all__ = [
    "Client", "ClientError", "GetResult", "NoLeader", "OutcomeUnknown", "ReadFailed", "RequestTimeout",
    "ScanResult", "SyncClient", "Unreachable", "WriteResult", "open_client",
]
