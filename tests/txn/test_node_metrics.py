"""A node's Prometheus figures (txn/node/metrics.py) follow the work it does.

One real node in process (the `build_node`/`serve_node` that ships, in-memory
engines, the system clock, a transport with no peers): writes, reads, a
two-tablet transaction through the coordinator's 2PC, a refused commit and a
request for a tablet it does not hold; then the registry's text is parsed
with prometheus_client's own parser.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hlc import HybridClock, Timestamp
from hlc.physical import SystemClock
from mvcc.engine import DictEngine
from txn import api
from txn.api.cluster import ClusterConfig, NodeConfig, TabletConfig
from txn.net.messaging import PeerStatistics, TransportStatistics
from txn.node.metrics import request_kind
from txn.node.server import Node
from txn.node.wiring import NodeEnvironment, build_node, serve_node, trio_monotonic_ns

TIMEOUT_NS = 5_000_000_000


class NoPeers:
    """A transport for a one-node cluster: nothing to send to; the statistics the collector reads."""

    def send(self, dst: str, msg: Any) -> None:
        raise AssertionError(f"a one-node cluster sent {msg!r} to {dst}")

    async def call(self, dst: str, msg: Any, *, timeout_s: float) -> Any:
        raise AssertionError(f"a one-node cluster called {dst}")

    def statistics(self) -> TransportStatistics:
        return TransportStatistics("n1", {"client:1": PeerStatistics(rejected_clock=7)}, 0, 0, 0)


@contextlib.asynccontextmanager
async def no_peers(node: Node) -> AsyncIterator[NoPeers]:
    yield NoPeers()


def one_node() -> tuple[Node, NodeEnvironment]:
    config = ClusterConfig("metrics-test", 10_000_000, [NodeConfig("n1", "127.0.0.1", 1)], [
        TabletConfig("t1", b"", b"m", ["n1"], "n1"), TabletConfig("t2", b"m", None, ["n1"], "n1"),
    ])
    engines = {tablet.id: DictEngine() for tablet in config.tablets}
    env = NodeEnvironment(
        clock=HybridClock(SystemClock(), config.max_offset_ns), open_engine=lambda tablet: engines[tablet.id],
        open_transport=no_peers, monotonic_ns=trio_monotonic_ns, seed="n1", monitor_clocks=False,
    )
    return build_node(config, "n1", env), env


def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name and sorted labels -> value"""
    text = generate_latest(node.metrics.registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def ask(node: Node, msg: Any) -> Any:
    return await node.handle_request("client:1", msg)


def test_request_kinds_are_snake_case_without_the_suffix() -> None:
    assert request_kind(api.WriteRequest) == "write"
    assert request_kind(api.OnePhaseCommitRequest) == "one_phase_commit"
    assert request_kind(api.ClockProbe) == "clock_probe"


async def test_figures_follow_writes_reads_and_a_two_tablet_transaction() -> None:
    node, env = one_node()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_node, node, env)
        with trio.fail_after(60):
            while not all(replica._is_serving() for replica in node.replicas.values()):
                await trio.sleep(0.02)
        before = scrape(node)

        for i in range(3):
            assert isinstance(await ask(node, api.WriteRequest("t1", (api.KeyWrite(b"a%d" % i, b"v"),), TIMEOUT_NS)), api.WriteReply)
        assert isinstance(await ask(node, api.ReadRequest("t1", b"a0", api.ReadMode.STRONG, None, TIMEOUT_NS)), api.ReadReply)
        assert isinstance(await ask(node, api.ScanRequest("t1", b"", None, api.ReadMode.STRONG, None, 10, TIMEOUT_NS)), api.ScanReply)
        unknown = await ask(node, api.WriteRequest("t9", (api.KeyWrite(b"z", b"v"),), TIMEOUT_NS))
        assert isinstance(unknown, api.ErrorReply) and unknown.code is api.ErrorCode.UNKNOWN_TABLET

        # A two-tablet transaction: prepare both, commit at the coordinator t1.
        priority = node.clock.now()
        votes = []
        for tablet, key in (("t1", b"b"), ("t2", b"x")):
            prepared = await ask(node, api.PrepareRequest(tablet, "tx1", priority, "t1", (api.KeyWrite(key, b"1"),), (), (), TIMEOUT_NS))
            assert isinstance(prepared, api.PrepareReply), prepared
            votes.append(api.ParticipantVote(tablet, prepared.prepare_ts))
        committed = await ask(node, api.CommitRequest("t1", "tx1", priority, votes, TIMEOUT_NS))
        assert isinstance(committed, api.CommitReply), committed
        with trio.fail_after(60):  # the coordinator resolves t2 after answering
            while node.replicas["t1"].marks["txn.resolve_requests"] < 1:
                await trio.sleep(0.02)
        assert "tx1" not in node.replicas["t2"].state.txns.prepared
        # A commit nobody prepared is refused (txn_aborted, conflict) at its coordinator.
        refused = await ask(node, api.CommitRequest("t1", "tx2", node.clock.now(), (), TIMEOUT_NS))
        assert isinstance(refused, api.ErrorReply) and refused.abort_reason is api.AbortReason.CONFLICT
        read_only = await ask(node, api.OnePhaseCommitRequest("t2", "tx3", node.clock.now(), (), (), (), TIMEOUT_NS))
        assert isinstance(read_only, api.CommitReply), read_only
        # Prepared, then given up by its client: the coordinator logs the abort; asked about an
        # unknown transaction, it presumes abort.
        prepared = await ask(node, api.PrepareRequest("t1", "tx4", node.clock.now(), "t1", (api.KeyWrite(b"c", b"1"),), (), (), TIMEOUT_NS))
        assert isinstance(prepared, api.PrepareReply), prepared
        assert isinstance(await ask(node, api.AbortRequest("t1", "tx4", "t1", TIMEOUT_NS)), api.AbortReply)
        status = await node.handle_request("n1", api.TxnStatusRequest("t1", "tx5", TIMEOUT_NS))  # peers only
        assert isinstance(status, api.TxnStatusReply) and status.state is api.TxnState.ABORTED

        after = scrape(node)
        nursery.cancel_scope.cancel()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chronodb_requests_total", kind="write", outcome="ok") == 3
    assert moved("chronodb_requests_total", kind="write", outcome="unknown_tablet") == 1
    assert moved("chronodb_requests_total", kind="read", outcome="ok") == 1
    assert moved("chronodb_requests_total", kind="prepare", outcome="ok") == 3
    assert moved("chronodb_requests_total", kind="commit", outcome="txn_aborted") == 1
    assert moved("chronodb_write_latency_seconds_count", tablet="t1") == 3
    assert moved("chronodb_commit_wait_seconds_count", tablet="t1") == 4  # three writes, one 2PC commit
    assert moved("chronodb_read_latency_seconds_count", tablet="t1", mode="strong", op="get") == 1
    assert moved("chronodb_read_latency_seconds_count", tablet="t1", mode="strong", op="scan") == 1
    assert moved("chronodb_paxos_round_seconds_count", tablet="t2") >= 1  # its prepare (the resolve may follow the answer)
    assert moved("chronodb_txn_commits_total", tablet="t1", path="two_phase") == 1
    assert moved("chronodb_txn_commits_total", tablet="t2", path="read_only") == 1
    assert moved("chronodb_txn_aborts_total", tablet="t1", reason="conflict") == 1
    assert moved("chronodb_distributed_commits_total", tablet="t1") == 4  # three writes and the 2PC commit decision
    assert moved("chronodb_txn_abort_decisions_total", tablet="t1", cause="client") == 1
    assert moved("chronodb_txn_abort_decisions_total", tablet="t1", cause="presumed") == 1
    assert moved("chronodb_txn_resolve_requests_total", tablet="t1") == 1
    assert moved("chronodb_txn_resolve_decisions_total", tablet="t1") == 1
    # Three decision records at t1 (tx1's commit, tx4's and tx5's aborts), none at t2, which
    # coordinated nothing: their bytes, as the in-memory engine counts them exactly.
    t1_records = node.replicas["t1"].state.txns
    assert moved("chronodb_txn_decision_bytes", tablet="t1") == sum(
        len(key) + len(value) for key, value in t1_records.engine.iterate(b"t/d/", b"t/d0")) > 3 * len("t/d/tx1")
    assert value(after, "chronodb_txn_decision_bytes", tablet="t2") == 0
    assert not any(labels and dict(labels).get("tablet") == "t9" for _, labels in after)  # no series from request fields
    for tablet in ("t1", "t2"):
        assert value(after, "chronodb_applied_index", tablet=tablet) > 0
        assert value(after, "chronodb_durable_index", tablet=tablet) >= value(after, "chronodb_applied_index", tablet=tablet)
        assert value(after, "chronodb_lease_holder", tablet=tablet) == 1
        assert value(after, "chronodb_serving_leader", tablet=tablet) == 1
        assert value(after, "chronodb_leader_changes_total", tablet=tablet) >= 1
        assert 0 <= value(after, "chronodb_safe_time_lag_seconds", tablet=tablet) < 60
        assert value(after, "chronodb_leveldb_size_bytes", tablet=tablet) > 0
    assert value(after, "chronodb_fenced") == 0
    assert value(after, "chronodb_node_info", node="n1", cluster_id="metrics-test") == 1
    assert ("process_cpu_seconds_total", ()) in after


