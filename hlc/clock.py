"""The hybrid logical clock (Kulkarni et al., 2014) and commit-wait.

Role: hands out the timestamps of one node. Inputs: readings of an injected
`PhysicalClock` (`now_ns()`, `sleep_ns()`), and remote timestamps carried by
messages. Outputs: `Timestamp`s.

Invariants:
- `now()` is strictly increasing and never behind the physical clock's wall
  reading (it may be ahead, by at most what remote timestamps pushed it).
- After `update(r)`, every later `now()` is `> r` (causality).
- A remote timestamp more than `max_offset_ns` ahead of the local physical
  clock raises `ClockOffsetError` and leaves the clock unchanged, so one bad
  peer cannot drag the whole cluster's clocks into the future.
- A remote whose logical counter is `>= LOGICAL_LIMIT` (2**31) raises
  `ClockLogicalError` (a `ClockOffsetError`, so every receive path that drops
  skewed messages drops these too) and leaves the clock unchanged: a peer
  cannot push our counter near the encoding's 2**32 limit.
- The clock itself never hands out a logical counter `>= LOGICAL_LIMIT`: where
  the counter would reach it, the wall part moves 1 ns ahead instead and the
  counter restarts at 0 (still strictly increasing). So nothing a peer sends
  or a physical clock does can make `now()` or `update()` fail, and every
  timestamp we send is one our peers accept.
- While every accepted remote was within bound, `now().wall - physical` stays
  within `max_offset_ns`, and the logical counter stays small.

HAZARD: external consistency (DESIGN.md contract 1) holds only while every
node's physical clock is within `max_offset_ns` of true time. `commit_wait`
waits `ts.wall + max_offset_ns` on the *local* clock; if a node's clock is
slow by more than that, a transaction acknowledged by it may get a timestamp
below one that started after it elsewhere. Offset monitoring and fencing
(txn layer) are what keep the bound true in practice.

HAZARD: if a physical clock jumps backwards, `now()` keeps its wall value and
counts up the logical part until the physical clock catches up; a very large
backward jump therefore makes the logical counter grow; at `LOGICAL_LIMIT` it
carries into the wall part, which then runs ahead of the physical clock by
1 ns per 2**31 timestamps.

Pure: no trio, no time module; sleeping is delegated to the physical clock.
"""

from __future__ import annotations

from typing import Protocol

from hlc.timestamp import LOGICAL_MAX, Timestamp

# Remotes with a logical counter at or above this are rejected, and our own
# counter carries into the wall part before reaching it. A legitimate clock
# needs 2**31 readings within one nanosecond of wall time to get here; the
# encoding's limit (LOGICAL_MAX, 2**32 - 1) stays a factor of two away.
LOGICAL_LIMIT = 1 << 31
assert LOGICAL_LIMIT <= LOGICAL_MAX


class PhysicalClock(Protocol):
    """A source of wall-clock nanoseconds since the Unix epoch."""

    def now_ns(self) -> int: ...

    async def sleep_ns(self, duration_ns: int) -> None: ...


class ClockOffsetError(Exception):
    """A remote timestamp is further ahead of our physical clock than allowed."""

    def __init__(self, remote: Timestamp, physical_ns: int, max_offset_ns: int) -> None:
        self.remote = remote
        self.physical_ns = physical_ns
        self.max_offset_ns = max_offset_ns
        self.offset_ns = remote.wall - physical_ns
        super().__init__(
            f"remote timestamp {remote} is {self.offset_ns} ns ahead of the local clock "
            f"(max_offset {max_offset_ns} ns)"
        )


class ClockLogicalError(ClockOffsetError):
    """A remote timestamp's logical counter is too large to absorb safely."""

    def __init__(self, remote: Timestamp, physical_ns: int, max_offset_ns: int) -> None:
        self.remote = remote
        self.physical_ns = physical_ns
        self.max_offset_ns = max_offset_ns
        self.offset_ns = remote.wall - physical_ns
        Exception.__init__(
            self,
            f"remote timestamp {remote} has logical counter {remote.logical} "
            f"(limit {LOGICAL_LIMIT - 1}); refusing to absorb it",
        )


class HybridClock:
    """One node's HLC over an injected physical clock."""

    def __init__(self, physical: PhysicalClock, max_offset_ns: int) -> None:
        if max_offset_ns <= 0:
            raise ValueError(f"max_offset_ns must be positive: {max_offset_ns!r}")
        self.physical = physical
        self.max_offset_ns = max_offset_ns
        self._last = Timestamp.MIN

    @property
    def last(self) -> Timestamp:
        """The most recent timestamp handed out or absorbed (no clock read)."""
        return self._last

    def now(self) -> Timestamp:
        """A new timestamp, strictly above every earlier one of this clock."""
        physical_ns = self.physical.now_ns()
        last = self._last
        if physical_ns > last.wall:
            self._last = Timestamp(physical_ns, 0)
        elif last.logical + 1 < LOGICAL_LIMIT:
            self._last = Timestamp(last.wall, last.logical + 1)
        else:
            self._last = Timestamp(last.wall + 1, 0)  # carry: see LOGICAL_LIMIT
        return self._last

    def update(self, remote: Timestamp) -> Timestamp:
        """Absorb a remote timestamp (message receive); returns the new reading.

        Raises ClockOffsetError, leaving the clock unchanged, when `remote` is
        more than `max_offset_ns` ahead of the local physical clock, and its
        subclass ClockLogicalError when `remote.logical >= LOGICAL_LIMIT`.
        """
        physical_ns = self.physical.now_ns()
        if remote.wall - physical_ns > self.max_offset_ns:
            raise ClockOffsetError(remote, physical_ns, self.max_offset_ns)
        if remote.logical >= LOGICAL_LIMIT:
            raise ClockLogicalError(remote, physical_ns, self.max_offset_ns)
        last = self._last
        wall = max(last.wall, remote.wall, physical_ns)
        if wall == last.wall and wall == remote.wall:
            logical = max(last.logical, remote.logical) + 1
        elif wall == last.wall:
            logical = last.logical + 1
        elif wall == remote.wall:
            logical = remote.logical + 1
        else:
            logical = 0
        if logical >= LOGICAL_LIMIT:
            wall, logical = wall + 1, 0  # carry: see LOGICAL_LIMIT
        self._last = Timestamp(wall, logical)
        return self._last

    def commit_wait_remaining_ns(self, ts: Timestamp) -> int:
        """How long, on the local physical clock, until `ts` may be acknowledged."""
        return max(0, ts.wall + self.max_offset_ns + 1 - self.physical.now_ns())

    async def commit_wait(self, ts: Timestamp) -> None:
        """Return once the physical clock has passed `ts.wall + max_offset_ns`.

        Spanner section 4.1.2: no client can see a commit before its timestamp
        is in the past on every clock within the bound. Returns at once if it
        already has. Loops because a skewed or drifting clock may advance at a
        different rate from the sleep.
        """
        while (remaining := self.commit_wait_remaining_ns(ts)) > 0:
            await self.physical.sleep_ns(remaining)
