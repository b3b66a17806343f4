"""Oversized writes against real nodes: refused before anything is proposed, as a
definite failure (never outcome unknown), with the node unharmed; values too long
for a command line go through `put --value-file` and standard input."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

import pytest
import trio

from tests.e2e.harness import LocalCluster
from tools.localcluster import ROOT, cli_env
from tools.up import die_with_parent
from txn.client import Refused, TooLarge, open_client

pytestmark = pytest.mark.e2e

MIB = 1 << 20
LIMIT = 256 << 10  # this module's max_value_bytes: the rule at a size a loaded box replicates quickly


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("limits") / "data", max_value_bytes=LIMIT)
    try:
        cluster.start_all()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()


def open_cluster_client(cluster: LocalCluster):
    return open_client([n.address for n in cluster.config.nodes], cluster_id=cluster.config.cluster_id,
                       timeout_s=20.0, tls=cluster.tls)


async def test_oversized_writes_are_definite_refusals_and_leave_nothing_behind(small_limits: LocalCluster) -> None:
    async with open_cluster_client(small_limits) as client:
        await client.put(b"limits-warm", b"1")  # loads the tablet map and with it the cluster's limits
        assert client.max_value_bytes == small_limits.config.max_value_bytes == LIMIT

        # 1. The client refuses at once: nothing is sent.
        with pytest.raises(TooLarge, match="max_value_bytes"):
            await client.put(b"limits-client", b"x" * (LIMIT + 1))
        with pytest.raises(TooLarge, match="max_key_bytes"):
            await client.put(b"k" * 5000, b"v")

        # 2. A client that does not know (or ignores) the limits: the node refuses
        #    before proposing, and the client reports a refusal, not outcome unknown.
        check_sizes = client.check_sizes
        client.check_sizes = lambda writes: None  # type: ignore[method-assign]
        with pytest.raises(Refused, match="max_value_bytes"):
            await client.put(b"limits-node", b"x" * (LIMIT + 1))

        # 3. Over the wire's frame limit: not even sent, still a definite refusal.
        with pytest.raises(TooLarge, match="frame limit: not sent"):
            await client.put(b"limits-frame", b"x" * (20 * MIB))

        # 4. A transaction's oversized write fails at put, before anything is locked.
        client.check_sizes = check_sizes  # type: ignore[method-assign]
        with pytest.raises(TooLarge):
            async with client.transaction() as tx:
                tx.put(b"limits-txn-a", b"small")
                tx.put(b"limits-txn-b", b"x" * (LIMIT + 1))

        # Nothing of it exists, and the node still serves, a value at the limit included.
        for key in (b"limits-client", b"limits-node", b"limits-frame", b"limits-txn-a", b"limits-txn-b"):
            assert (await client.get(key)).value is None, key
        assert (await client.get(b"limits-warm")).value == b"1"
        at_limit = os.urandom(LIMIT)  # exactly at the limit: accepted
        await client.put(b"limits-at-limit", at_limit)
        assert (await client.get(b"limits-at-limit")).value == at_limit


def test_put_value_file_and_stdin_carry_raw_bytes(small_limits: LocalCluster, tmp_path) -> None:
    value = os.urandom(200_000) + b"\x00\xff"  # over Linux's 128 KiB per argument, and not text
    path = tmp_path / "value.bin"
    path.write_bytes(value)
    assert small_limits.cli("put", "limits-file", "--value-file", str(path)).returncode == 0
    piped = subprocess.run([sys.executable, "-m", "tools.cli", "put", "limits-stdin", "--value-file", "-",
                            "--dir", str(small_limits.data_dir)], input=value[::-1], capture_output=True,
                           env=cli_env(), cwd=ROOT, timeout=60, preexec_fn=die_with_parent())
    assert piped.returncode == 0, piped.stderr
    client = small_limits.client()
    assert client.get(b"limits-file").value == value
    assert client.get(b"limits-stdin").value == value[::-1]

    too_big = tmp_path / "big.bin"
    too_big.write_bytes(b"x" * (LIMIT + 1))
    refused = small_limits.cli("put", "limits-file-big", "--value-file", str(too_big))
    assert refused.returncode == 2 and "refused" in refused.stderr and "max_value_bytes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert client.get(b"limits-file-big").value is None

    both = small_limits.cli("put", "k", "v", "--value-file", str(path))
    neither = small_limits.cli("put", "k")
    missing = small_limits.cli("put", "k", "--value-file", str(tmp_path / "nowhere"))
    for result in (both, neither, missing):
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot read --value-file" in missing.stderr


async def test_scans_page_past_the_reply_byte_bound(small_limits: LocalCluster) -> None:
    """20 values of 256 KiB (5 MiB) on one tablet: more than one 4 MiB scan reply holds.
    The node cuts the reply and says so; both scans page on to the last row."""
    values = {b"pages-%02d" % i: os.urandom(LIMIT) for i in range(20)}
    async with open_cluster_client(small_limits) as client:
        for key, value in values.items():
            await client.put(key, value)
        scanned = await client.scan(b"pages-", b"pages.")
        assert [(row.key, row.value) for row in scanned.rows] == sorted(values.items())

        async def read_all(tx):
            return await tx.scan(b"pages-", b"pages.")

        rows = await client.run_transaction(read_all)
        assert [(row.key, row.value) for row in rows] == sorted(values.items())
