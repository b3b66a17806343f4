"""The housekeeping grid (txn/net/coarse_timer.py): deadlines near the asked one, never now, shared.

Loops of different periods and phases that sleep with it wake together at
grid points, which is the point of it; a deadline already passed waits for
the next point instead of spinning.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, strategies as st

from txn.net.coarse_timer import GRAIN_S, coarse_deadline, grid_point_at_or_before_ns, lay_grid_on, sleep_coarse, suits


def on_grid(t: float) -> bool:
    return abs(t / GRAIN_S - round(t / GRAIN_S)) < 1e-6


@given(now=st.floats(0, 1e6), delay=st.floats(0, 10))
def test_a_coarse_deadline_is_a_grid_point_near_the_asked_one_and_after_now(now: float, delay: float) -> None:
    clock = trio.testing.MockClock()
    clock.jump(now)

    async def check() -> None:
        now_s = trio.current_time()
        deadline = coarse_deadline(now_s + delay)
        assert on_grid(deadline) and deadline > now_s
        if delay >= GRAIN_S / 2:
            assert abs(deadline - (now_s + delay)) <= GRAIN_S / 2 + 1e-6, "the nearest point"
        else:
            assert deadline - now_s <= GRAIN_S + 1e-6, "a passed or too-near point: the next one"

    trio.run(check, clock=clock)


async def test_loops_of_different_periods_wake_only_at_shared_grid_points(autojump_clock: trio.testing.MockClock) -> None:
    wakes: list[float] = []

    async def loop(period_s: float, phase_s: float) -> None:
        await trio.sleep(phase_s)
        while True:
            await sleep_coarse(period_s)
            wakes.append(trio.current_time())

    with trio.move_on_after(20):
        async with trio.open_nursery() as nursery:
            for period_s, phase_s in ((0.4, 0.013), (0.5, 0.137), (1.0, 0.29), (1.0, 0.71), (0.2, 0.05)):
                nursery.start_soon(loop, period_s, phase_s)
    assert wakes and all(on_grid(t) for t in wakes)
    distinct = len({round(t / GRAIN_S) for t in wakes})
    assert distinct <= 20 / GRAIN_S + 1, "no more wake-ups than grid points, however many loops"
    assert len(wakes) > 2 * distinct, "the loops share their wake-ups"


def test_only_loops_of_a_grain_or_more_use_it() -> None:
    assert suits(GRAIN_S) and suits(1.0) and not suits(0.05) and not suits(GRAIN_S * 0.9)


@given(now=st.floats(0, 1e6), delay=st.floats(0, 10), wall_shift=st.floats(1e9, 2e9),
       period_grains=st.integers(1, 10))
def test_laid_on_the_wall_clock_the_grid_is_the_walls(now: float, delay: float, wall_shift: float,
                                                      period_grains: int) -> None:
    # A node process lays the grid on the wall clock (tools/node.py), so every node's points coincide.
    clock = trio.testing.MockClock()
    clock.jump(now)
    wall_s = 0.0

    async def check() -> None:
        nonlocal wall_s
        wall_s = trio.current_time() + wall_shift
        lay_grid_on(lambda: wall_s)  # the wall clock, frozen with the virtual one
        try:
            now_s = trio.current_time()
            deadline = coarse_deadline(now_s + delay)
            assert deadline > now_s and abs(((deadline + wall_shift) / GRAIN_S) % 1 - 0.5) > 0.5 - 1e-3
            if delay >= GRAIN_S / 2:
                assert abs(deadline - (now_s + delay)) <= GRAIN_S / 2 + 1e-5, "the nearest point"
            period_ns = period_grains * round(GRAIN_S * 1e9)
            asked_ns = round((now_s + delay) * 1e9)
            shift_ns = round(wall_shift * 1e9)
            point_ns = grid_point_at_or_before_ns(asked_ns, period_ns)
            off_ns = (point_ns + shift_ns) % period_ns  # to within the float reading of the two clocks
            assert asked_ns - period_ns < point_ns <= asked_ns and min(off_ns, period_ns - off_ns) < 1_000
        finally:
            lay_grid_on(None)
        assert on_grid(coarse_deadline(now_s + 1.0)), "back on trio's clock"

    trio.run(check, clock=clock)


def test_a_passed_deadline_goes_to_a_point_strictly_after_a_now_that_floats_put_on_a_point() -> None:
    # 43 grains divided by the grain is 42.99999... in floats (8.6 / 0.2, and 17.2 / 0.4 too): floor
    # counted the point at now as passed and returned it, a deadline equal to now, so a loop asking
    # again at the same virtual instant spun there for ever.
    clock = trio.testing.MockClock()
    clock.jump(43 * GRAIN_S)

    async def check() -> None:
        now_s = trio.current_time()
        for asked in (now_s - 1.0, now_s - GRAIN_S / 2, now_s):
            assert now_s < coarse_deadline(asked) <= now_s + GRAIN_S + 1e-9

    trio.run(check, clock=clock)
