"""hlc: timestamps, physical clock sources, the hybrid logical clock and commit-wait.

The bottom layer: imports nothing else of chronodb. Public names below are
what the other layers and the tools use.
"""

from hlc.clock import LOGICAL_LIMIT, ClockLogicalError, ClockOffsetError, HybridClock, PhysicalClock
from hlc.durations import format_duration_ns, format_iso, parse_duration_ns, parse_user_timestamp
from hlc.physical import ManualClock, SkewedClock, SystemClock, VirtualClock
from hlc.timestamp import Timestamp

__all__ = [
    "LOGICAL_LIMIT",
    "ClockLogicalError",
    "ClockOffsetError",
    "HybridClock",
    "ManualClock",
    "PhysicalClock",
    "SkewedClock",
    "SystemClock",
    "Timestamp",
    "VirtualClock",
    "format_duration_ns",
    "format_iso",
    "parse_duration_ns",
    "parse_user_timestamp",
]
