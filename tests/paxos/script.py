"""A hand-driven cluster of pure replica cores for scripted interaction tests.

Nothing moves unless the script says so: `propose`, `campaign`, `tick`,
`deliver(match)` (deliver, in send order, every pending message the filter
accepts; the receivers react at once) and `drop(match)`. Every delivered or
dropped message is written to `trace` as its one-line form, so a test can
print the interaction and compare it with an expected transcript.
Time is global virtual milliseconds; every replica's clock reads the same.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from paxos.messages import ZERO_BALLOT, Entry, describe
from paxos.replica import Replica
from paxos.types import PaxosConfig, PersistedState

MS = 1_000_000
Match = Callable[[str, str, Any], bool]


def everything(src: str, dst: str, msg: Any) -> bool:
    return True


class ScriptCluster:
    def __init__(self, ids: tuple[str, ...] = ("n1", "n2", "n3"), config: PaxosConfig | None = None,
                 quiet_heartbeat_at: Callable[[int, int], int] | None = None) -> None:
        self.ids = ids
        self.quiet_heartbeat_at = quiet_heartbeat_at
        # The scripts time their steps for 50 ms heartbeats and a 1 s lease (the defaults when they were written).
        self.config = config or PaxosConfig(heartbeat_ns=50 * MS, election_timeout_min_ns=300 * MS, election_timeout_max_ns=300 * MS,
                                            idle_heartbeat_ns=300 * MS, lease_ns=1_000 * MS)
        self.now = 0
        self.pending: list[tuple[str, str, Any]] = []
        self.trace: list[str] = []
        self.applied: dict[str, list[Entry]] = {node: [] for node in ids}
        self.installed: dict[str, list[Any]] = {node: [] for node in ids}
        self.cores = {node: self._boot(node) for node in ids}

    def _boot(self, node: str) -> Replica:
        return Replica(node_id=node, peers=self.ids, config=self.config, rng=random.Random(node),
                       persisted=PersistedState(ZERO_BALLOT, 0, ()), applied_index=0, now_ns=self.now,
                       quiet_heartbeat_at=self.quiet_heartbeat_at)

    def at(self, ms: int) -> "ScriptCluster":
        assert ms * MS >= self.now
        self.now = ms * MS
        self.trace.append(f"-- t={ms}ms")
        return self

    def note(self, text: str) -> None:
        self.trace.append(f"# {text}")

    def flush(self, node: str) -> None:
        core = self.cores[node]
        ready = core.ready(self.now)
        self.applied[node].extend(ready.apply)
        for out in ready.early_messages + ready.messages:
            self.pending.append((node, out.dst, out.message))
        core.advance(ready, self.now)
        if ready.install is not None:
            self.installed[node].append(ready.install)
        if ready.export_snapshot:  # the state machine's snapshot: three fixed chunks
            core.snapshot_exported(core.applied_index, [b"chunk-a", b"chunk-b", b"chunk-c"], self.now)
        if core.chosen_index > core.applied_index:
            self.flush(node)

    def propose(self, node: str, command: bytes) -> int | None:
        slot = self.cores[node].propose(command, self.now)
        self.flush(node)
        return slot

    def campaign(self, node: str) -> None:
        self.cores[node].campaign(self.now)
        self.flush(node)

    def tick(self, node: str) -> None:
        self.cores[node].tick(self.now)
        self.flush(node)

    def deliver(self, match: Match = everything, *, rounds: int = 1) -> None:
        for _ in range(rounds):
            taken = [item for item in self.pending if match(*item)]
            self.pending = [item for item in self.pending if not match(*item)]
            for src, dst, msg in taken:
                self.trace.append(describe(src, dst, msg))
                self.cores[dst].step(src, msg, self.now)
                self.flush(dst)

    def drop(self, match: Match = everything) -> None:
        for src, dst, msg in [item for item in self.pending if match(*item)]:
            self.trace.append(f"drop {describe(src, dst, msg)}")
        self.pending = [item for item in self.pending if not match(*item)]

    def chosen(self, node: str) -> list[bytes]:
        return [entry.command for entry in self.applied[node]]


def between(*nodes: str) -> Match:
    """Messages whose sender and receiver are both among `nodes`."""
    return lambda src, dst, msg: src in nodes and dst in nodes


def kind(name: str) -> Match:
    return lambda src, dst, msg: type(msg).__name__ == name


def both(a: Match, b: Match) -> Match:
    return lambda src, dst, msg: a(src, dst, msg) and b(src, dst, msg)
