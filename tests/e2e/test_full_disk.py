"""A leader whose disk stops taking writes: the node stays up, the tablet moves, nothing acknowledged is lost.

Real nodes and LevelDB; the full disk is a file-size limit (RLIMIT_FSIZE,
set on the running node with prlimit) just at the size of the tablet's
LevelDB log, so its next append fails with EFBIG exactly as a full disk
fails with ENOSPC (the node ignores SIGXFSZ). The leader's replica stops
(one log line) and is restarted on its store every few seconds while the
other two replicas elect a leader and go on committing (the limit is per
file, so the reopened store's new log file takes writes again, up to the
limit: the victim may lead again); the node process stays alive and its
memory flat. With the limit lifted the replica
reopens its store (or, if the failed append left a torn record, rebuilds
it from its peers) and catches up; every acknowledged write is readable.
"""

from __future__ import annotations

import resource
import time

import trio

from tests.e2e.harness import LocalCluster
from tools.status import ask_node
from txn import api
from txn.client import OutcomeUnknown, open_client
from txn.node.config import node_dir, tablet_dir

VALUE = b"x" * 2000
DEADLINE_S = 90.0


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def applied(cluster: LocalCluster, node_id: str, tablet_id: str) -> tuple[int, str]:
    reply = trio.run(ask_node, cluster.config, node_id, api.StatusRequest(), 5.0)
    if not isinstance(reply, api.NodeStatusReply):
        return -1, ""
    status = next((t for t in reply.tablets if t.id == tablet_id), None)
    return (status.applied_index, status.rebuilding) if status is not None else (-1, "")


def test_a_leader_with_a_full_disk_stays_up_and_loses_nothing(make_cluster) -> None:
    cluster = make_cluster(tablets=1)
    (t1,) = cluster.config.tablets
    victim = cluster.leaders()[t1.id]  # whoever leads now (leadership may still be moving to n1)
    addresses = [n.address for n in cluster.config.nodes]
    acked: dict[bytes, bytes] = {}
    unknown: set[bytes] = set()

    async def write(keys: range, prefix: bytes) -> None:
        async with open_client(addresses, cluster_id=cluster.config.cluster_id, timeout_s=20.0, tls=cluster.tls) as client:
            for i in keys:
                key = prefix + b"%05d" % i
                try:
                    await client.put(key, VALUE + key)
                except OutcomeUnknown:
                    unknown.add(key)
                else:
                    acked[key] = VALUE + key

    trio.run(write, range(150), b"before-")
    (wal,) = [p for p in tablet_dir(cluster.data_dir, victim, t1.id).glob("*.log")]
    limit = wal.stat().st_size
    assert (node_dir(cluster.data_dir, victim) / "node.log").stat().st_size < limit, "node.log must stay writable"
    pid = cluster.processes[victim].pid
    log_start = cluster.log_size(victim)
    rss_before = rss_mb(pid)
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]  # raising a hard limit takes a privilege: only the soft one moves
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    try:
        trio.run(write, range(60), b"during-")
        deadline = time.monotonic() + DEADLINE_S
        while f"tablet {t1.id} on {victim} stopped" not in cluster.log_since(victim, log_start):
            assert time.monotonic() < deadline, cluster.logs_tail()
            time.sleep(0.2)
        time.sleep(6)  # at least one restart attempt on the still-limited store
        assert cluster.processes[victim].poll() is None, "the node stays up"
        assert rss_mb(pid) - rss_before < 100, (rss_before, rss_mb(pid))
        # The tablet has a serving leader: another replica, or the victim again (the limit is per
        # file: its reopened store starts a new, empty log file that takes writes up to the limit).
        cluster.wait_healthy(timeout_s=DEADLINE_S)
        during = [key for key in acked if key.startswith(b"during-")]
        assert len(during) + len([k for k in unknown if k.startswith(b"during-")]) == 60 and len(during) >= 50
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    log = cluster.log_since(victim, log_start)
    stopped = [line for line in log.splitlines() if f"tablet {t1.id} on {victim} stopped" in line]
    assert stopped and "restarting it on the same store" in stopped[0], log
    assert "File too large" in stopped[0], stopped[0]

    trio.run(write, range(20), b"after-")
    leader = cluster.wait_healthy(timeout_s=DEADLINE_S)[t1.id]
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the victim's replica rejoins and catches up with the leader
        mine, rebuilding = applied(cluster, victim, t1.id)
        theirs, _ = applied(cluster, leader, t1.id)
        if not rebuilding and mine > 0 and mine >= theirs:
            break
        assert time.monotonic() < deadline, (mine, theirs, rebuilding, cluster.logs_tail())
        time.sleep(0.3)
    assert cluster.processes[victim].poll() is None

    async def read_all() -> dict[bytes, bytes | None]:
        async with open_client(addresses, cluster_id=cluster.config.cluster_id, timeout_s=20.0, tls=cluster.tls) as client:
            return {key: (await client.get(key)).value for key in acked}
    assert len(acked) >= 200, (len(acked), len(unknown))
    assert trio.run(read_all) == acked, "every acknowledged write is there"
