"""cluster.toml's [limits] against real node processes: the node runs its transport with
them, and a bad [limits] stops `chronodb node` and `chronodb up` with one line."""

from __future__ import annotations

import pathlib
import socket
import time
from typing import Callable

import pytest

from tests.e2e.harness import LocalCluster, run_cli
from txn import wire
from txn.node.config import TransportLimits, config_path, generate, node_dir, write_config
from txn.wire import Handshake

pytestmark = pytest.mark.e2e

IDLE_TIMEOUT_NS = 1_000_000_000  # the default is 10 min: a node that ignored [limits] keeps the connection


def test_the_node_closes_an_idle_client_after_cluster_tomls_client_idle_timeout(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=1, tablets=1, insecure=True,
                           limits=TransportLimits(client_idle_timeout_ns=IDLE_TIMEOUT_NS))
    assert 'client_idle_timeout = "1s"' in config_path(cluster.data_dir).read_text()
    hello = Handshake(wire.PROTOCOL_VERSION, cluster.config.cluster_id, "client")
    with socket.create_connection(cluster.address("n1"), timeout=10) as client:
        client.sendall(wire.encode_frame(wire.encode(hello)))
        started = time.monotonic()
        received = b""
        try:
            while chunk := client.recv(4096):
                received += chunk
        except TimeoutError:
            pytest.fail("the node kept an idle client connection for 10 s (client_idle_timeout 1s not applied)")
        closed_after_s = time.monotonic() - started
    decoder = wire.FrameDecoder()
    assert [type(wire.decode(frame)) for frame in decoder.feed(received)] == [Handshake]  # accepted, then idle
    assert 0.9 <= closed_after_s < 8, closed_after_s
    assert "idle for 1s; closing the connection" in (node_dir(cluster.data_dir, "n1") / "node.log").read_text()


@pytest.mark.parametrize("command", [["node", "--id", "n1"], ["up"]])
def test_a_bad_limits_table_is_one_line_and_exit_2(tmp_path: pathlib.Path, command: list[str]) -> None:
    write_config(tmp_path, generate(nodes=1, tablets=1))
    path = config_path(tmp_path)
    head, _, rest = path.read_text().partition("[[nodes]]")
    path.write_text(f"{head}[limits]\nmax_conections = 10\n\n[[nodes]]{rest}")
    result = run_cli([*command, "--dir", str(tmp_path), "--insecure"], timeout_s=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"chronodb: {path} is invalid: unknown key 'max_conections' in [limits] (known: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "n1" / "node.log").exists()  # refused before the node started
