"""Coarse timers for a node's housekeeping loops, so that they wake together.

Role: an idle node's CPU is mostly its number of wake-ups (measured on the
2-core VMs this project runs on: a bare epoll loop woken 100 times a second
costs 1.3% of a core, a trio loop sleeping 10 ms at a time 3.5%, whatever
little each wake-up does). A node's housekeeping loops (the clock watch's
rounds, transaction recovery, the idle waits of the leadership and
commit-wait timers, the safe-time log, GC, connection keepalives and
silence checks) each slept on its own phase. Their deadlines are rounded to
the nearest point of one grid (`GRAIN_S` apart), so that all falling due
near the same point wake in one pass of the event loop.

Only for loops whose period is at least a grain and whose exact phase does
not matter: never for a commit-wait release, a lease check or a request's
deadline. A quiet Paxos leader's heartbeats are the one timed message on it:
`grid_point_at_or_before_ns` moves each earlier, never later, to a point of
the grid (paxos/replica.py), so the lease is renewed at least as often.
The grain is a quiet leader's heartbeat interval (400 ms), so every point
carries heartbeats and nothing wakes a node between them: a 200 ms grain
left every other point to the clock watch's rounds alone (an idle node
woke 12-14 times a second, 9 with 400 ms; ARCHITECTURE.md). That took the
clock watch judging a step when its sample arrives, not at the next round
(txn/node/clock_watch.py), so that the slower rounds only age samples.

Where the grid lies. By default on trio's clock: in simulation and in tests
the grid is on the virtual clock and stays deterministic. A node process
lays it on the OS wall clock (`lay_grid_on(time.time)`, tools/node.py), so
that the grids of every node of a cluster coincide to within their clock
offsets: a node's quiet heartbeats, the other leaders' heartbeats it
answers and its housekeeping then fall in the same instants (an idle node
woke 19-21 times a second with grids on each process's own trio clock,
12-14 with them on the wall clock: ARCHITECTURE.md, idle cost). The wall clock is
read at every use: if it steps, the grid moves with it, and the invariant
below still holds.

Invariant: a coarse deadline lies within `GRAIN_S / 2` of the one asked for,
and always after now (a loop that asked for "now or a moment ago" waits for
the next point, so it cannot spin).
"""

from __future__ import annotations

import math
from typing import Callable

import trio

GRAIN_S = 0.4  # a quiet leader's heartbeat interval (paxos/types.py): every point carries them


def _on_trio_clock() -> float:
    return 0.0


# Seconds to add to trio's clock to read the clock the grid is laid on (0: trio's own).
_grid_shift_s: Callable[[], float] = _on_trio_clock


def lay_grid_on(clock_s: Callable[[], float] | None) -> None:
    """Lay this process's grid on `clock_s` (seconds; a node process: `time.time`), or back on trio's clock (None)."""
    global _grid_shift_s
    _grid_shift_s = _on_trio_clock if clock_s is None else (lambda: clock_s() - trio.current_time())


def coarse_deadline(deadline_s: float) -> float:
    """The grid point nearest `deadline_s` (trio clock), or the first one after now if that has passed."""
    shift = _grid_shift_s()
    nearest = math.floor((deadline_s + shift) / GRAIN_S + 0.5) * GRAIN_S - shift
    now = trio.current_time()
    if nearest <= now:
        nearest = (math.floor((now + shift) / GRAIN_S) + 1) * GRAIN_S - shift
        if nearest <= now:  # now a hair below a point in floats: floor counted it as passed
            nearest += GRAIN_S
    return nearest


def grid_point_at_or_before_ns(deadline_ns: int, period_ns: int) -> int:
    """The latest point at or before `deadline_ns` (trio's clock in ns) of the grid of `period_ns` laid
    where the coarse grid is: with `period_ns` a whole number of grains, a point of the coarse grid."""
    shift_ns = round(_grid_shift_s() * 1e9)
    return (deadline_ns + shift_ns) // period_ns * period_ns - shift_ns


def suits(period_s: float) -> bool:
    """Whether a loop of this period may end its sleeps on the grid (at most half of it moved)."""
    return period_s >= GRAIN_S


async def sleep_coarse(delay_s: float) -> None:
    """`trio.sleep(delay_s)`, ending on the grid."""
    await trio.sleep_until(coarse_deadline(trio.current_time() + delay_s))


async def sleep_until_coarse(deadline_s: float) -> None:
    """`trio.sleep_until(deadline_s)`, ending on the grid."""
    await trio.sleep_until(coarse_deadline(deadline_s))
