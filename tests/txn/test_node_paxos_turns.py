"""A node runs the Paxos turn a peer's message owes from the task that read it (`Node.messages_read`,
paxos/driver.py `turn_now`), not a loop pass later in the driver's own task.

One real node in process (the `build_node`/`serve_node` that ships, an in-memory engine, the
system clock) of a three-node cluster, with a transport that only records what it is given."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import trio

from hlc import HybridClock
from hlc.physical import SystemClock
from mvcc.engine import DictEngine
from paxos.messages import Ballot, Prepare, Promise
from txn import api, wire
from txn.api.cluster import ClusterConfig, NodeConfig, TabletConfig
from txn.node.server import Node
from txn.node.wiring import NodeEnvironment, build_node, serve_node, trio_monotonic_ns


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send(self, dst: str, msg: Any) -> None:
        self.sent.append((dst, wire.decode(msg.payload)))

    async def call(self, dst: str, msg: Any, *, timeout_s: float) -> Any:
        await trio.sleep_forever()


async def test_a_peers_paxos_message_is_answered_when_the_transport_says_the_read_is_done() -> None:
    config = ClusterConfig("turns-test", 10_000_000, [NodeConfig(f"n{i}", "127.0.0.1", i) for i in (1, 2, 3)],
                           [TabletConfig("t1", b"", None, ["n1", "n2", "n3"], "n2")])
    transport = Recording()

    @contextlib.asynccontextmanager
    async def recording(node: Node) -> AsyncIterator[Recording]:
        yield transport

    env = NodeEnvironment(clock=HybridClock(SystemClock(), config.max_offset_ns), open_engine=lambda t: DictEngine(),
                          open_transport=recording, monotonic_ns=trio_monotonic_ns, seed="n1", monitor_clocks=False)
    node = build_node(config, "n1", env)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_node, node, env)
        await trio.testing.wait_all_tasks_blocked()
        prepare = Prepare(Ballot(1_000, "n2"), 1)
        node.handle_message("n2", api.PaxosEnvelope("t1", wire.encode(prepare), 0))
        promises = lambda: [msg for dst, msg in transport.sent if dst == "n2" and type(msg) is Promise]  # noqa: E731
        assert promises() == [], "queued for the turn the read owes, not yet answered"
        node.messages_read()
        assert [promise.ballot for promise in promises()] == [prepare.ballot], "answered in this task, at once"
        node.messages_read()  # nothing more owed: no second answer
        assert len(promises()) == 1
        nursery.cancel_scope.cancel()
