"""A corrupt replica rebuilds itself from its peers; `chronodb repair` does the same on demand.

Real nodes, real LevelDB: a stopped node's store of one tablet gets a flipped
byte in its MANIFEST (LevelDB refuses to open it). Restarted, the node comes
up, says in one line of its log which tablet is corrupt and where the old
store went, serves its other tablet throughout, and rebuilds the corrupt
replica from the other two: once it votes again it holds every acknowledged
write, and the tablet keeps committing with that replica as one of a
majority (another replica stopped). Then `chronodb repair` rebuilds a healthy
replica on demand while a writer keeps writing.
"""

from __future__ import annotations

import json
import pathlib
import time

import trio

from hlc import HybridClock
from hlc.physical import SystemClock
from tests.e2e.harness import LocalCluster
from tools.status import ask_node
from txn import api
from txn.client import open_client
from txn.net.transport import open_client_connection
from txn.node.config import tablet_dir

KEYS = 60
REBUILD_TIMEOUT_S = 90.0


def flip_manifest(store: pathlib.Path) -> None:
    (manifest,) = store.glob("MANIFEST-*")
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))


def put_all(cluster: LocalCluster, items: list[tuple[bytes, bytes]], *, home: str | None = None,
            timeout_s: float = 10.0) -> None:
    """Acknowledged writes, in order, through one client connection (nearest node: `home`)."""
    addresses = [n.address for n in cluster.config.nodes]
    if home is not None:
        addresses.sort(key=lambda a: a != cluster.address(home))

    async def go() -> None:
        async with open_client(addresses, cluster_id=cluster.config.cluster_id, timeout_s=timeout_s, tls=cluster.tls) as client:
            for key, value in items:
                await client.put(key, value)
    trio.run(go)


def tablet_status(cluster: LocalCluster, node_id: str, tablet_id: str) -> api.TabletStatus | None:
    reply = trio.run(ask_node, cluster.config, node_id, api.StatusRequest(), 5.0)
    if not isinstance(reply, api.NodeStatusReply):
        return None
    return next((t for t in reply.tablets if t.id == tablet_id), None)


def wait_voting(cluster: LocalCluster, node_id: str, tablet_id: str) -> api.TabletStatus:
    """Until the replica has finished rebuilding (fenced: it votes again)."""
    deadline = time.monotonic() + REBUILD_TIMEOUT_S
    while True:
        status = tablet_status(cluster, node_id, tablet_id)
        if status is not None and not status.rebuilding and status.applied_index > 0:
            return status
        assert time.monotonic() < deadline, f"{node_id}/{tablet_id} still rebuilding: {status}\n{cluster.logs_tail()}"
        time.sleep(0.2)


def latest_values(cluster: LocalCluster, node_id: str, tablet_id: str, keys: list[bytes]) -> dict[bytes, bytes | None]:
    """Each key's newest value in that replica's own store (admin InspectKeyRequest), over one connection."""
    async def ask_all() -> dict[bytes, bytes | None]:
        found: dict[bytes, bytes | None] = {}
        clock = HybridClock(SystemClock(), cluster.config.max_offset_ns)
        host, port = cluster.address(node_id)
        async with open_client_connection(host, port, cluster_id=cluster.config.cluster_id, clock=clock,
                                          timeout_s=10.0, tls=cluster.tls) as connection:
            for key in keys:
                reply = await connection.call(api.InspectKeyRequest(tablet_id, key), timeout_s=10.0)
                assert isinstance(reply, api.InspectKeyReply), reply
                found[key] = reply.versions[-1].value if reply.versions else None
        return found
    return trio.run(ask_all)


