"""Coarse timers for a node's housekeeping loops, so that they wake together.

Role: an idle node's CPU is mostly its number of wake-ups (measured on the
2-core VMs this project runs on: a bare epoll loop woken 100 times a second
costs 1.3% of a core, a trio loop sleeping 10 ms at a time 3.5%, whatever
little each wake-up does). A node's housekeeping loops (the clock watch's
rounds, transaction recovery, the idle waits of the leadership and
commit-wait timers, the safe-time log, GC, connection keepalives and
silence checks) each slept on its own phase. Their deadlines are rounded to
the nearest point of one grid on trio's clock (`GRAIN_S` apart), so that
all falling due near the same point wake in one pass of the event loop.

Only for loops whose period is several grains and whose exact phase does not
matter: never for a commit-wait release, a heartbeat, a lease check or a
request's deadline. Pure arithmetic on `trio.current_time()`: in simulation
the grid is on the virtual clock and stays deterministic.

Invariant: a coarse deadline lies within `GRAIN_S / 2` of the one asked for,
and always after now (a loop that asked for "now or a moment ago" waits for
the next point, so it cannot spin).
"""

from __future__ import annotations

import math

import trio

GRAIN_S = 0.2


def coarse_deadline(deadline_s: float) -> float:
    """The grid point nearest `deadline_s` (trio clock), or the first one after now if that has passed."""
    nearest = math.floor(deadline_s / GRAIN_S + 0.5) * GRAIN_S
    now = trio.current_time()
    if nearest <= now:
        return (math.floor(now / GRAIN_S) + 1) * GRAIN_S
    return nearest


def suits(period_s: float) -> bool:
    """Whether a loop of this period may end its sleeps on the grid (at most a quarter of it moved)."""
    return period_s >= 2 * GRAIN_S


async def sleep_coarse(delay_s: float) -> None:
    """`trio.sleep(delay_s)`, ending on the grid."""
    await trio.sleep_until(coarse_deadline(trio.current_time() + delay_s))


async def sleep_until_coarse(deadline_s: float) -> None:
    """`trio.sleep_until(deadline_s)`, ending on the grid."""
    await trio.sleep_until(coarse_deadline(deadline_s))
