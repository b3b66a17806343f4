"""Which commit decisions a coordinator's leader may forget, and when (decision GC).

Role: the pure bookkeeping behind `Forget` commands (txn/tablet/commands.py).
The leader's transaction handler (txn/tablet/transactions.py) tells it of
each commit it decided and of each participant's acknowledgement, and logs a
`Forget` for what `take_due` hands out. No trio, no clock: times are passed in
(trio's clock, in seconds).

Rules (why they make forgetting safe: ARCHITECTURE.md, Forgetting decisions):
- only commit decisions are tracked, from the moment their resolution starts,
  with the participants they must be resolved at (the coordinator's own part
  is resolved by the decision itself);
- a participant is done only when its serving leader answered a
  `ResolveRequest` naming the transaction: it then has no Prepare record of
  it left, so its recovery never asks about it again;
- once no participant is left, the decision is due `retention_s` later (so
  `chronodb inspect txn` still finds a fresh one);
- a decision whose resolution at some participant was given up is dropped:
  never forgotten, since that participant's recovery will ask;
- bounded: at most `max_waiting` decisions wait for acknowledgements and
  `max_due` for their retention; one that finds no room is not tracked
  (kept on disk, counted in `untracked`).

What a leader tracks is lost with its leadership's process, and another
leader does not know it; a decision given up is dropped: the leader's sweep
of old records (`TabletTransactions._sweep_decisions`) finds those, resolves
them again at every participant and forgets them once all answered.
"""

from __future__ import annotations

import collections
from typing import Iterable

MAX_WAITING = 100_000  # decisions waiting for their participants' acknowledgements
MAX_DUE = 400_000  # decisions waiting out their retention (about 150 bytes each)


class ForgetQueue:
    def __init__(self, retention_s: float, *, max_waiting: int = MAX_WAITING, max_due: int = MAX_DUE) -> None:
        if retention_s < 0:
            raise ValueError(f"retention_s must not be negative: {retention_s}")
        self.retention_s = retention_s
        self.max_waiting = max_waiting
        self.max_due = max_due
        self.waiting: dict[str, set[str]] = {}  # txn_id: participants that have not acknowledged
        self.due: collections.deque[tuple[float, str]] = collections.deque()  # (due at, txn_id), in time order
        self.untracked = 0

    def decided(self, txn_id: str, participants: Iterable[str], now_s: float) -> None:
        """A commit was decided here and its resolution at `participants` starts."""
        left = set(participants)
        if not left:
            self._retain(txn_id, now_s)
        elif len(self.waiting) < self.max_waiting:
            self.waiting[txn_id] = left
        else:
            self.untracked += 1

    def acknowledged(self, txn_id: str, participant: str, now_s: float) -> None:
        """`participant`'s serving leader answered a resolve request naming `txn_id`."""
        left = self.waiting.get(txn_id)
        if left is None:
            return
        left.discard(participant)
        if not left:
            del self.waiting[txn_id]
            self._retain(txn_id, now_s)

    def given_up(self, txn_id: str) -> None:
        """Its resolution at some participant was given up: never forget it."""
        self.waiting.pop(txn_id, None)

    def take_due(self, now_s: float, limit: int) -> list[str]:
        """Up to `limit` decisions whose retention has passed, oldest first (no longer tracked)."""
        taken: list[str] = []
        due = self.due
        while due and due[0][0] <= now_s and len(taken) < limit:
            taken.append(due.popleft()[1])
        return taken

    def put_back(self, txn_ids: list[str], now_s: float) -> None:
        """Decisions `take_due` gave whose `Forget` was not logged: due again at once."""
        for txn_id in reversed(txn_ids):
            self.due.appendleft((now_s, txn_id))

    def _retain(self, txn_id: str, now_s: float) -> None:
        if len(self.due) >= self.max_due:
            self.untracked += 1
            return
        self.due.append((now_s + self.retention_s, txn_id))
