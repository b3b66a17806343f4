"""Routing: which tablet holds a key, which replica to ask first, how long to back off.

Role: the client's pure policy (no I/O). Writes and strong reads go to the
leader the client last learned (from a reply or a `leader_hint`), then the
other replicas; stale reads go to the nearest replica (the node the client
first reached, if it holds the tablet), then followers, so that leaders keep
their capacity for writes and strong reads. Nodes that recently let an
attempt time out are tried last (`demote`). One attempt of a request gets
`attempt_timeout_s`: a fraction of the request's deadline, at least a floor.
"""

from __future__ import annotations

from typing import Iterable

from txn import api

BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.2
ATTEMPT_TIMEOUT_MIN_S = 0.5
ATTEMPT_TIMEOUT_FRACTION = 0.25


def attempt_timeout_s(remaining_s: float, total_s: float, *, min_s: float = ATTEMPT_TIMEOUT_MIN_S,
                      fraction: float = ATTEMPT_TIMEOUT_FRACTION) -> float:
    """How long one attempt may take: long enough for a healthy but busy node
    (at least min_s), short enough that a stalled one leaves time to ask another."""
    return min(remaining_s, max(min_s, fraction * total_s))


def demote(order: list[str], slow: list[str]) -> list[str]:
    """The same order with the slow nodes moved to the end, least recently slow
    first (`slow` is in that order), so that when every node is slow they
    still take turns. They are kept: they may be all there is."""
    return [node for node in order if node not in slow] + [node for node in slow if node in order]


def tablet_containing(tablets: Iterable[api.TabletInfo], key: bytes) -> api.TabletInfo | None:
    for tablet in tablets:
        if tablet.start <= key and (tablet.end is None or key < tablet.end):
            return tablet
    return None


def holds(tablet: api.TabletInfo, key: bytes) -> bool:
    return tablet.start <= key and (tablet.end is None or key < tablet.end)


def leader_order(tablet: api.TabletInfo, leader: str | None) -> list[str]:
    rest = [r for r in tablet.replicas if r != leader]
    return ([leader] if leader in tablet.replicas else []) + rest


def nearest_order(tablet: api.TabletInfo, leader: str | None, home: str | None) -> list[str]:
    first = [home] if home in tablet.replicas else []
    followers = [r for r in tablet.replicas if r != leader and r not in first]
    return first + followers + [r for r in tablet.replicas if r not in first and r not in followers]


class Backoff:
    """Capped exponential backoff between attempts of one request."""

    def __init__(self) -> None:
        self.next_s = BACKOFF_FIRST_S

    def take(self) -> float:
        delay_s = self.next_s
        self.next_s = min(self.next_s * 2, BACKOFF_MAX_S)
        return delay_s
