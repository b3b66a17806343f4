"""What a node answers from the connection's reading task (`Node.answer_now`), without a task of
its own: reads its replica serves at once, and peers' clock probes."""

from __future__ import annotations

import time

import trio

from tests.txn.test_node_metrics import one_node
from txn import api
from txn.net.peer_rules import Role
from txn.node.wiring import serve_node


async def test_a_peers_clock_probe_is_answered_at_once_with_the_physical_clock() -> None:
    """Read as the frame is taken from the socket: a task of its own would add a pass of a loaded
    event loop to every probe's round trip (clock samples too wide to use, a node fenced)."""
    node, env = one_node()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_node, node, env)
        node.role_of = lambda src: Role.PEER if src == "n2" else Role.WRITER  # type: ignore[method-assign]
        before_ns = time.time_ns()
        reply = node.answer_now("n2", api.ClockProbe())
        assert isinstance(reply, api.ClockProbeReply) and before_ns <= reply.physical_ns <= time.time_ns()
        refused = node.answer_now("client:1", api.ClockProbe())  # a client may not probe: refused, at once too
        assert isinstance(refused, api.ErrorReply) and refused.code is api.ErrorCode.PERMISSION_DENIED
        assert node.answer_now("n2", api.TabletMapRequest()) is None, "anything else goes to a task"
        nursery.cancel_scope.cancel()
