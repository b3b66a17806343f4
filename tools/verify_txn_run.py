"""Running and recording transactions and snapshots for `chronodb verify`'s list-append and bank workloads.

Role: the I/O half shared by tools/verify_list_append.py and
tools/verify_bank.py. `run_recorded` runs a transaction body through
`client.run_transaction` and records every attempt as a `TxnRecord`
(tools/verify_txn.py) with invoke and complete times on the harness's one
monotonic clock; `snapshot_recorded` does the same for a read-only snapshot
(`client.snapshot`: one read timestamp, strong, at a given timestamp, or
stale).

Outcomes (the rules of tools/verify_txn.py): an attempt followed by another
was aborted (`run_transaction` retries only after `TxnAborted`): `fail`; the
last one is `ok` when committed, `info` on `OutcomeUnknown` or an error no
rule foresaw, `fail` on any other `ClientError` (an abort, or refused before
the commit request was delivered). A snapshot that fails is `fail`: it
changed nothing. A snapshot's keys are read concurrently (`read_keys`), all
at its one timestamp, exactly as `Snapshot.get` reads them. An attempt is invoked when its body starts (its reads and
its commit all come after), so real-time edges into it are as tight as the
harness can make them; a snapshot is invoked before its timestamp is chosen.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

import attrs
import trio

from hlc import Timestamp
from tools.verify_workloads import Recorder, now_ns
from tools.verify_txn import TxnRecord
from txn.client import Client, ClientError, OutcomeUnknown, Snapshot, Transaction
from txn.sim.elle_records import FAIL, INFO, OK


@attrs.define(eq=False)
class Attempt:
    """What one attempt's body did, filled in as it runs."""

    tx: Transaction
    invoke_ns: int
    end_ns: int | None = None  # set when the next attempt starts
    error: str = ""  # what the body raised, if it raised
    mops: list[tuple[Any, ...]] = attrs.Factory(list)
    seen: list[tuple[str, int | None, str, Timestamp | None]] = attrs.Factory(list)
    writes: list[tuple[str, int]] = attrs.Factory(list)


Body = Callable[[Transaction, Attempt], Awaitable[None]]


def _error_text(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


async def run_recorded(client: Client, recorder: Recorder, process: int, kind: str, body: Body, *,
                       max_attempts: int) -> list[TxnRecord]:
    """Run `body` in a transaction (again after each abort, at most `max_attempts` times); one record per
    attempt, or one `fail` record without micro-operations if no attempt began."""
    attempts: list[Attempt] = []

    async def attempt_body(tx: Transaction) -> None:
        start = now_ns()
        if attempts:
            attempts[-1].end_ns = start
        attempt = Attempt(tx, start)
        attempts.append(attempt)
        try:
            await body(tx, attempt)
        except Exception as raised:
            attempt.error = _error_text(raised)
            raise

    invoke = now_ns()
    outcome, error, unknown_ts = OK, "", None
    try:
        await client.run_transaction(attempt_body, max_attempts=max_attempts)
    except OutcomeUnknown as raised:
        outcome, error = INFO, _error_text(raised)
        unknown_ts = raised.ts if isinstance(raised.ts, Timestamp) else None
    except ClientError as raised:
        outcome, error = FAIL, _error_text(raised)
    except Exception as raised:  # noqa: BLE001 - unforeseen: it may have committed
        outcome, error = INFO, _error_text(raised)
    end = now_ns()
    if not attempts:
        return [recorder.add(TxnRecord(process, kind, invoke, end, FAIL, error=error))]
    records = []
    for number, attempt in enumerate(attempts, 1):
        last = number == len(attempts)
        tx = attempt.tx
        commit_ts = tx.commit_ts if last and outcome == OK else unknown_ts if last else None
        records.append(recorder.add(TxnRecord(
            process, kind, attempt.invoke_ns, end if last else (attempt.end_ns or end), outcome if last else FAIL,
            attempt.mops, txn_id=tx.txn_id, attempt=number, commit_ts=commit_ts, seen=attempt.seen,
            writes=attempt.writes, error=error if last else _aborted_text(attempt),
        )))
    return records


def _aborted_text(attempt: Attempt) -> str:
    """Why an attempt that was run again ended: its body's error, or the abort at commit."""
    why = attempt.error or "TxnAborted at commit"
    if attempt.tx.aborted_earlier:
        why += f" (a leader had aborted it earlier: {attempt.tx.aborted_earlier})"
    return f"aborted, run again: {why}"


SnapshotBody = Callable[[Snapshot], Awaitable[tuple[Sequence[tuple[Any, ...]], Sequence[tuple[Any, ...]]]]]


async def snapshot_recorded(client: Client, recorder: Recorder, process: int, kind: str, mode: str,
                            body: SnapshotBody, *, at: Timestamp | None = None, stale_ns: int | None = None) -> TxnRecord:
    """Read through `body(snapshot)` -> (mops, seen) at one timestamp; one record."""
    invoke = now_ns()
    read_ts = at
    try:
        async with client.snapshot(at=at, stale=stale_ns) as snap:
            read_ts = snap.ts
            mops, seen = await body(snap)
    except Exception as raised:  # noqa: BLE001 - a failed snapshot changed nothing
        return recorder.add(TxnRecord(process, kind, invoke, now_ns(), FAIL, mode=mode, read_ts=read_ts,
                                      error=_error_text(raised)))
    return recorder.add(TxnRecord(process, kind, invoke, now_ns(), OK, mops, mode=mode, read_ts=read_ts, seen=seen))


async def read_keys(snap: Snapshot, keys: Sequence[str]) -> list[tuple[str, bytes | None, Timestamp | None]]:
    """(key, value, version ts) of every key at the snapshot's timestamp, read concurrently."""
    found: dict[str, tuple[bytes | None, Timestamp | None]] = {}

    async def read(key: str) -> None:
        result = await snap.client.get(key.encode(), at=snap.ts)
        found[key] = (result.value, result.version_ts if result.value is not None else None)

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(read, key)
    return [(key, *found[key]) for key in keys]
