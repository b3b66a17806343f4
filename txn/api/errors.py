"""Failures as values: the error codes a node answers with, and how the node raises them.

Role: a request that cannot be served ends with an `ErrorReply` whose `code`
tells the client what to do: retry elsewhere (`NOT_LEADER`, `TIMEOUT`,
`UNAVAILABLE`), never retry (`OUTCOME_UNKNOWN`), or give up (`BAD_REQUEST`,
`FUTURE_READ`, `BELOW_GC_HORIZON`, `PERMISSION_DENIED`). Inside the node, `failure(...)` builds a
`RequestFailed` exception carrying the reply. Pure.
"""

from __future__ import annotations

import enum

import attrs

from hlc.timestamp import Timestamp
from txn.wire.codec import register_classes


class ErrorCode(enum.StrEnum):
    NOT_LEADER = "not_leader"  # not proposed: safe to retry at leader_hint
    OUTCOME_UNKNOWN = "outcome_unknown"  # proposed; may or may not commit
    BELOW_GC_HORIZON = "below_gc_horizon"
    FUTURE_READ = "future_read"
    TIMEOUT = "timeout"  # a read could not be served in time: safe to retry
    UNKNOWN_TABLET = "unknown_tablet"
    BAD_REQUEST = "bad_request"
    UNAVAILABLE = "unavailable"  # the node is starting, stopping or fenced
    TXN_ABORTED = "txn_aborted"  # the transaction is aborted (abort_reason says why): safe to run again
    PERMISSION_DENIED = "permission_denied"  # the sender's role may not send this request: nothing was done


class AbortReason(enum.StrEnum):
    WOUNDED = "wounded"  # an older transaction needed one of its locks
    LOST_LOCKS = "lost_locks"  # a read lock is gone (leader change): its reads may be stale
    TIMED_OUT = "timed_out"  # it held locks too long without finishing
    DECIDED_ABORT = "decided_abort"  # the coordinator logged an abort (presumed abort included)
    CONFLICT = "conflict"  # another transaction's write is in the way and cannot be waited for


@attrs.frozen
class ErrorReply:
    code: ErrorCode
    message: str
    leader_hint: str | None
    horizon: Timestamp | None
    abort_reason: AbortReason | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RequestFailed(Exception):
    """A request ends with an `ErrorReply`; carries it."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def failure(code: ErrorCode, message: str, *, leader_hint: str | None = None, horizon: Timestamp | None = None,
            abort_reason: AbortReason | None = None) -> RequestFailed:
    return RequestFailed(ErrorReply(code, message, leader_hint, horizon, abort_reason))


def aborted(reason: AbortReason, message: str) -> RequestFailed:
    return failure(ErrorCode.TXN_ABORTED, message, abort_reason=reason)


register_classes(ErrorReply)
