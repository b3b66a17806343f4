"""`chronodb bench kv --task-cpu`, short: real node processes count their event loop's CPU per trio
task, and every row is followed by that CPU per operation, split by task, naming the Paxos driver
and the reading task that starts a write (no request task of its own), and the tasks that answer
a read."""

from __future__ import annotations

import re

import pytest

from tests.e2e.harness import run_cli

pytestmark = pytest.mark.e2e

HEADER = re.compile(r"^  task CPU/op \(event loop threads of all nodes\): ([\d,]+) us, of which ([\d,]+) us between "
                    r"task steps; ([\d.]+) loop passes/op$")
BOX = re.compile(r"; box (?P<busy>\d+)% busy \(\d+% user, \d+% system\), (?P<switches>[\d.]+) context switches/op"
                 r"; largest node's RssAnon (?P<rss_before>\d+) -> (?P<rss_after>\d+) MiB"
                 r"; log writes (?P<log_per_op>[\d.]+)/op, (?:(?P<log_per_pass>[\d.]+) a pass|no pass)$")
TASK = re.compile(r"^    (?P<name>\S+) +(?P<us>[\d.]+) us +(?P<steps>[\d.]+) steps +(?P<per_step>[\d.]+) us/step$")


def test_every_row_is_followed_by_the_nodes_cpu_per_task(tmp_path) -> None:
    result = run_cli(["bench", "kv", "--seconds", "1", "--concurrency", "4",
                      "--security", "insecure", "--workloads", "write,strong-read", "--task-cpu"], timeout_s=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # The default layout (tools/bench_kv.py DEFAULT_PROCESSES): writes from one client process,
    # reads from three; the setup says so, and each row names the processes it ran in.
    assert any(line.startswith("clients:") and "client processes: write 1, strong-read 3;" in line
               for line in lines), result.stdout
    rows = [i for i, line in enumerate(lines) if re.match(r"^(write|strong-read) +4 ", line)]
    assert len(rows) == 2, result.stdout
    for row in rows:
        expected = "(1 process)" if lines[row].startswith("write") else "(3 processes)"
        assert re.search(r", clients [\d,]+ us " + re.escape(expected) + ";", lines[row]), lines[row]
        # The whole machine over the figure (tools/box_cpu.py): Linux has /proc/stat.
        box = BOX.search(lines[row])
        assert box and 0 < int(box["busy"]) <= 100 and float(box["switches"]) > 0, lines[row]
        # A node's own memory at the figure's start and end (a Python process holds megabytes).
        assert int(box["rss_before"]) > 0 and int(box["rss_after"]) > 0, lines[row]
        if lines[row].startswith("write"):
            # Every write was synced on a majority: read from the nodes' log-writer counters
            # (tools/log_writes.py), and a pass of a node's thread writes at least one batch.
            assert float(box["log_per_op"]) > 0 and float(box["log_per_pass"]) >= 1, lines[row]
        header = HEADER.match(lines[row + 1])
        assert header, lines[row:row + 3]
        total_us, between_us = (int(header[i].replace(",", "")) for i in (1, 2))
        assert 0 < between_us < total_us, lines[row + 1]
        tasks = {}
        for line in lines[row + 2:]:
            match = TASK.match(line)
            if not match:
                break
            tasks[match["name"]] = float(match["us"]), float(match["steps"])
        assert 1 <= len(tasks) <= 8, lines[row:row + 10]
        assert sum(us for us, _ in tasks.values()) <= total_us + len(tasks), (total_us, tasks)
        if lines[row].startswith("write"):
            # A write whose locks are free (BLIND: other writes never hold them) is started by its
            # connection's reading task (for an accepted connection trio's `_run_handler`) and
            # answered from the Paxos turn or commit-wait timer that learns its outcome, with no
            # request task (txn/tablet/started_writes.py).
            assert tasks.get("TcpTransport._serve_request", (0.0, 0.0))[1] < 0.5, tasks
            assert tasks["_run_handler"][0] > 0 and tasks["PaxosDriver.run"][0] > 0, tasks
        else:
            # A read its replica serves at once is answered by its connection's reading task (for
            # an accepted connection trio's `_run_handler`), any other in a request task.
            assert sum(tasks.get(name, (0.0, 0.0))[0] for name in ("_run_handler", "TcpTransport._serve_request")) > 0, tasks
