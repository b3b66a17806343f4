"""`chronodb bench idle`, short: an idle cluster's CPU per node, and no synced proposal every 100 ms.

Before closed timestamps rode on heartbeats, every idle tablet logged a
`SafeTimeAdvance` every 100 ms (ten synced writes a second on each
replica); now an idle leader logs one every 5 s. The test reads the
benchmark's own count of log entries appended in its window (no timing
assertion: a count of entries, with a wide margin either way).
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.harness import run_cli

pytestmark = pytest.mark.e2e

WINDOW_S = 3


def test_bench_idle_prints_each_node_and_an_idle_log() -> None:
    result = run_cli(["bench", "idle", "--seconds", str(WINDOW_S), "--settle", "3"], timeout_s=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "benchmark: idle" in out
    shares = re.findall(r"^(n\d) +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.MULTILINE)
    assert sorted(node for node, _, _, _ in shares) == ["n1", "n2", "n3"], out
    assert all(float(share) > 0 for _, share, _, _ in shares), "every node runs heartbeats: some CPU"
    # Every node wakes for heartbeats (several a second as leader and as follower), never for none.
    assert all(float(wakes) >= 1 for _, _, _, wakes in shares), out
    appended = dict(re.findall(r"(t\d) (\d+) \(", out))
    assert sorted(appended) == ["t1", "t2", "t3"], out
    # 100 ms safe-time proposals would append about 10 per second (30 here; 26 measured with them put
    # back); a 5 s one at most one in the window, plus a no-op and a barrier per leadership change
    # should a loaded machine move a lease or two.
    assert all(int(n) <= 8 for n in appended.values()), out


def test_bench_idle_refuses_a_bad_window() -> None:
    result = run_cli(["bench", "idle", "--seconds", "0"])
    assert result.returncode == 2 and "argument --seconds: must be a number of seconds above 0" in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
