"""Workloads of `chronodb verify`: client processes that drive a cluster and record a history.

Role: `RegisterWorkload` issues single-key puts of unique values, strong
reads, reads at past timestamps, stale reads, scans and read-backs of
acknowledged writes at their own timestamps, through the real client library
(txn/client/), and records each as a `RegisterOp` (tools/verify_register.py)
with invoke and complete times on the harness's one monotonic clock.
`run_final_phase` runs after every fault healed: a write and a strong read
per tablet, read-backs of acknowledged writes, and a strong scan; the checker
requires each tablet to serve (liveness).

Outcomes: a write the client reports as `OutcomeUnknown`, or that fails in a
way we did not foresee, is `info` (it may have happened); a write refused
before delivery (no leader, unreachable) is `fail`. A read that fails is
`fail`: it changed nothing. As in Jepsen, a process whose operation ended
`info` is retired and its worker continues as a new process.

Every workload (this one, tools/verify_list_append.py, tools/verify_bank.py)
shows tools/verify.py the same face: `name`, `recorder`, `setup(client,
groups)`, `worker(...)` (all of them on `paced_worker`, the shared paced
closed loop), `final_phase(client, groups, say)` and `check(healed_ns,
groups)` -> (verdict, liveness anomalies).

History lines (`op_to_json`): {"index", "process", "kind", "mode", "key",
"value", "end", "rows", "invoke_ns", "complete_ns", "outcome", "ts",
"version_ts", "error"}; timestamps as WALL.LOGICAL text.
"""

from __future__ import annotations

import random
import time
from typing import Any, Awaitable, Callable, TypeVar

import attrs
import trio

from hlc import Timestamp
from tools.verify_register import (
    AT, MAX_STALE, READ, READBACK, SCAN, STALE, STRONG, WRITE, RegisterOp, check_liveness, check_register,
)
from txn.client import Client, ClientError, OutcomeUnknown
from txn.client.routing import tablet_containing
from txn.sim.elle_records import FAIL, INFO, OK, Anomaly, Verdict

KEY_LETTERS = "acegikmoqsuwy"  # first bytes spread over the default split points (b, j, t)
R = TypeVar("R")
READBACK_MAX = 400  # read-backs of acknowledged writes in the final phase (plus each key's last write)
# The operation mix: kind (and read mode) -> weight.
MIX: tuple[tuple[str, str, int], ...] = (
    (WRITE, "", 35), (READ, STRONG, 25), (READ, AT, 12), (READ, STALE, 8), (READ, MAX_STALE, 5),
    (READ, READBACK, 5), (SCAN, STRONG, 5), (SCAN, AT, 5),
)


def now_ns() -> int:
    return time.monotonic_ns()


def register_keys(tag: str, count: int) -> list[str]:
    return [f"{KEY_LETTERS[i % len(KEY_LETTERS)]}-verify-{tag}-{i}" for i in range(count)]


def spread_keys(tag: str, kind: str, count: int) -> list[str]:
    """`count` keys dealt round-robin over the default tablets (split at b, j, t), so that
    consecutive keys are on different tablets."""
    return [f"{'acku'[i % 4]}-{kind}-{tag}-{i}" for i in range(count)]


