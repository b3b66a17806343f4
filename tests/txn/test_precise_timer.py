"""The commit-wait timer's timerfd (txn/net/precise_timer.py): a sleep never ends early, leaves
nothing readable behind, and one cut short by a cancel leaves no stale expiry that would end the
next sleep at once. Real clocks, so only lower bounds are asserted (a loaded box may run late).
Linux only, as the nodes' precise commit-wait is (elsewhere there is no timerfd and the timer
yields instead)."""

from __future__ import annotations

import select
import time

import pytest
import trio

from txn.net import precise_timer
from txn.net.precise_timer import open_precise_timer


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


async def test_a_sleep_never_ends_early_and_leaves_the_timer_clean() -> None:
    timer = open_precise_timer()
    assert timer is not None
    try:
        for delay_ns in (300_000, 1_500_000, 4_000_000):
            started = time.monotonic_ns()
            await timer.sleep(delay_ns)
            assert time.monotonic_ns() - started >= delay_ns
            assert not readable(timer.fd), "the expiry was consumed"
        await timer.sleep(0)  # nothing to wait for: a checkpoint
        await timer.sleep(-5)
        assert not readable(timer.fd)
    finally:
        timer.close()


async def test_a_cancelled_sleep_leaves_no_stale_expiry() -> None:
    timer = open_precise_timer()
    assert timer is not None
    try:
        with trio.move_on_after(0.01):
            # Armed for 1 ms, then kept from waking: the loop is blocked past the expiry.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(timer.sleep, 1_000_000)
                await trio.testing.wait_all_tasks_blocked()
                time.sleep(0.003)  # the timer expires while nobody reads it
                nursery.cancel_scope.cancel()
        assert not readable(timer.fd)
        started = time.monotonic_ns()
        await timer.sleep(5_000_000)
        assert time.monotonic_ns() - started >= 5_000_000, "the next sleep ended on the old expiry"
    finally:
        timer.close()


def test_without_timerfd_there_is_no_precise_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precise_timer, "_LIBC", None)
    assert open_precise_timer() is None
