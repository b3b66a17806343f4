"""Mutual TLS and roles against real node processes, with certificates made by `chronodb cert`.

Each intruder is refused with a clear error, and the node keeps serving the
legitimate client afterwards; `--insecure` still works (and says so).
"""

from __future__ import annotations

import pathlib

import pytest
import trio

from hlc import HybridClock
from hlc.physical import SystemClock
from tests.e2e.harness import LocalCluster
from tools.localcluster import run_cli
from tools.status import ask_node
from txn import api, wire
from txn.net.client_connection import open_client_connection
from txn.net.connection import Connection
from txn.net.messaging import PeerUnreachable
from txn.net.tls import certs_dir, load_client_tls
from txn.node.config import node_dir
from txn.wire import Handshake, HandshakeRefused

pytestmark = pytest.mark.e2e


def ok(result) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def status_text(cluster: LocalCluster) -> str:
    """`status` output; exit 1 (a tablet between leaders, e.g. while leadership returns to its
    preferred node) is fine here: what is checked is what status says about security."""
    result = cluster.cli("status")
    assert result.returncode in (0, 1), result.stderr + result.stdout
    return result.stdout


def node_log(cluster: LocalCluster, node_id: str) -> str:
    return (node_dir(cluster.data_dir, node_id) / "node.log").read_text(errors="replace")


async def dial(cluster: LocalCluster, tls) -> str:
    """Open a client connection with `tls` and call status; the PeerUnreachable text if refused."""
    host, port = cluster.address("n1")
    clock = HybridClock(SystemClock(), cluster.config.max_offset_ns)
    try:
        async with open_client_connection(host, port, cluster_id=cluster.config.cluster_id, clock=clock,
                                          timeout_s=3, tls=tls) as conn:
            await conn.call(api.StatusRequest(), timeout_s=3)
    except PeerUnreachable as error:
        return str(error)
    return "accepted"


async def claim_to_be_node(cluster: LocalCluster, tls, speaker: str):
    """TLS with a client certificate, then a handshake that says it is node `speaker`."""
    host, port = cluster.address("n1")
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), tls.context)
    connection = Connection(stream, "intruder", wire.MAX_FRAME_BYTES_DEFAULT)
    with trio.fail_after(5):
        connection.write_message(Handshake(wire.PROTOCOL_VERSION, cluster.config.cluster_id, speaker))
        await connection.flush()
        reply = await connection.read_message()
    await connection.aclose()
    return reply


def test_intruders_are_refused_and_the_node_keeps_serving(make_cluster, tmp_path: pathlib.Path) -> None:
    cluster = make_cluster()
    dir_flag = ("--dir", str(cluster.data_dir))
    for name in ("ca.crt", "node.n1.crt", "client.root.crt"):
        assert (certs_dir(cluster.data_dir) / name).exists()
    assert (certs_dir(cluster.data_dir) / "ca.key").stat().st_mode & 0o777 == 0o600

    # A normal client over TLS.
    ok(cluster.cli("put", "alice", "100"))
    assert ok(cluster.cli("get", "alice")).strip() == "100"
    assert "mutual TLS" in status_text(cluster)

    # No certificate: plain TCP to a TLS node.
    refused = trio.run(dial, cluster, None)
    assert "does the node require TLS" in refused, refused

    # A certificate from another CA, made by the project's own command.
    other = tmp_path / "other"
    ok(run_cli(["cert", "create-ca", "--certs-dir", str(other)]))
    ok(run_cli(["cert", "create-client", "root", "--certs-dir", str(other)]))
    refused = trio.run(dial, cluster, load_client_tls(other))
    assert "TLS handshake failed" in refused and "CERTIFICATE_VERIFY_FAILED" in refused, refused
    # ... even when the intruder trusts our CA (so only the node's check stands in the way).
    (other / "ca.crt").write_bytes((certs_dir(cluster.data_dir) / "ca.crt").read_bytes())
    refused = trio.run(dial, cluster, load_client_tls(other))
    assert "handshake failed" in refused and "our certificate refused?" in refused, refused
    assert "TLS handshake refused: CERTIFICATE_VERIFY_FAILED" in node_log(cluster, "n1")

    # A client certificate claiming to be a node.
    reply = trio.run(claim_to_be_node, cluster, load_client_tls(certs_dir(cluster.data_dir)), "n2")
    assert isinstance(reply, HandshakeRefused), reply
    assert "a client certificate (client root (admin)) cannot speak as node 'n2'" in reply.reason

    # A reader: reads, but cannot write or skew.
    ok(run_cli(["cert", "create-client", "bob", "--role", "reader", *dir_flag]))
    assert ok(cluster.cli("get", "alice", "--user", "bob")).strip() == "100"
    denied = cluster.cli("put", "alice", "0", "--user", "bob")
    assert denied.returncode == 2 and "permission denied" in denied.stderr and "reader role" in denied.stderr, denied
    reader = load_client_tls(certs_dir(cluster.data_dir), "bob")
    skew = trio.run(lambda: ask_node(cluster.config, "n1", api.SkewRequest(api.SkewAction.SET, 5_000_000, None, None, None), tls=reader))
    assert isinstance(skew, api.ErrorReply) and skew.code is api.ErrorCode.PERMISSION_DENIED, skew
    # A writer writes but cannot inspect; an admin may.
    ok(run_cli(["cert", "create-client", "carol", "--role", "writer", *dir_flag]))
    ok(cluster.cli("put", "alice", "101", "--user", "carol"))
    writer = load_client_tls(certs_dir(cluster.data_dir), "carol")
    inspect = trio.run(lambda: ask_node(cluster.config, "n1", api.InspectTabletRequest("t1"), tls=writer))
    assert isinstance(inspect, api.ErrorReply) and inspect.code is api.ErrorCode.PERMISSION_DENIED, inspect
    # Clients never speak node-to-node messages, admins included.
    probe = trio.run(lambda: ask_node(cluster.config, "n1", api.ClockProbe(), tls=cluster.tls))
    assert isinstance(probe, api.ErrorReply) and probe.code is api.ErrorCode.PERMISSION_DENIED, probe

    # The node kept serving throughout, and nothing was written by the refused put.
    assert ok(cluster.cli("get", "alice")).strip() == "101"
    # Every tablet led again within a while: a leader change of its own (a lease handed back to
    # its preferred leader, say) leaves a tablet leaderless for a moment on a loaded box.
    assert all(cluster.wait_healthy(timeout_s=30).values())
    assert "refused WriteRequest" in "".join(node_log(cluster, n) for n in cluster.node_ids)


def test_insecure_still_works_and_says_so(make_cluster) -> None:
    cluster = make_cluster(insecure=True)
    assert not certs_dir(cluster.data_dir).exists()
    ok(cluster.cli("put", "k", "v"))
    assert ok(cluster.cli("get", "k")).strip() == "v"
    assert "INSECURE" in status_text(cluster)
    assert "runs --insecure" in node_log(cluster, "n1")
