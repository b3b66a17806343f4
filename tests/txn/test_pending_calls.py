"""Calls awaiting a response (txn/net/messaging.py `PendingCalls`): deadlines kept by the sweeper.

On trio's mock clock, so every deadline is exact: a call times out at its own
deadline even when an earlier-started call has a later one, answered calls
return their bodies, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

import pytest
import trio
import trio.testing

from txn.net.messaging import PeerUnreachable, PendingCalls, RpcTimeout
from txn.wire import Kind


async def call(pending: PendingCalls, timeout_s: float, outcomes: dict[str, object], name: str,
               request_ids: dict[str, int]) -> None:
    request_id, waiter = pending.open()
    request_ids[name] = request_id
    started = trio.current_time()
    try:
        outcomes[name] = await pending.wait_swept(request_id, waiter, "n2", timeout_s)
    except (RpcTimeout, PeerUnreachable) as error:
        outcomes[name] = error
    outcomes[name + "_at"] = trio.current_time() - started


@contextlib.asynccontextmanager
async def swept() -> AsyncIterator[tuple[PendingCalls, dict[str, object], dict[str, int], trio.Nursery]]:
    """A PendingCalls with its sweeper running; a call that never ends fails the test at 30 s."""
    pending = PendingCalls()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pending.sweep)
            await trio.testing.wait_all_tasks_blocked()
            yield pending, {}, {}, nursery
            nursery.cancel_scope.cancel()


async def test_the_sweeper_times_out_each_call_at_its_own_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async with swept() as (pending, outcomes, ids, nursery):
        nursery.start_soon(call, pending, 5.0, outcomes, "long", ids)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, pending, 1.0, outcomes, "short", ids)  # later, but due first
        nursery.start_soon(call, pending, 3.0, outcomes, "answered", ids)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.5)
        assert pending.resolve(ids["answered"], Kind.RESPONSE, "body")
        await trio.sleep(10)
        assert len(pending) == 0, "every call's slot is freed"
    assert isinstance(outcomes["short"], RpcTimeout) and "within 1s" in str(outcomes["short"])
    assert outcomes["short_at"] == pytest.approx(1.0)
    assert isinstance(outcomes["long"], RpcTimeout) and outcomes["long_at"] == pytest.approx(5.0)
    assert outcomes["answered"] == "body" and outcomes["answered_at"] == pytest.approx(0.5)


async def test_without_a_sweeper_a_call_keeps_its_own_deadline(autojump_clock: trio.testing.MockClock) -> None:
    pending = PendingCalls()
    outcomes: dict[str, object] = {}
    await call(pending, 2.0, outcomes, "alone", {})
    assert isinstance(outcomes["alone"], RpcTimeout) and outcomes["alone_at"] == pytest.approx(2.0)


async def test_a_late_answer_after_the_sweep_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    async with swept() as (pending, outcomes, ids, _):
        await call(pending, 1.0, outcomes, "late", ids)
        assert not pending.resolve(ids["late"], Kind.RESPONSE, "too late")
    assert isinstance(outcomes["late"], RpcTimeout) and outcomes["late_at"] == pytest.approx(1.0)


async def test_a_nan_timeout_is_refused_as_before_not_waited_out(autojump_clock: trio.testing.MockClock) -> None:
    """No deadline compares with NaN: the sweeper would never fail such a call. It is refused
    the way a call's own cancel scope refuses it, and its slot is freed."""
    async with swept() as (pending, _, _, _):
        request_id, waiter = pending.open()
        with pytest.raises(ValueError, match="NaN"):
            await pending.wait_swept(request_id, waiter, "n2", float("nan"))
        assert len(pending) == 0
