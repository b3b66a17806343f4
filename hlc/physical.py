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

Injected skew is bounded (`SKEW_OFFSET_MAX_NS`, `SKEW_BUMP_MAX_NS`,
`SKEW_DRIFT_MAX_PPM`): `SkewedClock` raises `ValueError` naming the bound,
leaving its skew unchanged, for anything beyond them, and for a change that
would put its reading outside what a `Timestamp` encodes (0 <= wall < 2**64).
Within the bounds, leaving that range later would take a base clock near
either end or centuries of drift. `VirtualClock` is unchecked: simulations
choose its skew, not operators.

trio is imported inside the methods that sleep or read trio's clock, so that
`import hlc` (and everything pure that imports it) does not load trio.

HAZARD: `SystemClock` can jump (NTP steps, an operator). The HLC tolerates
backward jumps (it keeps its own maximum); forward jumps beyond `max_offset`
are what offset monitoring and fencing exist to catch.
"""

from __future__ import annotations

import time

from hlc.timestamp import WALL_MAX

# Simulated wall clocks start here: 2027-01-15T08:00:00Z, so simulated
# timestamps look like real ones and never sit near zero.
VIRTUAL_EPOCH_NS = 1_800_000_000_000_000_000
PPM = 1_000_000

# Bounds on injected skew (SkewedClock). Far beyond any sane max_offset, so
# every fencing and rejection scenario fits, yet a typo (`+100 years`, an
# offset of 1.7e19 ns) is refused instead of killing the node.
SKEW_OFFSET_MAX_NS = 3600 * 1_000_000_000  # |offset|, bumps included: 1 hour
SKEW_BUMP_MAX_NS = 3600 * 1_000_000_000  # |one bump|: 1 hour
SKEW_DRIFT_MAX_PPM = 100_000  # |drift|: 10%


def _bounded(name: str, value: int, bound: int, unit: str) -> int:
    """`value` as an int, or ValueError naming the bound it exceeds."""
    try:
        integer = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"skew {name} must be an integer number of {unit}: {value!r}") from None
    if abs(integer) > bound:
        raise ValueError(f"skew {name} {integer} {unit} exceeds the bound of +-{bound} {unit}")
    return integer


class SystemClock:
    """The real-time clock of this machine."""

    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        import trio

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
        import trio

        self._ns += max(0, duration_ns)
        await trio.lowlevel.checkpoint()


class SkewedClock:
    """Another clock plus an injected offset and drift, changeable at run time.

    Drift accumulates from the moment it is set: a clock given +100 ppm gains
    100 us per second of base time from then on. `clear()` removes offset,
    drift and what the drift had accumulated. Setters raise ValueError, and
    change nothing, beyond the SKEW_* bounds or the encodable wall range.
    """

    def __init__(self, base: "SystemClock | ManualClock | VirtualClock", offset_ns: int = 0, drift_ppm: int = 0) -> None:
        self.base = base
        self._offset_ns = 0
        self._drift_ppm = 0
        self._drift_anchor_base_ns = base.now_ns()
        self._drift_accumulated_ns = 0
        self.set_offset(offset_ns)
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

    def _check_reading(self, offset_ns: int, base_ns: int, drift_ns: int) -> None:
        reading = base_ns + offset_ns + drift_ns
        if not 0 <= reading <= WALL_MAX:
            raise ValueError(f"skew offset {offset_ns} ns would put the clock at {reading} ns, "
                             f"outside the timestamp range [0, 2**64)")

    def check_offset(self, offset_ns: int) -> int:
        """`offset_ns` as an int if `set_offset` would take it now; else ValueError.

        For callers that set an offset later, from a task where an exception
        would do harm (a strobe): check first, while a caller can be told.
        """
        offset_ns = _bounded("offset", offset_ns, SKEW_OFFSET_MAX_NS, "ns")
        base_ns = self.base.now_ns()
        self._check_reading(offset_ns, base_ns, self._drift_ns(base_ns))
        return offset_ns

    def set_offset(self, offset_ns: int) -> None:
        self._offset_ns = self.check_offset(offset_ns)

    def bump(self, delta_ns: int) -> None:
        """A one-off jump of the clock by `delta_ns` (Jepsen's 'bump')."""
        delta_ns = _bounded("bump", delta_ns, SKEW_BUMP_MAX_NS, "ns")
        offset_ns = self._offset_ns + delta_ns
        if abs(offset_ns) > SKEW_OFFSET_MAX_NS:
            raise ValueError(f"skew bump {delta_ns} ns would make the offset {offset_ns} ns, "
                             f"beyond the bound of +-{SKEW_OFFSET_MAX_NS} ns")
        self.set_offset(offset_ns)

    def set_drift(self, drift_ppm: int) -> None:
        drift_ppm = _bounded("drift", drift_ppm, SKEW_DRIFT_MAX_PPM, "ppm")
        base_ns = self.base.now_ns()
        self._drift_accumulated_ns = self._drift_ns(base_ns)
        self._drift_anchor_base_ns = base_ns
        self._drift_ppm = drift_ppm

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
        import trio

        elapsed = round(trio.current_time() * 1e9)
        return VIRTUAL_EPOCH_NS + self.offset_ns + elapsed + elapsed * self.drift_ppm // PPM

    async def sleep_ns(self, duration_ns: int) -> None:
        import trio

        await trio.sleep(max(0, duration_ns) / 1e9)
