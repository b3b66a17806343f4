"""txn.client: the client library (above txn.node).

- `errors.py`   what the client reports (`OutcomeUnknown`, `NoLeader`, ...)
- `routing.py`  which replica to ask, in which order, and how long to back off
- `client.py`   `Client`, `open_client()`, `connect(dir=...)`
- `sync.py`     `SyncClient`, a blocking wrapper for scripts

`from txn.client import connect, open_client, SyncClient, OutcomeUnknown` is
the documented way in.
"""

from txn.client.client import Client, GetResult, ScanResult, WriteResult, connect, open_client
from txn.client.errors import ClientError, NoLeader, OutcomeUnknown, ReadFailed, RequestTimeout, Unreachable
from txn.client.sync import SyncClient

__all__ = [
    "Client", "ClientError", "GetResult", "NoLeader", "OutcomeUnknown", "ReadFailed", "RequestTimeout",
    "ScanResult", "SyncClient", "Unreachable", "WriteResult", "connect", "open_client",
]
