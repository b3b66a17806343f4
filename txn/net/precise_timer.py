"""A sleep precise to tens of microseconds, for commit-wait releases on real nodes.

Role: trio's own timeouts end in `epoll_wait`, whose timeout is whole
milliseconds, rounded up: a sleep ends on average about 0.8 ms past its
deadline. A commit-wait release that late adds that much to every write's
latency. The commit-wait timer used to sleep until 1 ms before a release and
then yield until it was due; that kept the event loop from ever blocking in
that millisecond, and under load, when a release is nearly always within a
millisecond, it spun for good and took CPU from the other processes of a small
box (ARCHITECTURE.md, commit-wait).

`PreciseTimer` is a Linux timerfd (CLOCK_MONOTONIC) the event loop waits on
like a socket: `sleep(delay_ns)` arms it, waits until it is readable, and
disarms it; the kernel's high-resolution timer wakes the loop once, within
the process's timer slack (50 us by default). Called through `ctypes` (the
`os.timerfd_*` functions are Python 3.13's): no extra package, and where
timerfd is missing (not Linux) `open_precise_timer()` returns None and the
caller keeps its old way.

Invariants: the fd is non-blocking and close-on-exec; `sleep` leaves the timer
disarmed, which also clears its expiry count, also when cancelled, so a later
wait cannot end early on a stale expiry; one task sleeps on a timer at a time.
A real node's only (the simulation's virtual clock cannot drive a kernel
timer; it keeps plain trio sleeps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import trio

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000  # = O_NONBLOCK on Linux
TFD_CLOEXEC = 0o2000000  # = O_CLOEXEC on Linux
NS_PER_S = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_DISARM = _Itimerspec()


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                         ctypes.POINTER(_Itimerspec)]
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


class PreciseTimer:
    """One timerfd; `sleep` is precise to the kernel's timer slack. Close it with `close()`."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd
        self._spec = _Itimerspec()

    async def sleep(self, delay_ns: int) -> None:
        """Sleep `delay_ns` of the monotonic clock (at once, with a checkpoint, if not positive)."""
        if delay_ns <= 0:
            await trio.lowlevel.checkpoint()
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(delay_ns, NS_PER_S)
        if self._libc.timerfd_settime(self.fd, 0, ctypes.byref(self._spec), None) != 0:
            await trio.sleep(delay_ns / NS_PER_S)  # not expected; late by up to a millisecond, never early
            return
        try:
            await trio.lowlevel.wait_readable(self.fd)
        finally:
            # Disarming also clears the expiry count (also one left by a cancelled wait), so the
            # fd is not readable until the next arming expires: no read needed.
            self._libc.timerfd_settime(self.fd, 0, ctypes.byref(_DISARM), None)

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.fd)
        os.close(self.fd)


def open_precise_timer() -> PreciseTimer | None:
    """A timerfd, or None where there is none (not Linux, or the call failed: the caller keeps its old way)."""
    if _LIBC is None:
        return None
    fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    if fd < 0:
        return None
    return PreciseTimer(_LIBC, fd)
