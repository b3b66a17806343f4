"""A leader paused with SIGSTOP (its kernel still accepts connections and
bytes; the process answers nothing): strong reads leave it after one attempt
and are served by the new leader well before the client's deadline; a write
already sent to it ends as OutcomeUnknown (never resent); a write whose
connection to it never got past the handshake was never delivered, so it is
retried elsewhere and succeeds. The node is always resumed with SIGCONT."""

from __future__ import annotations

import signal

import trio

from tests.e2e.harness import LocalCluster
from txn.client import OutcomeUnknown, open_client

READ_DEADLINE_S = 10.0
WRITE_DEADLINE_S = 5.0


async def against_a_paused_leader(cluster: LocalCluster, victim: str) -> dict:
    others_first = sorted((n.address for n in cluster.config.nodes), key=lambda a: a == cluster.address(victim))
    cluster_id = cluster.config.cluster_id
    outcome: dict = {}
    async with open_client(others_first, cluster_id=cluster_id, timeout_s=READ_DEADLINE_S, tls=cluster.tls) as reader, \
            open_client(others_first, cluster_id=cluster_id, timeout_s=WRITE_DEADLINE_S, tls=cluster.tls) as writer:
        await reader.put(b"0paused-read", b"before")
        # Both clients now hold a connection to the victim and take it for t1's leader.
        assert (await reader.get(b"0paused-read")).served_by == victim
        assert (await writer.get(b"0paused-read")).served_by == victim
        process = cluster.processes[victim]
        process.send_signal(signal.SIGSTOP)
        try:
            started = trio.current_time()
            result = await reader.get(b"0paused-read")
            outcome["read_s"] = trio.current_time() - started
            outcome["read"] = (result.value, result.served_by)

            started = trio.current_time()
            try:
                written = await writer.put(b"0paused-sent", b"x")
                outcome["sent_write"] = ("acked", written.node)
            except OutcomeUnknown as error:
                outcome["sent_write"] = ("unknown", error.node)
            outcome["sent_write_s"] = trio.current_time() - started

            # A fresh client holds no connection yet; told that the victim
            # leads t1, it dials the victim first: the kernel accepts, the
            # handshake is never answered, so that write was never sent.
            async with open_client(others_first, cluster_id=cluster_id, timeout_s=READ_DEADLINE_S, tls=cluster.tls) as fresh:
                fresh.leaders["t1"] = victim  # make it try the paused leader first
                fresh.nodes = dict(reader.nodes)
                fresh.tablets = reader.tablets
                started = trio.current_time()
                written = await fresh.put(b"0paused-unsent", b"y")
                outcome["unsent_write"] = written.node
                outcome["unsent_write_s"] = trio.current_time() - started
        finally:
            process.send_signal(signal.SIGCONT)
    return outcome


def test_paused_leader_costs_reads_one_attempt(fresh_cluster: LocalCluster) -> None:
    victim = fresh_cluster.wait_healthy()["t1"]  # keys b"0..." live in t1
    outcome = trio.run(against_a_paused_leader, fresh_cluster, victim)
    print(f"victim {victim}: {outcome}")
    value, served_by = outcome["read"]
    assert value == b"before" and served_by != victim
    assert outcome["read_s"] < READ_DEADLINE_S / 2, outcome["read_s"]
    # Delivered to the paused leader over an open connection: unknown, and only after the whole deadline.
    assert outcome["sent_write"] == ("unknown", victim), outcome["sent_write"]
    assert outcome["sent_write_s"] >= WRITE_DEADLINE_S - 0.1
    # Never delivered (handshake unanswered): retried on the new leader.
    assert outcome["unsent_write"] != victim
    assert outcome["unsent_write_s"] < READ_DEADLINE_S / 2, outcome["unsent_write_s"]
    assert fresh_cluster.processes[victim].poll() is None, "the resumed node still runs"
