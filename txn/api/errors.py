"""Failures as values: the error codes a node answers with, and how the node raises them.

Role: a request that cannot be served ends with an `ErrorReply` whose `code`
tells the client what to do: retry elsewhere (`NOT_LEADER`, `TIMEOUT`,
`UNAVAILABLE`), never retry (`OUTCOME_UNKNOWN`), or give up (`BAD_REQUEST`,
`FUTURE_READ`, `BELOW_GC_HORIZON`). Inside the node, `failure(...)` builds a
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


@attrs.frozen
class ErrorReply:
    code: ErrorCode
    message: str
    leader_hint: str | None
    horizon: Timestamp | None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RequestFailed(Exception):
    """A request ends with an `ErrorReply`; carries it."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def failure(code: ErrorCode, message: str, *, leader_hint: str | None = None, horizon: Timestamp | None = None) -> RequestFailed:
    return RequestFailed(ErrorReply(code, message, leader_hint, horizon))


register_classes(ErrorReply)
