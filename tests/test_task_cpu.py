"""Per-task CPU accounting (tools/task_cpu.py): CPU lands on the task that spent it, steps are
counted exactly, snapshots are written on SIGUSR1 and at the end, and a figure is the
difference of two sets of snapshots per operation."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time

import pytest
import trio
import trio.testing

from tools.task_cpu import TaskCpu, TaskCpuFigure, difference, dump_on_signal, report, request_snapshots


async def burn(cpu_s: float) -> None:
    """Spend cpu_s of this thread's CPU in one task step (no checkpoint inside)."""
    until = time.thread_time() + cpu_s
    while time.thread_time() < until:
        pass


async def sleeper(checkpoints: int) -> None:
    for _ in range(checkpoints):
        await trio.sleep(0)


def test_cpu_goes_to_the_task_that_spent_it_and_steps_are_counted() -> None:
    instrument = TaskCpu()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(burn, 0.05)
            nursery.start_soon(sleeper, 4)

    trio.run(main, instruments=[instrument])
    assert instrument.cpu_s["burn"] >= 0.05, instrument.cpu_s
    assert instrument.cpu_s["sleeper"] < 0.01 < instrument.cpu_s["burn"], instrument.cpu_s
    assert instrument.steps["burn"] == 1, "one step: it never yields"
    assert instrument.steps["sleeper"] == 5, "a step before each of 4 checkpoints, and the last"
    snapshot = instrument.snapshot()
    assert snapshot["seq"] == 1 and snapshot["thread_cpu_s"] >= sum(instrument.cpu_s.values())
    assert snapshot["tasks"]["burn"] == [instrument.cpu_s["burn"], 1]
    assert instrument.snapshot()["seq"] == 2


def test_a_snapshot_is_written_on_sigusr1_and_at_the_end(tmp_path: pathlib.Path) -> None:
    instrument = TaskCpu()
    path = tmp_path / "n1.json"
    seen: list[dict] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dump_on_signal, instrument, path)
            await trio.testing.wait_all_tasks_blocked()
            await burn(0.01)
            os.kill(os.getpid(), signal.SIGUSR1)
            with trio.fail_after(10):
                while not path.exists():
                    await trio.sleep(0.01)
            seen.append(json.loads(path.read_text()))
            nursery.cancel_scope.cancel()

    trio.run(main, instruments=[instrument])
    [main_cpu_s] = [cpu_s for name, (cpu_s, _) in seen[0]["tasks"].items() if name.endswith("<locals>.main")]
    assert seen[0]["seq"] == 1 and main_cpu_s >= 0.01, seen
    final = json.loads(path.read_text())
    assert final["seq"] == 2, "written once more as the task ended"
    assert not (tmp_path / "n1.json.tmp").exists()


def test_request_snapshots_names_a_node_that_never_answers(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "n1.json"
    path.write_text(json.dumps({"seq": 3, "thread_cpu_s": 1.0, "loop_passes": 1, "tasks": {}}))
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)  # a "node" that ignores the signal
    try:
        started = time.monotonic()
        try:
            request_snapshots({"n1": (os.getpid(), path)}, timeout_s=0.2)
        except TimeoutError as error:
            assert "n1" in str(error)
        else:
            raise AssertionError("an old snapshot (seq 3) was taken for a fresh one")
        assert time.monotonic() - started >= 0.2
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_figure_is_the_difference_summed_over_nodes_per_operation() -> None:
    before = {"n1": {"thread_cpu_s": 1.0, "loop_passes": 10, "tasks": {"drive": [0.5, 100], "serve": [0.2, 50]}},
              "n2": {"thread_cpu_s": 2.0, "loop_passes": 20, "tasks": {"drive": [1.0, 200]}}}
    after = {"n1": {"thread_cpu_s": 1.5, "loop_passes": 110, "tasks": {"drive": [0.7, 300], "serve": [0.4, 250]}},
             "n2": {"thread_cpu_s": 2.5, "loop_passes": 120, "tasks": {"drive": [1.3, 400], "new": [0.05, 10]}}}
    figure = difference(before, after)
    assert figure == TaskCpuFigure(1.0, 200, {"drive": (0.5, 400), "serve": (0.2, 200), "new": (0.05, 10)})
    lines = report(figure, operations=1000, top=2)
    assert lines[0] == ("  task CPU/op (event loop threads of all nodes): 1,000 us, of which 250 us between "
                        "task steps; 0.20 loop passes/op")
    assert lines[1].split() == ["drive", "500.0", "us", "0.40", "steps", "1250.0", "us/step"]
    assert lines[2].split() == ["serve", "200.0", "us", "0.20", "steps", "1000.0", "us/step"]
    assert len(lines) == 3
    assert report(figure, operations=0) == ["  task CPU: no operation completed"]


def test_a_node_refuses_a_task_cpu_file_it_could_not_write(tmp_path: pathlib.Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from tools import cli

    code = cli.main(["node", "--dir", str(tmp_path), "--id", "n1", "--insecure",
                     "--task-cpu", str(tmp_path / "missing" / "n1.json")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1, (code, out, err)
    assert "--task-cpu" in err and "does not exist" in err, err


def test_a_snapshot_that_cannot_be_written_is_logged_not_fatal(tmp_path: pathlib.Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    instrument = TaskCpu()
    path = tmp_path / "gone" / "n1.json"  # its directory vanished after the node started

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dump_on_signal, instrument, path)
            await trio.testing.wait_all_tasks_blocked()
            os.kill(os.getpid(), signal.SIGUSR1)
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main, instruments=[instrument])  # no exception: the node would have lived on
    assert caplog.text.count("cannot write the task CPU snapshot") == 2, caplog.text
