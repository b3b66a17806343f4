"""txn.client: the client library (above txn.node).

- `errors.py`   what the client reports (`OutcomeUnknown`, `NoLeader`, ...)
- `routing.py`  which replica to ask, in which order, and how long to back off
- `txn_plan.py`  a transaction's pure decisions: read-your-writes, commit plan, retry delays
- `transaction.py` `Transaction` (2PL reads, buffered writes, 1PC/2PC commit), `Snapshot`
- `client.py`   `Client`, `open_client()`, `connect(dir=...)`
- `sync.py`     `SyncClient`, a blocking wrapper for scripts

`from txn.client import connect, open_client, SyncClient, OutcomeUnknown,
TxnAborted` is the documented way in.
"""

from txn.client.client import Client, GetResult, ScanResult, WriteResult, connect, open_client
from txn.client.errors import (
    ClientError, NoLeader, OutcomeUnknown, ReadFailed, Refused, RequestTimeout, TooLarge, TxnAborted, Unreachable,
)
from txn.client.sync import SyncClient
from txn.client.transaction import Snapshot, Transaction
from txn.client.txn_plan import ReadRow

__all__ = [
    "Client", "ClientError", "GetResult", "NoLeader", "OutcomeUnknown", "ReadFailed", "Refused", "ReadRow", "RequestTimeout", "TooLarge",
    "ScanResult", "Snapshot", "SyncClient", "Transaction", "TxnAborted", "Unreachable", "WriteResult", "connect",
    "open_client",
]
