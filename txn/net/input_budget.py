"""The node-wide budget of bytes held in inbound client frames.

Role: part of the TCP transport (txn/net/transport.py). Every client
connection (anything that is not a configured peer) is an account; its
charge is the bytes of its incomplete frame (buffered in its FrameDecoder),
of the frames read and not yet dispatched, and of its requests being served
(each request's frame counts until its reply is queued). Inputs: `charge`
after every read and every answered request, `forget` when the connection
closes. Output: `wait_to_read`, which a connection awaits before each read.

Invariants:
- A connection holding something reads only while the node-wide charge is
  under `max_bytes`; otherwise it waits (its socket is not read: TCP
  backpressure on that client) until a charge shrinks. A connection holding
  nothing may always read, so a small request (one read) is served however
  full the budget is. Each read is at most one chunk (`CLIENT_RECEIVE_BYTES`
  in txn/net/connection.py), so what all clients make the node hold is at
  most `max_bytes`, plus one chunk per connection (1,024 x 64 KiB), plus
  one frame (the exception below): 144 MiB with the defaults.
- The connection whose incomplete frame began first, if that frame is all
  it holds, may always read: bytes already buffered cannot be given back
  without closing, so without it clients each holding part of a large frame
  would wait on one another forever. It finishes its frame (or its frame
  deadline closes it); the frame becomes a request that is answered, which
  frees budget for the next.
- Time spent waiting here is not charged against the connection's frame
  deadline (the connection adds it to `frame_paused_s`): a client we refuse
  to read is not slow.
"""

from __future__ import annotations

from typing import Any, Optional

import trio


class InputBudget:
    """Bytes held in inbound client frames across the node, with a waiting room."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_client_input_bytes must be positive: {max_bytes!r}")
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.peak_bytes = 0
        self.waits = 0  # reads that had to wait for budget
        self._held: dict[Any, int] = {}
        self._partial_since: dict[Any, float] = {}  # accounts with an incomplete frame: when it began
        self._lot = trio.lowlevel.ParkingLot()

    def charge(self, account: Any, held_bytes: int, partial_since: Optional[float], *, only_partial: bool) -> None:
        """Set what `account` holds now, when its incomplete frame began (None: none), and
        whether that frame is all it holds."""
        before = self._held.get(account, 0)
        self._held[account] = held_bytes
        self.held_bytes += held_bytes - before
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        assert self.held_bytes >= 0, self.held_bytes
        oldest_before = self._oldest() if self._lot else None
        if partial_since is None or not only_partial:
            self._partial_since.pop(account, None)
        else:
            self._partial_since[account] = partial_since
        if self._lot and (held_bytes < before or self._oldest() is not oldest_before):
            self._lot.unpark_all()

    def forget(self, account: Any) -> None:
        """The connection closed: whatever it held is freed."""
        self.charge(account, 0, None, only_partial=True)
        del self._held[account]

    def may_read(self, account: Any) -> bool:
        # A connection holding nothing reads one chunk whatever the budget: a small request (a
        # normal client's) is never stuck behind others' large frames; it costs one chunk.
        return self.held_bytes < self.max_bytes or not self._held.get(account) or self._oldest() is account

    async def wait_to_read(self, account: Any) -> float:
        """Return once `account` may read; the seconds it waited."""
        if self.may_read(account):
            return 0.0
        self.waits += 1
        began = trio.current_time()
        while not self.may_read(account):
            await self._lot.park()
        return trio.current_time() - began

    def _oldest(self) -> Any:
        """The connection whose incomplete frame began first, among those holding nothing else."""
        if not self._partial_since:
            return None
        return min(self._partial_since, key=self._partial_since.__getitem__)