def key_groups(client: Client, keys: list[str]) -> dict[str, list[str]]:
    """tablet id -> the workload keys it holds (the client's map must be loaded)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        tablet = tablet_containing(client.tablets, key.encode())
        assert tablet is not None, key
        groups.setdefault(tablet.id, []).append(key)
    return groups


@attrs.define(eq=False)
class Recorder:
    """The history so far (`RegisterOp`s, or the transactional workloads' `TxnRecord`s) and the
    counters the progress line shows."""

    start_ns: int
    history: list[Any] = attrs.field(factory=list)
    acked: list[RegisterOp] = attrs.field(factory=list)  # ok register writes, for read-backs

    def add(self, op: R) -> R:
        self.history.append(op)
        if isinstance(op, RegisterOp) and op.kind == WRITE and op.outcome == OK:
            self.acked.append(op)
        return op

    def counts(self) -> dict[str, int]:
        counts = {OK: 0, FAIL: 0, INFO: 0}
        for op in self.history:
            counts[op.outcome] += 1
        return counts


@attrs.define(eq=False)
class RegisterWorkload:
    keys: list[str]
    recorder: Recorder
    seed: str
    scan_end: str | None = None  # scans cover [scan_start, scan_end): every workload key
    counter: int = 0

    @property
    def scan_start(self) -> str:
        return min(self.keys)

    name = "register"

    async def setup(self, client: Client, groups: dict[str, list[str]]) -> None:
        """Nothing to prepare: a register never written reads as nothing."""

    async def worker(self, client: Client, worker: int, workers: int, interval_s: float, stop_at_s: float) -> None:
        await paced_worker(self.run_one, client, random.Random(f"{self.seed}/worker/{worker}"), worker, workers,
                           interval_s, stop_at_s)

    async def run_one(self, client: Client, process: int, rng: random.Random) -> str:
        kind, mode = rng.choices([(kind, mode) for kind, mode, _ in MIX], [weight for _, _, weight in MIX])[0]
        return (await self.run_op(client, process, kind, mode, rng)).outcome

    async def final_phase(self, client: Client, groups: dict[str, list[str]], say: Callable[[str], None]) -> None:
        await run_final_phase(self, client, groups, self.seed, say)

    def check(self, healed_ns: int, groups: dict[str, list[str]]) -> tuple[Verdict, list[Anomaly]]:
        history = self.recorder.history
        return check_register(history), check_liveness(history, healed_ns, groups)

    async def run_op(self, client: Client, process: int, kind: str, mode: str, rng: random.Random) -> RegisterOp:
        key = rng.choice(self.keys)
        if kind == WRITE:
            self.counter += 1
            return await self.write(client, process, key, f"{process}.{self.counter}")
        if kind == SCAN:
            at = None if mode == STRONG else past(client, rng)
            return await self.scan(client, process, mode, at)
        if mode == READBACK:
            if not self.recorder.acked:
                mode = STRONG
            else:
                target = rng.choice(self.recorder.acked[-200:])
                return await self.read(client, process, target.key, READBACK, at=target.ts)
        if mode == AT:
            return await self.read(client, process, key, AT, at=past(client, rng))
        if mode == STALE:
            return await self.read(client, process, key, STALE, stale_ns=rng.randint(1, 3000) * 1_000_000)
        if mode == MAX_STALE:
            return await self.read(client, process, key, MAX_STALE, max_stale_ns=rng.randint(100, 5000) * 1_000_000)
        return await self.read(client, process, key, STRONG)

    async def write(self, client: Client, process: int, key: str, value: str) -> RegisterOp:
        invoke = now_ns()
        try:
            result = await client.put(key.encode(), value.encode())
        except OutcomeUnknown as error:
            return self.done(RegisterOp(process, WRITE, invoke, now_ns(), INFO, key, value, error=str(error)))
        except ClientError as error:
            return self.done(RegisterOp(process, WRITE, invoke, now_ns(), FAIL, key, value, error=f"{type(error).__name__}: {error}"))
        except Exception as error:  # noqa: BLE001 - unforeseen: it may have happened
            return self.done(RegisterOp(process, WRITE, invoke, now_ns(), INFO, key, value, error=f"{type(error).__name__}: {error}"))
        return self.done(RegisterOp(process, WRITE, invoke, now_ns(), OK, key, value, ts=result.ts))

    async def read(self, client: Client, process: int, key: str, mode: str, **how: Any) -> RegisterOp:
        invoke = now_ns()
        try:
            result = await client.get(key.encode(), **how)
        except Exception as error:  # noqa: BLE001 - a failed read changed nothing
            return self.done(RegisterOp(process, READ, invoke, now_ns(), FAIL, key, mode=mode, error=f"{type(error).__name__}: {error}"))
        value = None if result.value is None else result.value.decode()
        return self.done(RegisterOp(process, READ, invoke, now_ns(), OK, key, value, mode, result.ts, result.version_ts))

    async def scan(self, client: Client, process: int, mode: str, at: Timestamp | None) -> RegisterOp:
        invoke = now_ns()
        try:
            result = await client.scan(self.scan_start.encode(), self.scan_end.encode() if self.scan_end else None, at=at)
        except Exception as error:  # noqa: BLE001
            return self.done(RegisterOp(process, SCAN, invoke, now_ns(), FAIL, self.scan_start, mode=mode,
                                        end=self.scan_end, error=f"{type(error).__name__}: {error}"))
        keys = set(self.keys)
        rows = [(row.key.decode(), row.value.decode(), row.version_ts) for row in result.rows if row.key.decode(errors="replace") in keys]
        return self.done(RegisterOp(process, SCAN, invoke, now_ns(), OK, self.scan_start, None, mode, result.ts,
                                    rows=rows, end=self.scan_end))

    def done(self, op: RegisterOp) -> RegisterOp:
        return self.recorder.add(op)


async def paced_worker(run_one: Callable[[Client, int, random.Random], Awaitable[str]], client: Client,
                       rng: random.Random, worker: int, workers: int, interval_s: float, stop_at_s: float) -> None:
    """One client's closed loop, paced to one operation per interval_s: `run_one(client, process, rng)`
    returns the outcome; after an `info` one the process is retired and a new one (+workers) continues."""
    process = worker
    next_s = trio.current_time() + rng.random() * interval_s
    while True:
        next_s = max(next_s + interval_s, trio.current_time())
        await trio.sleep_until(next_s)
        if trio.current_time() >= stop_at_s:
            return
        if await run_one(client, process, rng) == INFO:
            process += workers


def past(client: Client, rng: random.Random) -> Timestamp:
    """A timestamp 0-3 s in the past on the client's clock."""
    now = client.clock.now()
    return Timestamp(now.wall - rng.randint(0, 3000) * 1_000_000, 0)


async def run_final_phase(workload: RegisterWorkload, client: Client, groups: dict[str, list[str]], seed: str,
                          say: Callable[[str], None]) -> None:
    """After the heal: per tablet a write and a strong read; read-backs; one strong scan."""
    rng = random.Random(f"{seed}/final")
    process = -1
    for tablet_id, keys in sorted(groups.items()):
        key = rng.choice(keys)
        op = await workload.write(client, process, key, f"final.{tablet_id}")
        op2 = await workload.read(client, process, key, STRONG)
        say(f"final: tablet {tablet_id}: write {op.outcome}, strong read {op2.outcome}")
    acked = workload.recorder.acked
    last: dict[str, RegisterOp] = {op.key: op for op in acked}
    sample = rng.sample(acked, min(READBACK_MAX, len(acked))) + list(last.values())
    limiter = trio.CapacityLimiter(8)

    async def readback(op: RegisterOp) -> None:
        async with limiter:
            await workload.read(client, process, op.key, READBACK, at=op.ts)

    async with trio.open_nursery() as nursery:
        for op in sample:
            nursery.start_soon(readback, op)
    await workload.scan(client, process, STRONG, None)
    say(f"final: {len(sample)} read-backs of acknowledged writes at their own timestamps, one strong scan")


def ts_text(ts: Timestamp | None) -> str | None:
    return None if ts is None else str(ts)


def op_to_json(index: int, op: RegisterOp, start_ns: int) -> dict[str, Any]:
    return {
        "index": index, "process": op.process, "kind": op.kind, "mode": op.mode, "key": op.key, "value": op.value,
        "end": op.end, "rows": [[k, v, ts_text(t)] for k, v, t in op.rows], "invoke_ns": op.invoke_ns - start_ns,
        "complete_ns": op.complete_ns - start_ns, "outcome": op.outcome, "ts": ts_text(op.ts),
        "version_ts": ts_text(op.version_ts), "error": op.error,
    }


def op_from_json(line: dict[str, Any]) -> RegisterOp:
    parse = lambda text: None if text is None else Timestamp.parse(text)  # noqa: E731
    return RegisterOp(
        line["process"], line["kind"], line["invoke_ns"], line["complete_ns"], line["outcome"], line["key"],
        line["value"], line["mode"], parse(line["ts"]), parse(line["version_ts"]),
        [(k, v, parse(t)) for k, v, t in line["rows"]], line["end"], line["error"],
    )
