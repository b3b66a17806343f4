"""Old versions are garbage-collected behind the retention window; a read below
the GC horizon fails with an error that names the horizon."""

from __future__ import annotations

import time

from tests.e2e.harness import LocalCluster


def test_read_below_the_gc_horizon_names_it(make_cluster) -> None:
    cluster: LocalCluster = make_cluster(gc_retention_ns=1_000_000_000)  # keep 1s of history
    code, [old] = cluster.cli_json("put", "collected", "v1")
    assert code == 0
    code, [new] = cluster.cli_json("put", "collected", "v2")
    assert code == 0
    # GC runs in the background; give it ample time on a busy machine.
    deadline = time.monotonic() + 60
    while True:
        result = cluster.cli("get", "collected", "--at", old["ts"])
        if result.returncode == 2:
            break
        assert result.returncode == 0 and result.stdout.strip() == "v1", result  # still inside the window
        assert time.monotonic() < deadline, "the GC horizon never passed the old version"
        time.sleep(0.5)
    assert "horizon" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    # The newest version stays readable.
    assert cluster.cli("get", "collected").stdout.strip() == "v2"
