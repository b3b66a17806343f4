"""`chronodb demo --clock`: a narrated demonstration of the hybrid logical clock alone.

No cluster: three nodes' clocks, one skewed, exchange messages; every
timestamp is printed, commit-wait is shown, and a message from a node whose
clock has run too far ahead is rejected rather than absorbed.
"""

from __future__ import annotations


import trio

from hlc import ClockOffsetError, HybridClock, Timestamp, format_duration_ns
from hlc.physical import SkewedClock, SystemClock

MAX_OFFSET_NS = 10_000_000


def say(text: str) -> None:
    print(text, flush=True)


def show(node: str, event: str, ts: Timestamp, clock: HybridClock) -> None:
    physical = clock.physical.now_ns()
    lead = format_duration_ns(ts.wall - physical)
    say(f"  {node}  {event:<34} ts={ts}  (hlc wall - physical = {lead})")


async def clock_demo() -> None:
    base = SystemClock()
    physical = {name: SkewedClock(base) for name in ("n1", "n2", "n3")}
    physical["n3"].set_offset(MAX_OFFSET_NS // 2)
    clocks = {name: HybridClock(source, MAX_OFFSET_NS) for name, source in physical.items()}

    say("chronodb clock demo: three nodes, max_offset = 10ms")
    say("n3's physical clock is 5ms fast (within the bound).\n")

    say("1. Each node reads its own hybrid clock:")
    for name, clock in clocks.items():
        show(name, "now()", clock.now(), clock)

    say("\n2. n3 sends a message to n1; n1's clock jumps forward to stay causal:")
    sent = clocks["n3"].now()
    show("n3", "send", sent, clocks["n3"])
    received = clocks["n1"].update(sent)
    show("n1", f"receive (remote {sent})", received, clocks["n1"])
    say(f"  n1's next reading is above n3's message: {clocks['n1'].now()} > {sent}")

    say("\n3. n1 commits a write at its timestamp and waits out the clock uncertainty:")
    commit_ts = clocks["n1"].now()
    remaining = clocks["n1"].commit_wait_remaining_ns(commit_ts)
    start = trio.current_time()
    await clocks["n1"].commit_wait(commit_ts)
    waited = round((trio.current_time() - start) * 1e9)
    show("n1", "commit", commit_ts, clocks["n1"])
    say(f"  commit-wait: {format_duration_ns(remaining)} to go, waited {format_duration_ns(waited)};"
        " now every clock within 10ms has passed the commit timestamp.")

    say("\n4. n2's clock runs 50ms fast (5x the bound) and it sends to n1:")
    physical["n2"].set_offset(50 * 1_000_000)
    bad = clocks["n2"].now()
    show("n2", "send", bad, clocks["n2"])
    before = clocks["n1"].last
    try:
        clocks["n1"].update(bad)
        say("  UNEXPECTED: n1 absorbed it")
    except ClockOffsetError as error:
        say(f"  n1 rejects it: {error}")
    say(f"  n1's clock is unchanged: {clocks['n1'].last} == {before}")

    say("\n5. The skew is cleared, but n2's hybrid clock never goes backwards:")
    physical["n2"].clear()
    ahead = clocks["n2"].now()
    show("n2", "send", ahead, clocks["n2"])
    try:
        clocks["n1"].update(ahead)
        say("  n1 accepts it")
    except ClockOffsetError as error:
        say(f"  n1 still rejects it: {error}")
    wait_ns = ahead.wall - physical["n1"].now_ns()
    say(f"  n2 is fenced by its own past: it must wait about {format_duration_ns(wait_ns)}"
        " for real time to catch up with what its HLC already handed out.")
    await trio.sleep(max(0, wait_ns) / 1e9)
    ok = clocks["n2"].now()
    show("n2", "send", ok, clocks["n2"])
    show("n1", "receive", clocks["n1"].update(ok), clocks["n1"])
    say("\nDone.")
