"""The cluster's synced Paxos log writes over a benchmark figure, read from the nodes' /metrics.

Role: `LogWrites.read(cluster)` sums every node's `chronodb_log_writes_total` and
`chronodb_log_writer_passes_total` (txn/node/log_writer.py: one synced write per tablet turn that
wrote; one pass of the node's log-writer thread writes everything queued when it began); `note`
turns two readings and the figure's operations into what a `bench` row prints:
`log writes 0.38/op, 1.42 a pass`. Writes per operation say how well group commit batches (a
synced write carries every command its turn took); writes per pass, how often the node's tablets'
turns share a pass of the thread (ARCHITECTURE.md, "The node-wide turn, measured").

Invariants: a node that cannot be scraped (no metrics port, a timeout, a process gone) makes the
reading None, never an error: the figure is a note beside the bench's own measurement. The note is
pure: `note(before, after, operations)`.
"""

from __future__ import annotations

import urllib.request

import attrs
from prometheus_client.parser import text_string_to_metric_families

from tools.localcluster import LocalCluster

SCRAPE_TIMEOUT_S = 5.0
WRITES = "chronodb_log_writes_total"
PASSES = "chronodb_log_writer_passes_total"


@attrs.frozen
class LogWrites:
    writes: float
    passes: float

    @classmethod
    def read(cls, cluster: LocalCluster) -> "LogWrites | None":
        """The sums over the cluster's nodes now; None if a node could not be read."""
        writes = passes = 0.0
        for node_id in cluster.node_ids:
            address = cluster.config.node(node_id).metrics_address
            if address is None:
                return None
            host, port = address
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
                    text = response.read().decode()
                samples = {sample.name: sample.value for family in text_string_to_metric_families(text)
                           for sample in family.samples if sample.name in (WRITES, PASSES)}
            except (OSError, ValueError):
                return None
            if WRITES not in samples or PASSES not in samples:
                return None
            writes += samples[WRITES]
            passes += samples[PASSES]
        return cls(writes, passes)


def note(before: LogWrites | None, after: LogWrites | None, operations: int) -> str:
    """`log writes 0.38/op, 1.42 a pass` over the figure; "" without both readings or operations."""
    if before is None or after is None or operations <= 0:
        return ""
    writes, passes = after.writes - before.writes, after.passes - before.passes
    per_pass = f"{writes / passes:.2f} a pass" if passes > 0 else "no pass"
    return f"log writes {writes / operations:.2f}/op, {per_pass}"
