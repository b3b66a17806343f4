"""Per-task CPU accounting of a node's event loop, for `chronodb bench kv --task-cpu`.

Role: say exactly which of a node's trio tasks spent its CPU. A sampling
profiler (py-spy, `--profile`) counts a thread as busy whenever it is not
blocked, also while it waits for a core: on a box with more busy processes
than cores, a loopback send that wakes the receiver is often preempted inside
the call, and py-spy put 14% of a node's samples in `send()` where `perf
trace` measured under 2% of its time in the syscall. This instrument reads
the thread's CPU clock (`time.thread_time`: user + system time of the event
loop's thread only, never a wait) around every task step, and sums it per
task, by the qualified name of the task's coroutine. What is left of the
thread's CPU is the scheduler's own (the run loop, epoll, deadlines).

A node started with `chronodb node --task-cpu FILE` runs trio with
`TaskCpu` and writes a `snapshot()` to FILE (JSON, replaced atomically) on
each SIGUSR1 and when it stops; `bench kv --task-cpu` signals every node
before and after each figure and prints the difference per operation.

Invariants: counters only grow; a snapshot's `seq` grows by one per dump, so
a reader can tell a fresh dump from the last one. Costs two clock reads per
task step (about a microsecond on the machines measured), on only when asked.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import signal
import time
from typing import Any, Mapping

import attrs
import trio

SIGNAL = signal.SIGUSR1
log = logging.getLogger("chronodb.node")


class TaskCpu(trio.abc.Instrument):
    """Sums the event loop thread's CPU per task step, by task name."""

    def __init__(self) -> None:
        self.cpu_s: collections.Counter[str] = collections.Counter()
        self.steps: collections.Counter[str] = collections.Counter()
        self.loop_passes = 0
        self.seq = 0
        self._started_s = time.thread_time()
        self._step_started_s = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_started_s = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        name = task_name(task)
        self.cpu_s[name] += time.thread_time() - self._step_started_s
        self.steps[name] += 1

    def before_io_wait(self, timeout: float) -> None:
        self.loop_passes += 1

    def snapshot(self) -> dict[str, Any]:
        self.seq += 1
        return {"seq": self.seq, "thread_cpu_s": time.thread_time() - self._started_s,
                "loop_passes": self.loop_passes,
                "tasks": {name: [cpu_s, self.steps[name]] for name, cpu_s in self.cpu_s.items()}}


def task_name(task: trio.lowlevel.Task) -> str:
    """The task's coroutine's qualified name (`PaxosDriver.run`), else trio's name for the task."""
    return getattr(task.coro, "__qualname__", None) or task.name


def write_snapshot(instrument: TaskCpu, path: pathlib.Path) -> None:
    """One snapshot into `path`, replaced atomically (a reader never sees half a file)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(instrument.snapshot()))
    os.replace(temporary, path)


async def dump_on_signal(instrument: TaskCpu, path: pathlib.Path) -> None:
    """Write a snapshot on every SIGUSR1 until cancelled, and once more at the end. A write that
    fails (a full disk, the directory gone) is logged, never fatal: this is a benchmark's aid."""
    try:
        with trio.open_signal_receiver(SIGNAL) as signals:
            async for _ in signals:
                _write_logged(instrument, path)
    finally:
        _write_logged(instrument, path)


def _write_logged(instrument: TaskCpu, path: pathlib.Path) -> None:
    try:
        write_snapshot(instrument, path)
    except OSError as error:
        log.warning("cannot write the task CPU snapshot to %s: %s", path, error)


def writable_file_error(path: str) -> str | None:
    """Why `path` cannot take snapshots (its directory missing or not writable), or None."""
    directory = pathlib.Path(path).resolve().parent
    if not directory.is_dir():
        return f"--task-cpu {path}: directory {directory} does not exist"
    if not os.access(directory, os.W_OK):
        return f"--task-cpu {path}: directory {directory} is not writable"
    return None


def read_snapshot(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def request_snapshots(nodes: Mapping[str, tuple[int, pathlib.Path]], timeout_s: float = 5.0) -> dict[str, dict[str, Any]]:
    """Signal every node (id -> (pid, file)) and wait for each one's next snapshot; raises
    TimeoutError naming the nodes that wrote none within timeout_s."""
    before = {node_id: (read_snapshot(path) or {}).get("seq", 0) for node_id, (_, path) in nodes.items()}
    for pid, _ in nodes.values():
        os.kill(pid, SIGNAL)
    deadline = time.monotonic() + timeout_s
    fresh: dict[str, dict[str, Any]] = {}
    while len(fresh) < len(nodes):
        for node_id, (_, path) in nodes.items():
            snapshot = read_snapshot(path)
            if node_id not in fresh and snapshot is not None and snapshot["seq"] > before[node_id]:
                fresh[node_id] = snapshot
        if len(fresh) < len(nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no task CPU snapshot from {sorted(set(nodes) - set(fresh))} within {timeout_s:g}s")
            time.sleep(0.01)
    return fresh


@attrs.frozen
class TaskCpuFigure:
    """What the nodes' event loop threads spent between two sets of snapshots."""

    thread_cpu_s: float
    loop_passes: int
    tasks: dict[str, tuple[float, int]]  # name -> (CPU seconds, steps), summed over the nodes

    @property
    def in_tasks_s(self) -> float:
        return sum(cpu_s for cpu_s, _ in self.tasks.values())


def difference(before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]) -> TaskCpuFigure:
    tasks: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    thread_cpu_s, passes = 0.0, 0
    for node_id, late in after.items():
        early = before.get(node_id, {"thread_cpu_s": 0.0, "loop_passes": 0, "tasks": {}})
        thread_cpu_s += late["thread_cpu_s"] - early["thread_cpu_s"]
        passes += late["loop_passes"] - early["loop_passes"]
        for name, (cpu_s, steps) in late["tasks"].items():
            was_cpu_s, was_steps = early["tasks"].get(name, (0.0, 0))
            tasks[name][0] += cpu_s - was_cpu_s
            tasks[name][1] += steps - was_steps
    return TaskCpuFigure(thread_cpu_s, passes, {name: (cpu_s, int(steps)) for name, (cpu_s, steps) in tasks.items()})


def report(figure: TaskCpuFigure, operations: int, top: int = 8) -> list[str]:
    """Lines: the threads' CPU per operation, then the `top` tasks by CPU (per operation, steps per
    operation, CPU per step)."""
    if operations <= 0:
        return ["  task CPU: no operation completed"]
    per_op_us = 1e6 / operations
    lines = [f"  task CPU/op (event loop threads of all nodes): {figure.thread_cpu_s * per_op_us:,.0f} us, of which "
             f"{(figure.thread_cpu_s - figure.in_tasks_s) * per_op_us:,.0f} us between task steps; "
             f"{figure.loop_passes / operations:.2f} loop passes/op"]
    ranked = sorted(figure.tasks.items(), key=lambda item: item[1][0], reverse=True)[:top]
    width = max((len(name) for name, _ in ranked), default=0)
    for name, (cpu_s, steps) in ranked:
        per_step = f"{1e6 * cpu_s / steps:7.1f} us/step" if steps else ""
        lines.append(f"    {name:<{width}} {cpu_s * per_op_us:8.1f} us {steps / operations:7.2f} steps {per_step}")
    return lines
