"""Size limits of what a write may carry, checked by the client and again by the node.

Role: one pure statement of the rule, so that a client refuses an oversized
write before sending it and a node refuses it before proposing anything
(txn/node/server.py), both with the same words. Either way the write
definitely did not happen: it is a refusal (`bad_request`), never an
outcome-unknown.

Invariants:
- a key is at most `max_key_bytes`, a value at most `max_value_bytes`
  (cluster.toml; defaults 4 KiB and 4 MiB, txn/api/cluster.py);
- a scan reply holds at most `MAX_SCAN_ROWS` rows and, past its first row,
  at most `MAX_SCAN_REPLY_BYTES` of keys and values, whatever limit the
  request asked for; a reply cut short says so (`more`), so a client pages
  on and never takes a short reply for the end of the range;
- the keys and values of one request to one tablet (a write batch, or a
  transaction's writes at one participant) total at most
  `WRITE_BATCH_BYTES_CEILING`: they become one Paxos command, which must fit
  one wire frame (16 MiB) with its envelope;
- a transaction id is at most `MAX_TXN_ID_BYTES` (UTF-8). The client makes
  its ids (a random token and a counter: about 20 bytes), but a request
  carries one as input: it keys the leader's locks, is logged in Prepare,
  Decide and Resolve commands and kept with every decision, and each one a
  coordinator resolves travels in a `ResolveRequest`. Unbounded (up to a
  frame), one client could make each of those a frame's size. The node
  refuses a request naming a longer one (`bad_request`, txn/node/server.py).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from txn.api.client import KeyWrite, Row

WRITE_BATCH_BYTES_CEILING = 12 << 20
MAX_SCAN_ROWS = 1000
MAX_SCAN_REPLY_BYTES = 4 << 20
MAX_TXN_ID_BYTES = 128


def scan_page(rows: Sequence[Row], limit: int) -> tuple[tuple[Row, ...], bool]:
    """The rows one scan reply may carry of `rows` (read with limit min(limit, MAX_SCAN_ROWS)),
    and whether the reply is cut short of what the request asked for."""
    total, kept = 0, []
    for row in rows:
        total += len(row.key) + len(row.value)
        if kept and total > MAX_SCAN_REPLY_BYTES:
            return tuple(kept), True
        kept.append(row)
    return tuple(kept), len(kept) >= MAX_SCAN_ROWS and limit > MAX_SCAN_ROWS


def oversize(writes: Iterable[KeyWrite], max_key_bytes: int, max_value_bytes: int) -> str | None:
    """Why these writes are too large to accept, or None when they fit."""
    total = 0
    for write in writes:
        if len(write.key) > max_key_bytes:
            return (f"key {write.key[:32]!r}... of {len(write.key)} bytes exceeds the cluster's max_key_bytes "
                    f"({max_key_bytes}): not written")
        size = 0 if write.value is None else len(write.value)
        if size > max_value_bytes:
            return (f"value of {size} bytes for key {write.key[:64]!r} exceeds the cluster's max_value_bytes "
                    f"({max_value_bytes}): not written")
        total += len(write.key) + size
    if total > WRITE_BATCH_BYTES_CEILING:
        return (f"the writes to one tablet total {total} bytes, over the {WRITE_BATCH_BYTES_CEILING}-byte "
                "limit of one replicated command: not written (split it into smaller transactions)")
    return None


def txn_id_problem(txn_id: str) -> str | None:
    """Why this transaction id is refused (too long), or None."""
    if len(txn_id) <= MAX_TXN_ID_BYTES // 4:  # UTF-8 takes at most 4 bytes a character
        return None
    size = len(txn_id.encode("utf-8", "surrogatepass"))
    if size <= MAX_TXN_ID_BYTES:
        return None
    return f"transaction id {txn_id[:32]!r}... of {size} bytes exceeds {MAX_TXN_ID_BYTES} bytes: refused"
