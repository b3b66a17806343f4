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


def outer_nodes(led_by: dict[str, str]) -> tuple[str, str]:
    """The node for the fast clock and the one for the slow clock: n1 and n3 when each
    leads a tablet. Preferred leaders only win at start when nobody is slow, so on a
    loaded machine another pair of leaders stands in (the same case, renamed)."""
    leaders = sorted(set(led_by.values()))
    if "n1" in leaders and "n3" in leaders:
        return "n1", "n3"
    if len(leaders) >= 2:
        return leaders[0], leaders[-1]
    return leaders[0], min(n for n in ("n1", "n2", "n3") if n != leaders[0])  # one leader of all: its tablets vs the rest


def every_tablet_led(cluster: LocalCluster, timeout_s: float = 60.0) -> dict[str, str]:
    """tablet -> serving leader, once one status names a leader for every tablet (a lease may be
    moving, e.g. back to its preferred leader, right after the cluster first served: the test loop
    once read t3 without a leader here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        led_by = {tablet["id"]: tablet["leader"] for tablet in status(cluster)["tablets"]}
        if all(led_by.values()):
            return led_by
        assert time.monotonic() < deadline, f"some tablet has no leader after {timeout_s:g}s: {led_by}"
        time.sleep(0.2)


def test_outer_clocks_one_fenced_and_real_time_order_kept(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    led_by = every_tablet_led(cluster)
    fast_node, slow_node = outer_nodes(led_by)
    starts = {tablet.id: tablet.start for tablet in cluster.config.tablets}
    fast = [starts[t] + b"three-clocks" for t, leader in sorted(led_by.items()) if leader == fast_node]
    slow = [starts[t] + b"three-clocks" for t, leader in sorted(led_by.items()) if leader != fast_node]
    if not slow:  # one node led every tablet: half of them stand for the other node's
        fast, slow = fast[: len(fast) // 2], fast[len(fast) // 2:]
    assert fast and slow, led_by

    assert cluster.cli("skew", fast_node, "--offset", "7ms").returncode == 0
    result = cluster.cli("skew", slow_node, "--offset=-7ms")
    assert result.returncode == 0, result.stderr
    # Exactly one of the outer two fences itself; the middle one keeps serving.
    outer = {fast_node, slow_node}
    def one_outer_fenced() -> tuple[set[str], dict[str, dict]] | None:
        shown = skew_show(cluster)
        fenced = {node for node, state in shown.items() if state["fenced"]}
        return (fenced, shown) if set(shown) == set(cluster.node_ids) and len(fenced) == 1 and fenced <= outer else None

    # Which of the two fences may change while the estimates settle: n1 alone,
    # +7 ms against estimates still ±2 ms wide, may fence before n3's skew
    # lands, then hand the fence to n3 once both are measured (a CI run saw
    # exactly that). So wait for one state that holds both ways at once.
    def settled() -> tuple[set[str], dict[str, dict]] | None:
        found = one_outer_fenced()
        return found if found and serving_elsewhere(cluster, found[0]) else None

    fenced, shown = wait_for(settled, DEADLINE_S, f"exactly one of {sorted(outer)} fenced, every tablet led by another node", cluster)
    assert "beyond" in shown[next(iter(fenced))]["fence_reason"], shown

    client = cluster.client(timeout_s=30)
    previous = Timestamp.MIN
    for i in range(40):
        key = (fast if i % 2 == 0 else slow)[i // 2 % len(fast if i % 2 == 0 else slow)]
        written = client.put(key, b"%d" % i)  # acknowledged before the next write starts
        assert written.ts > previous, f"write {i} to {key!r} at {written.ts}, not after {previous}"
        previous = written.ts
    assert client.get(key).version_ts == previous
    # A load spike may fence a node for a while (measurements too coarse to
    # judge: by design, safety before service), but a majority serves again.
    wait_for(one_outer_fenced, DEADLINE_S, f"back to exactly one of {sorted(outer)} fenced", cluster)

    # Clearing both skews brings every node back.
    assert cluster.cli("skew", fast_node, "--clear").returncode == 0
    assert cluster.cli("skew", slow_node, "--clear").returncode == 0
    wait_for(lambda: fenced_nodes(cluster) == set(), DEADLINE_S, "all nodes serving again", cluster)
    cluster.wait_healthy(timeout_s=DEADLINE_S)
    assert client.put(fast[0], b"after").ts > previous
