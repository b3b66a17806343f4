"""Majority arithmetic shared by commit and lease tracking. Pure.

`majority(n)`: the smallest majority of n replicas.
`quorum_floor(values, n)`: the largest x such that a majority of the n
replicas report a value >= x; replicas with no report count as -infinity
(returns `default`). The leader uses it for the chosen index (values: match
indexes) and for its lease expiry (values: per-replica grant expiries, which
makes the lease end at the earliest expiry among the best-granting majority).
"""

from __future__ import annotations

from typing import Iterable


def majority(replica_count: int) -> int:
    assert replica_count >= 1, replica_count
    return replica_count // 2 + 1


def quorum_floor(values: Iterable[int], replica_count: int, default: int) -> int:
    ordered = sorted(values, reverse=True)
    need = majority(replica_count)
    if len(ordered) < need:
        return default
    return ordered[need - 1]
