"""One worker thread per node for its replicas' synced Paxos log writes.

Role: a real node's `write_synced` (paxos/driver.py): `await writer.write(engine, batch)`
hands the batch to the node's log-writer thread, which writes and syncs it (LevelDB lets go
of the GIL meanwhile) while the event loop serves on; the engine's bookkeeping
(`note_write`) then runs back on the loop. This replaces `trio.to_thread.run_sync` per write:
one long-lived thread takes every write queued while it was busy (the node's tablets' turns
that came due together) and wakes the loop once for all of them, where a thread-cache job
per write cost a hand-off and a wake-up each.

Invariants:
- A write's caller is not woken before its batch is written and synced, nor abandoned on
  cancel: it waits uncancellably (as `to_thread.run_sync` without abandon did), since the
  engine outlives the call and a cancelled caller must not believe a write failed that
  stands, nor lose one that failed.
- Writes run in the order they were handed over (FIFO), one at a time; a failed write
  fails only its own caller (raised there), not the thread or the other writes. A write
  that hangs (a stalled disk) holds up the node's other tablets' writes behind it: they
  live in the same data directory, so on the same disk, anyway.
- The thread starts with the first write and is stopped by `close()`, which waits for it;
  a node closes its writer after its replicas' tasks ended (no write can be pending then).

Counts (read on the loop): `writes`, the synced writes done, and `wakeups`, the thread's passes
(each wakes the loop once); a node exports them as `chronodb_log_writes_total` and
`chronodb_log_writer_passes_total` (txn/node/metrics.py).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import trio

from mvcc.engine import Batch, Engine
from mvcc.engine_leveldb import LevelDbEngine

_Job = tuple[LevelDbEngine, Batch, trio.lowlevel.Task, list[Any]]


class LogWriter:
    """The node's log-writer thread (module docstring)."""

    def __init__(self, *, name: str = "chronodb-log-writer") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.wakeups = 0  # loop wake-ups so far (each finishes every write done since the last)
        self.writes = 0

    async def write(self, engine: Engine, batch: Batch) -> None:
        """Write `batch` to `engine`, synced, in the thread; then its bookkeeping on the loop."""
        assert isinstance(engine, LevelDbEngine), engine
        if self._thread is None:
            self._start()
        result: list[Any] = []
        self._jobs.put((engine, batch, trio.lowlevel.current_task(), result))
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        error = result[0]
        if error is not None:
            raise error  # nothing was written: no bookkeeping
        self.writes += 1
        engine.note_write(batch)

    def _start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            done = [job]
            while True:  # everything queued meanwhile: one loop wake-up for all of it
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    jobs.put(None)  # stop after these
                    break
                done.append(more)
            for engine, batch, _task, result in done:
                try:
                    engine.write_only(batch, sync=True)
                    result.append(None)
                except BaseException as error:  # raised in its caller's task
                    result.append(error)
            assert self._token is not None
            self._token.run_sync_soon(self._wake, done)

    def _wake(self, done: list[_Job]) -> None:
        self.wakeups += 1
        for _engine, _batch, task, _result in done:
            trio.lowlevel.reschedule(task)

    def close(self) -> None:
        """Stop the thread once it has written what it was given, and wait for it."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
