"""Timestamps: the total order every committed write and every read lives in.

Role: the value type shared by every layer. A `Timestamp(wall, logical)` is a
hybrid-logical-clock reading: `wall` is integer nanoseconds since the Unix
epoch, `logical` a counter that orders events sharing one wall value.

Invariants:
- Ordering is (wall, logical), lexicographic; `MIN` and `MAX` bound it.
- `to_bytes()` is 12 bytes, big-endian (8 wall, 4 logical), so comparing the
  encodings as bytes gives the same answer as comparing timestamps. The MVCC
  key encoding and the wire format rely on this.
- Text form is `WALL.LOGICAL` in decimal; `parse(str(ts)) == ts`.
- Construction validates ranges, so an out-of-range timestamp can never be
  encoded (nor silently truncated) later.

Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import re
import struct
from typing import ClassVar

import attrs

WALL_MAX = (1 << 64) - 1
LOGICAL_MAX = (1 << 32) - 1
ENCODED_SIZE = 12

_STRUCT = struct.Struct(">QI")
_new = object.__new__
_set = object.__setattr__
_TEXT = re.compile(r"(\d+)\.(\d+)")


def _check_wall(_instance: object, _attribute: object, value: int) -> None:
    if type(value) is not int or not 0 <= value <= WALL_MAX:
        raise ValueError(f"timestamp wall must be an integer in [0, 2**64): {value!r}")


def _check_logical(_instance: object, _attribute: object, value: int) -> None:
    if type(value) is not int or not 0 <= value <= LOGICAL_MAX:
        raise ValueError(f"timestamp logical must be an integer in [0, 2**32): {value!r}")


@attrs.frozen(order=False, slots=True)
class Timestamp:
    """A point in the database's total order: wall nanoseconds, then a counter."""

    wall: int = attrs.field(validator=_check_wall)
    logical: int = attrs.field(default=0, validator=_check_logical)

    MIN: ClassVar["Timestamp"]
    MAX: ClassVar["Timestamp"]

    # Hand-written ordering: attrs' generated one costs ~2us per comparison,
    # and timestamps are compared on every read, write and apply.
    def __lt__(self, other: object) -> bool:
        if other.__class__ is not Timestamp:
            return NotImplemented
        return (self.wall, self.logical) < (other.wall, other.logical)  # type: ignore[attr-defined]

    def __le__(self, other: object) -> bool:
        if other.__class__ is not Timestamp:
            return NotImplemented
        return (self.wall, self.logical) <= (other.wall, other.logical)  # type: ignore[attr-defined]

    def __gt__(self, other: object) -> bool:
        if other.__class__ is not Timestamp:
            return NotImplemented
        return (self.wall, self.logical) > (other.wall, other.logical)  # type: ignore[attr-defined]

    def __ge__(self, other: object) -> bool:
        if other.__class__ is not Timestamp:
            return NotImplemented
        return (self.wall, self.logical) >= (other.wall, other.logical)  # type: ignore[attr-defined]

    def to_bytes(self) -> bytes:
        """12 bytes whose byte order equals timestamp order."""
        return _STRUCT.pack(self.wall, self.logical)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Timestamp":
        if len(data) != ENCODED_SIZE:
            raise ValueError(f"an encoded timestamp is {ENCODED_SIZE} bytes, got {len(data)}: {bytes(data)!r}")
        wall, logical = _STRUCT.unpack(data)
        # Unpacked from 8 and 4 bytes, so in range by construction: the validators are skipped
        # (timestamps are decoded several times per request; the validators were half the cost).
        ts = _new(cls)
        _set(ts, "wall", wall)
        _set(ts, "logical", logical)
        return ts

    @classmethod
    def parse(cls, text: str) -> "Timestamp":
        """Read the `WALL.LOGICAL` text form; ValueError quotes bad input."""
        match = _TEXT.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not a timestamp (expected WALL.LOGICAL, e.g. 1795000000123456789.0): {text!r}")
        wall, logical = int(match.group(1)), int(match.group(2))
        if wall > WALL_MAX or logical > LOGICAL_MAX:
            raise ValueError(f"timestamp out of range (wall < 2**64, logical < 2**32): {text!r}")
        return cls(wall, logical)

    def next(self) -> "Timestamp":
        """The smallest timestamp strictly above this one."""
        if self.logical < LOGICAL_MAX:
            return Timestamp(self.wall, self.logical + 1)
        if self.wall < WALL_MAX:
            return Timestamp(self.wall + 1, 0)
        raise ValueError("Timestamp.MAX has no successor")

    def prev(self) -> "Timestamp":
        """The largest timestamp strictly below this one."""
        if self.logical > 0:
            return Timestamp(self.wall, self.logical - 1)
        if self.wall > 0:
            return Timestamp(self.wall - 1, LOGICAL_MAX)
        raise ValueError("Timestamp.MIN has no predecessor")

    def __str__(self) -> str:
        return f"{self.wall}.{self.logical}"


Timestamp.MIN = Timestamp(0, 0)
Timestamp.MAX = Timestamp(WALL_MAX, LOGICAL_MAX)
