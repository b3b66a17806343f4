"""Issue 16's hostile probes against real node processes, briefly, while a normal client writes.

Each probe (tools/probes.py, the same code `chronodb bench probes` measures
with) runs for a few seconds at a small scale against one shared 3-node TLS
cluster; afterwards every node must still run, every tablet take a write,
the normal client must have completed writes, no node's anonymous RSS may
have grown by more than 150 MB, and the probe's own outcome must hold (idle
flood connections evicted and a new client served meanwhile, the unread-scan
client cut off, oversized
writes refused definitely, the SIGSTOPped follower caught up under the same
leader, every garbage connection closed). Latency is not asserted: speed is
the benchmark's business, and this machine is shared.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.harness import LocalCluster
from tools.probes import MIB, PROBES, ProbeScale, WriteLog, normal_client_during, observe

pytestmark = pytest.mark.e2e

SECONDS = 2.5
RSS_GROWTH_MAX_MB = 150.0
SCALE = ProbeScale(
    flood_extra_connections=64, idle_connections=32, half_frame_connections=4, half_frame_sent_bytes=2 * MIB,
    unread_scan_requests=100, scan_keys=6, scan_value_bytes=1 * MIB, oversize_bytes=64 * MIB,
    catchup_values=6, catchup_value_bytes=1 * MIB,
)


@pytest.fixture(scope="module")
def probe_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 3-node, 3-tablet TLS cluster for the module's probes (each leaves it healthy, or fails)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("probes") / "data", tablets=3)
    try:
        cluster.start_all()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("name", list(PROBES))
async def test_probe_leaves_the_cluster_serving_in_bounded_memory(probe_cluster: LocalCluster, name: str) -> None:
    log = WriteLog()
    observed = await normal_client_during(probe_cluster, log, lambda: observe(probe_cluster, name, SECONDS, SCALE))
    did = observed.result.did
    assert observed.result.failed_checks == [], did
    assert not observed.dead, (observed.dead, did, probe_cluster.logs_tail())
    assert observed.writes_after is None, (observed.writes_after, did)
    assert log.latencies_s, ("no normal write completed during the probe", log.errors[:3], did)
    growth = {node: round(observed.rss_growth_mb(node)) for node in observed.rss_peak_mb}
    assert sorted(growth) == probe_cluster.node_ids, growth
    assert max(growth.values()) <= RSS_GROWTH_MAX_MB, (growth, did)
