"""hlc: timestamps, the hybrid logical clock and commit-wait, and physical clock sources.

The bottom layer: imports nothing else of chronodb. The names below are pure
(no trio, no time): importing `hlc` never pulls in I/O, so pure modules of
every layer may use it. The physical clocks (system, skewed, virtual, manual)
touch the world and are imported from `hlc.physical` explicitly.
"""

from hlc.clock import LOGICAL_LIMIT, ClockLogicalError, ClockOffsetError, HybridClock, PhysicalClock
from hlc.durations import format_duration_ns, format_iso, parse_duration_ns, parse_user_timestamp
from hlc.timestamp import Timestamp

__all__ = [
    "LOGICAL_LIMIT",
    "ClockLogicalError",
    "ClockOffsetError",
    "HybridClock",
    "PhysicalClock",
    "Timestamp",
    "format_duration_ns",
    "format_iso",
    "parse_duration_ns",
    "parse_user_timestamp",
]
