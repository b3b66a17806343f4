"""Physical clock sources: bounded skew injection, and `import hlc` without trio."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hlc.physical import ManualClock, SkewedClock
from hlc.physical import SKEW_BUMP_MAX_NS, SKEW_DRIFT_MAX_PPM, SKEW_OFFSET_MAX_NS, VIRTUAL_EPOCH_NS
from hlc.timestamp import WALL_MAX

HOUR_NS = 3600 * 1_000_000_000
YEAR_NS = 365 * 24 * HOUR_NS


def test_bounds_are_an_hour_and_ten_percent() -> None:
    assert SKEW_OFFSET_MAX_NS == SKEW_BUMP_MAX_NS == HOUR_NS
    assert SKEW_DRIFT_MAX_PPM == 100_000


def test_skew_at_the_bounds_is_accepted() -> None:
    base = ManualClock(VIRTUAL_EPOCH_NS)
    skewed = SkewedClock(base, offset_ns=-SKEW_OFFSET_MAX_NS, drift_ppm=-SKEW_DRIFT_MAX_PPM)
    assert skewed.now_ns() == VIRTUAL_EPOCH_NS - HOUR_NS
    skewed.bump(SKEW_BUMP_MAX_NS)
    skewed.bump(SKEW_BUMP_MAX_NS)
    assert skewed.offset_ns == SKEW_OFFSET_MAX_NS
    skewed.set_drift(SKEW_DRIFT_MAX_PPM)
    base.advance(1_000_000)
    assert skewed.now_ns() == VIRTUAL_EPOCH_NS + 1_000_000 + HOUR_NS + 100_000


@pytest.mark.parametrize(
    "change, bound",
    [
        (lambda clock: clock.set_offset(17_000_000_000_000_000_000), "offset"),  # the 1.7e19 that killed a node
        (lambda clock: clock.set_offset(1.7e19), "offset"),
        (lambda clock: clock.set_offset(-SKEW_OFFSET_MAX_NS - 1), "offset"),
        (lambda clock: clock.bump(100 * YEAR_NS), "bump"),
        (lambda clock: clock.bump(-SKEW_BUMP_MAX_NS - 1), "bump"),
        (lambda clock: clock.set_drift(SKEW_DRIFT_MAX_PPM + 1), "drift"),
        (lambda clock: clock.set_drift(-10**9), "drift"),
    ],
)
def test_skew_beyond_a_bound_raises_and_changes_nothing(change, bound: str) -> None:
    base = ManualClock(VIRTUAL_EPOCH_NS)
    skewed = SkewedClock(base, offset_ns=5, drift_ppm=10)
    before = (skewed.offset_ns, skewed.drift_ppm, skewed.now_ns())
    with pytest.raises(ValueError) as excinfo:
        change(skewed)
    message = str(excinfo.value)
    assert "\n" not in message and f"skew {bound}" in message and "bound" in message
    assert (skewed.offset_ns, skewed.drift_ppm, skewed.now_ns()) == before


def test_bumps_add_up_to_at_most_the_offset_bound() -> None:
    skewed = SkewedClock(ManualClock(VIRTUAL_EPOCH_NS), offset_ns=SKEW_OFFSET_MAX_NS - 10)
    with pytest.raises(ValueError, match=f"bound of \\+-{SKEW_OFFSET_MAX_NS} ns"):
        skewed.bump(11)
    assert skewed.offset_ns == SKEW_OFFSET_MAX_NS - 10
    skewed.bump(10)
    assert skewed.offset_ns == SKEW_OFFSET_MAX_NS


def test_check_offset_validates_without_changing_anything() -> None:
    skewed = SkewedClock(ManualClock(VIRTUAL_EPOCH_NS), offset_ns=7)
    assert skewed.check_offset(-HOUR_NS) == -HOUR_NS
    with pytest.raises(ValueError, match="skew offset"):
        skewed.check_offset(7 + HOUR_NS)  # a strobe of +1h on top of +7ns
    assert skewed.offset_ns == 7


def test_constructor_checks_the_bounds() -> None:
    with pytest.raises(ValueError, match="skew offset"):
        SkewedClock(ManualClock(VIRTUAL_EPOCH_NS), offset_ns=2 * HOUR_NS)
    with pytest.raises(ValueError, match="skew drift"):
        SkewedClock(ManualClock(VIRTUAL_EPOCH_NS), drift_ppm=200_000)
    with pytest.raises(ValueError, match="integer"):
        SkewedClock(ManualClock(VIRTUAL_EPOCH_NS), offset_ns=float("inf"))


@pytest.mark.parametrize("base_ns, offset_ns", [(10, -11), (WALL_MAX - 5, 6)])
def test_reading_stays_in_the_timestamp_range(base_ns: int, offset_ns: int) -> None:
    skewed = SkewedClock(ManualClock(base_ns))
    with pytest.raises(ValueError, match="outside the timestamp range"):
        skewed.set_offset(offset_ns)
    assert skewed.now_ns() == base_ns
    skewed.set_offset(offset_ns - 1 if offset_ns > 0 else offset_ns + 1)
    assert 0 <= skewed.now_ns() <= WALL_MAX


@pytest.mark.parametrize("statement", [
    "import hlc",
    "from hlc import Timestamp, HybridClock; from hlc.physical import SystemClock, SkewedClock, ManualClock, VirtualClock",
    "import mvcc",
])
def test_importing_hlc_does_not_load_trio(statement: str) -> None:
    # A fresh interpreter: this one has trio loaded by pytest-trio.
    code = f"import sys; {statement}; assert 'trio' not in sys.modules, sorted(m for m in sys.modules if 'trio' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)
