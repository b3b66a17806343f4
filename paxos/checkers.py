"""Pure checkers over a simulated Paxos history.

Role: record what each replica applied (and which snapshot it installed) and
fail on the first violation of:
- agreement: no slot is ever applied with two different commands anywhere;
- applied prefixes: each replica applies slots in order, without gaps, except
  that a snapshot install jumps to the snapshot's index (whose contents must
  themselves agree with every slot recorded so far);
- leases: at most one replica holds the lease at any instant of virtual time.

Inputs are plain values (node id, index, command, holders); no I/O.
"""

from __future__ import annotations

from typing import Iterable

import attrs


class CheckFailure(AssertionError):
    """A safety or liveness property did not hold."""


@attrs.define(eq=False)
class HistoryChecker:
    chosen: dict[int, bytes] = attrs.field(factory=dict)
    applied_index: dict[str, int] = attrs.field(factory=dict)
    lease_checks: int = 0

    def on_apply(self, node: str, index: int, command: bytes) -> None:
        expected = self.applied_index.get(node, 0) + 1
        if index != expected:
            raise CheckFailure(f"{node} applied slot {index} but its next slot is {expected}")
        self._agree(node, index, command)
        self.applied_index[node] = index

    def on_install(self, node: str, index: int, commands: Iterable[bytes]) -> None:
        count = 0
        for offset, command in enumerate(commands, start=1):
            self._agree(node, offset, command)
            count = offset
        if count != index:
            raise CheckFailure(f"{node} installed a snapshot at {index} holding {count} slots")
        self.applied_index[node] = index

    def on_restart(self, node: str, applied_index: int) -> None:
        self.applied_index[node] = applied_index

    def on_lease_holders(self, at_ns: int, holders: list[str]) -> None:
        self.lease_checks += 1
        if len(holders) > 1:
            raise CheckFailure(f"{len(holders)} lease holders at t={at_ns}ns: {', '.join(holders)}")

    def _agree(self, node: str, index: int, command: bytes) -> None:
        previous = self.chosen.setdefault(index, command)
        if previous != command:
            raise CheckFailure(f"slot {index} chosen twice: {previous!r} and {command!r} (seen at {node})")

    def longest_prefix(self) -> int:
        return max(self.applied_index.values(), default=0)
