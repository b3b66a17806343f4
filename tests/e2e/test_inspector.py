"""The inspector checked against known state, online and offline."""

from __future__ import annotations

import json
import time

from tests.e2e.harness import LocalCluster


def inspect(cluster: LocalCluster, *args: str) -> tuple[int, dict]:
    result = cluster.cli("inspect", *args, "--json")
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else {"stderr": result.stderr})


def test_inspector_against_known_state(fresh_cluster: LocalCluster) -> None:
    client = fresh_cluster.client()
    stamps = [str(client.put(b"inspected", b"v%d" % i).ts) for i in range(5)]
    stamps.append(str(client.delete(b"inspected").ts))

    def agreed():
        code, report = inspect(fresh_cluster, "key", "inspected")
        return report if code == 0 and report["agree"] and len(report["replicas"][0]["versions"]) == 6 else None

    deadline = time.monotonic() + 10
    while (report := agreed()) is None:
        assert time.monotonic() < deadline, "replicas never agreed"
        time.sleep(0.2)
    for replica in report["replicas"]:
        assert [v["ts"] for v in replica["versions"]] == stamps
        assert [v["value"] for v in replica["versions"]] == ["v0", "v1", "v2", "v3", "v4", None]

    code, tablets = inspect(fresh_cluster, "tablets")
    status = json.loads(fresh_cluster.cli("status", "--json").stdout)
    assert code == 0
    assert {t["id"]: t["leader"] for t in tablets["tablets"]} == {t["id"]: t["leader"] for t in status["tablets"]}
    tablet_id = report["tablet"]
    code, depth = inspect(fresh_cluster, "tablet", tablet_id)
    assert code == 0 and all(r["mvcc"]["versions"] >= 6 and r["leveldb_bytes"] > 0 for r in depth["replicas"])
    code, log = inspect(fresh_cluster, "log", tablet_id)
    writes = [e for e in log["entries"] if e["command"].startswith("WriteBatch")]
    assert [e["command"].split()[1] for e in writes][-6:] == [f"ts={s}" for s in stamps]

    # Offline refuses a running node ...
    result = fresh_cluster.cli("inspect", "key", "inspected", "--offline", "--node", "n3")
    assert result.returncode == 2 and "running" in result.stderr
    # ... and agrees with the online view once it is stopped.
    code, online = inspect(fresh_cluster, "key", "inspected", "--node", "n3")
    code, online_log = inspect(fresh_cluster, "log", tablet_id, "--node", "n3", "--to", "20")
    fresh_cluster.kill("n3", 15)  # SIGTERM: a clean stop
    code, offline = inspect(fresh_cluster, "key", "inspected", "--node", "n3", "--offline")
    # Stored state agrees (the applied index may have moved on by a safe-time advance).
    assert code == 0
    assert [(r["versions"], r["intent"]) for r in offline["replicas"]] == [(r["versions"], r["intent"]) for r in online["replicas"]]
    assert offline["replicas"][0]["applied_index"] >= online["replicas"][0]["applied_index"]
    code, offline_log = inspect(fresh_cluster, "log", tablet_id, "--node", "n3", "--to", "20", "--offline")
    assert offline_log["entries"] == online_log["entries"]
    # Degraded: n3 is down, the inspector still shows the others and marks n3 down.
    code, tablets = inspect(fresh_cluster, "tablets")
    for tablet in tablets["tablets"]:
        states = {r["node"]: r for r in tablet["replicas"]}
        assert states["n3"]["up"] is False and states["n1"]["up"] is True
