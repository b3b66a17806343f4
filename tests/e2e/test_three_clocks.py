"""Three clocks, each within 0.8 max_offset of the middle one but the outer two
1.4 max_offset apart: fencing must take one of the outer two out of service
(not both: the cluster keeps a serving majority), and writes through the
tablets the outer two led keep real-time order (DESIGN.md contract 1 and 6)."""

from __future__ import annotations

import json
import time

from hlc import Timestamp
from tests.e2e.harness import LocalCluster

DEADLINE_S = 60.0


def wait_for(predicate, timeout_s: float, what: str, cluster: LocalCluster):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}\n{cluster.logs_tail()}"
        time.sleep(0.5)


def skew_show(cluster: LocalCluster) -> dict[str, dict]:
    result = cluster.cli("skew", "--show", "--json")
    if result.returncode != 0:
        return {}
    return {node["id"]: node for node in json.loads(result.stdout)["nodes"]}


def status(cluster: LocalCluster) -> dict:
    return json.loads(cluster.cli("status", "--json").stdout)


def fenced_nodes(cluster: LocalCluster) -> set[str] | None:
    shown = skew_show(cluster)
    if set(shown) != set(cluster.node_ids):
        return None  # a node did not answer this time
    return {node for node, state in shown.items() if state["fenced"]}


def serving_elsewhere(cluster: LocalCluster, fenced: set[str]) -> bool:
    leaders = [tablet["leader"] for tablet in status(cluster)["tablets"]]
    return all(leader is not None and leader not in fenced for leader in leaders)


def test_outer_clocks_one_fenced_and_real_time_order_kept(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    led_by = {tablet["id"]: tablet["leader"] for tablet in status(cluster)["tablets"]}
    starts = {tablet.id: tablet.start for tablet in cluster.config.tablets}
    fast = [starts[t] + b"three-clocks" for t, leader in sorted(led_by.items()) if leader == "n1"]
    slow = [starts[t] + b"three-clocks" for t, leader in sorted(led_by.items()) if leader == "n3"]
    assert fast and slow, f"n1 and n3 should each lead a tablet at start: {led_by}"

    assert cluster.cli("skew", "n1", "--offset", "7ms").returncode == 0
    result = cluster.cli("skew", "n3", "--offset=-7ms")
    assert result.returncode == 0, result.stderr
    # Exactly one of the outer two fences itself; the middle one keeps serving.
    fenced = wait_for(lambda: (f := fenced_nodes(cluster)) is not None and len(f) == 1 and f <= {"n1", "n3"} and f,
                      DEADLINE_S, "exactly one of n1/n3 fenced", cluster)
    reason = skew_show(cluster)[next(iter(fenced))]["fence_reason"]
    assert "beyond" in reason, reason
    wait_for(lambda: serving_elsewhere(cluster, fenced), DEADLINE_S, f"every tablet led by a node other than {fenced}", cluster)

    client = cluster.client(timeout_s=30)
    previous = Timestamp.MIN
    for i in range(40):
        key = (fast if i % 2 == 0 else slow)[i // 2 % len(fast if i % 2 == 0 else slow)]
        written = client.put(key, b"%d" % i)  # acknowledged before the next write starts
        assert written.ts > previous, f"write {i} to {key!r} at {written.ts}, not after {previous}"
        previous = written.ts
    assert client.get(key).version_ts == previous
    assert fenced_nodes(cluster) == fenced, "the fenced node changed under a steady skew"

    # Clearing both skews brings every node back.
    assert cluster.cli("skew", "n1", "--clear").returncode == 0
    assert cluster.cli("skew", "n3", "--clear").returncode == 0
    wait_for(lambda: fenced_nodes(cluster) == set(), DEADLINE_S, "all nodes serving again", cluster)
    cluster.wait_healthy(timeout_s=DEADLINE_S)
    assert client.put(fast[0], b"after").ts > previous
