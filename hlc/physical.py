"""Physical clock sources: where a node's wall-clock nanoseconds come from.

Role: the edge between the pure HLC and the world. Each source has
`now_ns()` (nanoseconds since the Unix epoch) and `async sleep_ns(ns)`.

- `SystemClock`: the operating system's real-time clock.
- `ManualClock`: set and advanced by hand; `sleep_ns` advances it (tests).
- `SkewedClock`: wraps another source with an offset and a drift that can be
  changed while the node runs (the clock-skew injection tool drives this).
- `VirtualClock`: follows `trio.current_time()` mapped onto a fixed epoch, so
  a simulation under `trio.testing.MockClock` has per-node wall clocks with
  their own offset and drift, all deterministic.

Invariants: a source never raises from `now_ns()`; a skewed or virtual clock
with drift `d` ppm advances `1 + d/1e6` times as fast as its base.

HAZARD: `SystemClock` can jump (NTP steps, an operator). The HLC tolerates
backward jumps (it keeps its own maximum); forward jumps beyond `max_offset`
are what offset monitoring and fencing exist to catch.
"""

from __future__ import annotations

import time

import trio

# Simulated wall clocks start here: 2027-01-15T08:00:00Z, so simulated
# timestamps look like real ones and never sit near zero.
VIRTUAL_EPOCH_NS = 1_800_000_000_000_000_000
PPM = 1_000_000


class SystemClock:
    """The real-time clock of this machine."""

    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        await trio.sleep(max(0, duration_ns) / 1e9)


class ManualClock:
    """A clock that moves only when told to; sleeping advances it instantly."""

    def __init__(self, ns: int = VIRTUAL_EPOCH_NS) -> None:
        self._ns = ns

    def now_ns(self) -> int:
        return self._ns

    def set(self, ns: int) -> None:
        self._ns = ns

    def advance(self, ns: int) -> None:
        self._ns += ns

    async def sleep_ns(self, duration_ns: int) -> None:
        self._ns += max(0, duration_ns)
        await trio.lowlevel.checkpoint()


class SkewedClock:
    """Another clock plus an injected offset and drift, changeable at run time.

    Drift accumulates from the moment it is set: a clock given +100 ppm gains
    100 us per second of base time from then on. `clear()` removes offset,
    drift and what the drift had accumulated.
    """

    def __init__(self, base: "SystemClock | ManualClock | VirtualClock", offset_ns: int = 0, drift_ppm: int = 0) -> None:
        self.base = base
        self._offset_ns = offset_ns
        self._drift_ppm = 0
        self._drift_anchor_base_ns = base.now_ns()
        self._drift_accumulated_ns = 0
        self.set_drift(drift_ppm)

    @property
    def offset_ns(self) -> int:
        return self._offset_ns

    @property
    def drift_ppm(self) -> int:
        return self._drift_ppm

    def _drift_ns(self, base_ns: int) -> int:
        elapsed = base_ns - self._drift_anchor_base_ns
        return self._drift_accumulated_ns + elapsed * self._drift_ppm // PPM

    def skew_ns(self) -> int:
        """How far this clock currently is from its base (offset plus drift so far)."""
        return self._offset_ns + self._drift_ns(self.base.now_ns())

    def now_ns(self) -> int:
        base_ns = self.base.now_ns()
        return base_ns + self._offset_ns + self._drift_ns(base_ns)

    def set_offset(self, offset_ns: int) -> None:
        self._offset_ns = int(offset_ns)

    def bump(self, delta_ns: int) -> None:
        """A one-off jump of the clock by `delta_ns` (Jepsen's 'bump')."""
        self._offset_ns += int(delta_ns)

    def set_drift(self, drift_ppm: int) -> None:
        base_ns = self.base.now_ns()
        self._drift_accumulated_ns = self._drift_ns(base_ns)
        self._drift_anchor_base_ns = base_ns
        self._drift_ppm = int(drift_ppm)

    def clear(self) -> None:
        self._offset_ns = 0
        self._drift_ppm = 0
        self._drift_accumulated_ns = 0
        self._drift_anchor_base_ns = self.base.now_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        await self.base.sleep_ns(duration_ns)


class VirtualClock:
    """Wall time derived from trio's clock (MockClock in simulation).

    now_ns = VIRTUAL_EPOCH_NS + offset_ns + elapsed * (1 + drift_ppm / 1e6),
    where `elapsed` is trio.current_time() in integer nanoseconds.
    """

    def __init__(self, offset_ns: int = 0, drift_ppm: int = 0) -> None:
        self.offset_ns = offset_ns
        self.drift_ppm = drift_ppm

    def now_ns(self) -> int:
        elapsed = round(trio.current_time() * 1e9)
        return VIRTUAL_EPOCH_NS + self.offset_ns + elapsed + elapsed * self.drift_ppm // PPM

    async def sleep_ns(self, duration_ns: int) -> None:
        await trio.sleep(max(0, duration_ns) / 1e9)
