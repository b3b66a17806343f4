"""Every node's Prometheus endpoint on a real cluster: figures that follow the work, and hostile HTTP clients.

Scrapes go over TCP with urllib (a real HTTP client) and are parsed with
prometheus_client's own parser, as Prometheus would read them. Bad clients
(garbage, an oversized head, a silent connection, more connections than the
cap) must leave the node serving both its metrics and its keys.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import LocalCluster

pytestmark = pytest.mark.e2e

SCRAPE_TIMEOUT_S = 30.0  # generous: the box is loaded; the server's own deadline is 5 s


def scrape(cluster: LocalCluster, node_id: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One node's samples: (sample name, sorted labels) -> value."""
    host, port = cluster.metrics_address(node_id)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def scrape_all(cluster: LocalCluster) -> dict[str, dict]:
    return {node_id: scrape(cluster, node_id) for node_id in cluster.node_ids}


def cluster_total(scrapes: dict[str, dict], name: str, **labels: str) -> float:
    return sum(total(samples, name, **labels) for samples in scrapes.values())


def raw_exchange(address: tuple[str, int], data: bytes, timeout_s: float = SCRAPE_TIMEOUT_S) -> bytes:
    """Send `data` (as much as the server takes), then read until it closes."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before taking everything: read what it said
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def test_status_json_names_each_metrics_endpoint(shared_cluster: LocalCluster) -> None:
    result = shared_cluster.cli("status", "--json")
    assert result.returncode in (0, 1), result.stderr
    nodes = {node["id"]: node for node in json.loads(result.stdout)["nodes"]}
    for node_id in shared_cluster.node_ids:
        host, port = shared_cluster.metrics_address(node_id)
        assert nodes[node_id]["metrics"] == f"{host}:{port}"
    text = shared_cluster.cli("status")
    assert f"{host}:{port}" in text.stdout


def test_metrics_follow_writes_reads_and_a_transaction(shared_cluster: LocalCluster) -> None:
    cluster = shared_cluster
    client = cluster.client()
    before = scrape_all(cluster)
    writes = 6
    for i in range(writes):
        client.put(b"a-metrics-%d" % i, b"v")  # tablet t1 (keys below b"b")
    assert client.get(b"a-metrics-0").value == b"v"
    client.scan(b"a-metrics-", b"a-metrics.")
    # A cross-tablet transaction: alice (t1) and zed (t4) commit through 2PC at the coordinator.
    _, commit_ts = client.transaction([("put", b"alice-metrics", b"1"), ("put", b"zed-metrics", b"2")])
    assert commit_ts is not None
    after = scrape_all(cluster)

    def moved(name: str, **labels: str) -> float:
        return cluster_total(after, name, **labels) - cluster_total(before, name, **labels)

    assert moved("chronodb_requests_total", kind="write", outcome="ok") >= writes
    assert moved("chronodb_write_latency_seconds_count", tablet="t1") >= writes
    assert moved("chronodb_commit_wait_seconds_count") >= writes + 1
    assert moved("chronodb_read_latency_seconds_count", mode="strong", op="get") >= 1
    assert moved("chronodb_read_latency_seconds_count", op="scan") >= 1
    # One prepare: at zed's tablet; the coordinator (alice's) does not prepare (Spanner 4.2.1).
    assert moved("chronodb_requests_total", kind="prepare", outcome="ok") >= 1
    assert moved("chronodb_requests_total", kind="commit", outcome="ok") >= 1
    assert moved("chronodb_txn_commits_total", path="two_phase") >= 1
    assert moved("chronodb_paxos_round_seconds_count", tablet="t1") >= writes
    assert moved("chronodb_distributed_commits_total", tablet="t1") >= writes
    # Each acknowledged put was synced by its leader's log-writer thread (txn/node/log_writer.py),
    # in a pass of its own or shared with other writes (a pass wakes the loop once for all it wrote).
    assert moved("chronodb_log_writes_total") >= writes
    assert 1 <= moved("chronodb_log_writer_passes_total") <= moved("chronodb_log_writes_total") + len(cluster.node_ids)
    assert cluster_total(after, "chronodb_write_latency_seconds_sum") > 0
    # Leaders measure their followers' clocks from the Accepted replies (txn/node/clock_watch.py); on a
    # loaded box a round trip may be too slow to use (paxos_dropped), but it is seen either way.
    assert moved("chronodb_clock_samples_total", source="paxos") + moved("chronodb_clock_samples_total",
                                                                         source="paxos_dropped") > 0

    for node_id, samples in after.items():
        held = [tablet.id for tablet in cluster.config.tablets if node_id in tablet.replicas]
        for tablet_id in held:
            assert total(samples, "chronodb_applied_index", tablet=tablet_id) > 0, (node_id, tablet_id)
            assert total(samples, "chronodb_durable_index", tablet=tablet_id) > 0, (node_id, tablet_id)
            assert total(samples, "chronodb_leveldb_size_bytes", tablet=tablet_id) > 0, (node_id, tablet_id)
            assert ("chronodb_safe_time_lag_seconds", (("tablet", tablet_id),)) in samples
        peers = {n for n in cluster.node_ids if n != node_id}
        rejected_peers = {dict(labels)["peer"] for name, labels in samples if name == "chronodb_rejected_messages_total"}
        assert peers <= rejected_peers
        assert ("chronodb_fenced", ()) in samples
        assert ("chronodb_clock_samples_total", (("source", "probe"),)) in samples
        assert total(samples, "chronodb_node_info", node=node_id, cluster_id=cluster.config.cluster_id) == 1
        assert total(samples, "process_resident_memory_bytes") > 0
        # The node froze its start-up objects out of garbage collection (txn/node/gc_settings.py).
        assert total(samples, "chronodb_gc_frozen_objects") > 10_000, node_id
        assert ("python_gc_collections_total", (("generation", "0"),)) in samples
    for tablet in cluster.config.tablets:  # every tablet got a leader once
        assert cluster_total(after, "chronodb_leader_changes_total", tablet=tablet.id) >= 1


def test_bad_http_clients_do_not_hurt_the_node(shared_cluster: LocalCluster) -> None:
    cluster = shared_cluster
    address = cluster.metrics_address("n1")
    assert raw_exchange(address, b"\x16\x03\x01\x00\xff garbage that is not HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431 ")
    assert raw_exchange(address, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").startswith(
        b"HTTP/1.1 405 ")
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(f"http://{address[0]}:{address[1]}/admin", timeout=SCRAPE_TIMEOUT_S)
    assert not_found.value.code == 404

    # A slow client (half a request, then nothing) is closed by the server's deadline.
    slow = socket.create_connection(address, timeout=SCRAPE_TIMEOUT_S)
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost:")
    # More idle connections than the cap (8): they hold every slot until their deadlines.
    idle = [socket.create_connection(address, timeout=SCRAPE_TIMEOUT_S) for _ in range(20)]
    try:
        # Meanwhile the node serves its keys as ever.
        client = cluster.client(home="n1")
        client.put(b"metrics-during-flood", b"ok")
        assert client.get(b"metrics-during-flood").value == b"ok"
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed, with nothing said
        assert time.monotonic() - started < SCRAPE_TIMEOUT_S
    finally:
        slow.close()
        for sock in idle:
            sock.close()

    samples = scrape(cluster, "n1")  # served again once the idle connections are gone
    assert total(samples, "chronodb_requests_total", kind="clock_probe", outcome="ok") > 0
    assert cluster.processes["n1"].poll() is None
    assert "Traceback" not in (cluster.data_dir / "n1" / "node.log").read_text()