def test_a_corrupt_replica_rebuilds_from_its_peers_and_repair_does_so_on_demand(make_cluster) -> None:
    cluster = make_cluster(tablets=2)
    t1, t2 = cluster.config.tablets
    victim, other, third = t1.replicas[1], t1.replicas[0], t1.replicas[2]
    assert victim in t2.replicas, "the victim also holds t2, which must keep serving"
    keys = [bytes([c]) + b"%03d" % i for i in range(KEYS) for c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"]
    t1_keys = [k for k in keys if t1.contains(k)][:KEYS]
    t2_keys = [k for k in keys if t2.contains(k)][:20]
    assert len(t1_keys) >= 30 and t2_keys
    put_all(cluster, [(key, b"v1-" + key) for key in t1_keys + t2_keys])

    cluster.kill(victim)
    store = tablet_dir(cluster.data_dir, victim, t1.id)
    flip_manifest(store)
    log_start = cluster.log_size(victim)
    cluster.start(victim)
    deadline = time.monotonic() + 60
    while f"node {victim} ready on" not in cluster.log_since(victim, log_start):
        assert cluster.processes[victim].poll() is None, f"{victim} exited\n{cluster.logs_tail()}"
        assert time.monotonic() < deadline, cluster.logs_tail()
        time.sleep(0.1)
    log = cluster.log_since(victim, log_start)
    lines = [line for line in log.splitlines() if "corrupt" in line and f"tablet {t1.id}" in line]
    assert len(lines) == 1, log
    assert str(store) in lines[0] and "set aside as" in lines[0] and "rebuilding this replica from its peers" in lines[0]
    assert list(store.parent.glob(f"{t1.id}.corrupt-*")), "the corrupt store is kept, set aside"
    assert not list(store.parent.glob(f"{t2.id}.corrupt-*"))

    status = tablet_status(cluster, victim, t1.id)  # rebuilding, unless already fenced (a few seconds)
    assert status is not None and ("corrupt" in status.rebuilding or "votes again" in cluster.log_since(victim, log_start))
    # The node's other tablet serves; the tablet itself too (its other two replicas choose).
    put_all(cluster, [(t2_keys[0], b"v2-during-rebuild"), (t1_keys[0], b"v2-" + t1_keys[0])], home=victim)

    rebuilt = wait_voting(cluster, victim, t1.id)
    assert rebuilt.applied_index > 0
    expected = {k: b"v1-" + k for k in t1_keys}
    expected[t1_keys[0]] = b"v2-" + t1_keys[0]
    assert latest_values(cluster, victim, t1.id, t1_keys) == expected, "the rebuilt replica holds every write"
    said = f"tablet {t1.id} on {victim}: rebuilt from its peers; votes again"
    deadline = time.monotonic() + 30  # the replica's leadership loop logs it as it wakes for the status change
    while said not in (after := cluster.log_since(victim, log_start).split(lines[0], 1)[1]):
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    assert "set aside as" not in after, "rebuilt once"

    # It votes again: with `other` stopped, the victim and `third` are t1's majority.
    cluster.kill(other)
    put_all(cluster, [(t1_keys[1], b"v3")], timeout_s=30.0)
    assert cluster.client(timeout_s=30.0).get(t1_keys[1]).value == b"v3"
    cluster.start(other)
    cluster.wait_healthy(timeout_s=60)

    # On demand, while writes go on: `third` (healthy) is rebuilt.
    before = len(list(store.parent.parent.parent.glob(f"*/tablets/{t1.id}.corrupt-*")))
    result = cluster.cli("repair", "--node", third, "--tablet", t1.id, "--wait", "90", "--json", timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["rebuilt"] is True and answer["node"] == third
    third_store = tablet_dir(cluster.data_dir, third, t1.id)
    assert len(list(third_store.parent.glob(f"{t1.id}.corrupt-*"))) == 1
    assert len(list(store.parent.parent.parent.glob(f"*/tablets/{t1.id}.corrupt-*"))) == before + 1
    put_all(cluster, [(t1_keys[2], b"after-repair")])
    expected[t1_keys[1]] = b"v3"
    expected[t1_keys[2]] = b"after-repair"
    deadline = time.monotonic() + 30
    while (got := latest_values(cluster, third, t1.id, t1_keys)) != expected:
        assert time.monotonic() < deadline, {k: (v, expected[k]) for k, v in got.items() if v != expected[k]}
        time.sleep(0.2)

    refused = cluster.cli("repair", "--node", third, "--tablet", "nope")
    assert refused.returncode == 2 and "no such tablet" in refused.stderr
