"""Old versions are garbage-collected behind the retention window; a read below
the GC horizon fails with an error that names the horizon."""

from __future__ import annotations

import time

from tests.e2e.harness import LocalCluster


def test_read_below_the_gc_horizon_names_it(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data", gc_retention_ns=1_000_000_000)  # keep 1s of history
    cluster.start_all()
    try:
        cluster.wait_healthy()
        code, [old] = cluster.cli_json("put", "collected", "v1")
        code, [new] = cluster.cli_json("put", "collected", "v2")
        deadline = time.monotonic() + 15
        while True:
            result = cluster.cli("get", "collected", "--at", old["ts"])
            if result.returncode == 2:
                break
            assert result.returncode == 0 and result.stdout.strip() == "v1"  # still inside the window
            assert time.monotonic() < deadline, "the GC horizon never passed the old version"
            time.sleep(0.5)
        assert "horizon" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
        # The newest version stays readable.
        assert cluster.cli("get", "collected").stdout.strip() == "v2"
    finally:
        cluster.stop_all()
