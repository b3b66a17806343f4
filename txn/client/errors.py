"""What the client reports: one exception class per thing the caller must do differently.

- `Unreachable`: no node accepted a connection (exit code 3 in the CLI);
- `NoLeader`: no replica served as leader within the deadline (exit 4);
- `OutcomeUnknown`: a write was delivered and its fate is unknown (exit 5):
  it may or may not have committed, and it is never retried silently;
- `Refused`: a request refused for a reason retrying will not fix (carries
  the reply): nothing was done; `ReadFailed` is its kind for reads;
- `TooLarge`: a write over the cluster's key, value or frame size limits,
  refused before it was sent: definitely not written;
- `RequestTimeout`: no replica could serve a read in time;
- `TxnAborted`: a transaction is definitely not committed (exit 6): running it
  again is safe (`Client.run_transaction` does, keeping its priority).
"""

from __future__ import annotations

from txn import api


class ClientError(Exception):
    """Base of every error the client reports."""


class Unreachable(ClientError):
    """No node of the cluster accepted a connection."""


class NoLeader(ClientError):
    """No replica of a tablet served as leader within the deadline."""


class OutcomeUnknown(ClientError):
    """A write was delivered but its fate is unknown: it may or may not have committed.

    `tablet_id` and `node` say where it went; `ts` is its commit timestamp if
    the leader had assigned one and said so (None otherwise); `txn_id` names
    the transaction whose commit (or one-phase commit) this was (None for a
    single write)."""

    def __init__(self, message: str, *, tablet_id: str | None = None, node: str | None = None, ts: object = None,
                 txn_id: str | None = None) -> None:
        super().__init__(message)
        self.tablet_id = tablet_id
        self.node = node
        self.ts = ts
        self.txn_id = txn_id


class TxnAborted(ClientError):
    """A transaction ended without committing; nothing of it is visible, so running it again is safe.

    `reason` is the node's `AbortReason` (wounded, lost_locks, timed_out,
    decided_abort, conflict); a participant that gave its coordinator no vote
    in time is a `conflict` (nothing was decided, so nothing committed)."""

    def __init__(self, txn_id: str, reason: str, message: str) -> None:
        super().__init__(f"transaction {txn_id} aborted ({reason}): {message}")
        self.txn_id = txn_id
        self.reason = reason
        self.message = message


class Refused(ClientError):
    """A request was refused for a reason retrying will not fix (bad request,
    permission denied); nothing of it was done."""

    def __init__(self, reply: api.ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply


class ReadFailed(Refused):
    """A read was refused for a reason retrying will not fix (future, below GC horizon)."""


class TooLarge(ClientError):
    """A write over the cluster's size limits (txn/api/limits.py) or the wire's
    frame limit: refused before it was sent, so definitely not written."""


class RequestTimeout(ClientError):
    """The deadline passed before any replica could answer a read."""