async def test_a_tablet_that_fails_to_report_drops_only_its_own_samples() -> None:
    node, _ = one_node()
    broken = node.replicas["t2"]
    broken.engine.close()  # its size can no longer be read

    samples = scrape(node)
    assert ("chronodb_applied_index", (("tablet", "t1"),)) in samples
    assert ("chronodb_applied_index", (("tablet", "t2"),)) not in samples
    node.rejected[("client", "permission")] += 2
    assert value(scrape(node), "chronodb_rejected_messages_total", peer="client", reason="permission") == 2


async def test_an_empty_replica_gives_no_lag_samples() -> None:
    node, _ = one_node()
    assert node.replicas["t1"].state.safe_ts == Timestamp.MIN
    samples = scrape(node)
    assert not any(name == "chronodb_safe_time_lag_seconds" for name, _ in samples)
    assert not any(name == "chronodb_gc_horizon_lag_seconds" for name, _ in samples)


async def test_a_handler_that_raises_counts_as_error_and_counting_never_fails_a_request() -> None:
    node, _ = one_node()

    async def raising(msg: Any) -> Any:
        raise RuntimeError("a handler bug")

    real_dispatch = node._dispatch
    node._dispatch = raising  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await ask(node, api.TabletMapRequest())
    assert value(scrape(node), "chronodb_requests_total", kind="tablet_map", outcome="error") == 1

    def broken(*args: Any) -> None:
        raise RuntimeError("a metrics bug")

    node._dispatch = real_dispatch  # type: ignore[method-assign]
    node.metrics._answered = broken  # type: ignore[method-assign]
    assert isinstance(await ask(node, api.TabletMapRequest()), api.TabletMapReply)
    assert node.metrics.failures == 1
