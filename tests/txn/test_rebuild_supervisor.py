"""The replica supervisor (txn/node/rebuild.py) with stand-in replicas on real LevelDB stores.

A replica whose task fails with `CorruptionError` is replaced by one on a
fresh store marked rebuilding (the old directory set aside, not deleted); one
that fails with another `EngineError` (a full disk) is restarted after a
pause on the same store, closed and opened again; a repair request stops a healthy replica and rebuilds
it; a store corrupt at start-up is set aside when opened. Virtual time.
"""

from __future__ import annotations

import pathlib

import attrs
import trio
import trio.testing

from mvcc.engine import Batch, CorruptionError, Engine, EngineError
from paxos.storage import PaxosStorage
from txn.node.config import generate
from txn.node.rebuild import RESTART_AFTER_S, TabletEngines, supervise_replica


@attrs.define(eq=False)
class StandIn:
    """Runs until told to fail (with the given error) or cancelled."""

    tablet: object
    engine: Engine
    fail_with: trio.MemoryReceiveChannel
    rebuild_reason: str = ""
    started: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started += 1
        task_status.started()
        error = await self.fail_with.receive()
        raise error


@attrs.define(eq=False)
class StandInNode:
    node_id: str = "n1"
    replicas: dict = attrs.field(factory=dict)
    replica_scopes: dict = attrs.field(factory=dict)
    rebuild_requests: dict = attrs.field(factory=dict)
    installed: list = attrs.field(factory=list)

    def install_replica(self, replica: StandIn) -> None:
        self.installed.append(replica)
        self.replicas[replica.tablet.id] = replica


async def test_corruption_rebuilds_on_a_fresh_store_and_a_full_disk_restarts_on_the_same(
        tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock) -> None:
    config = generate(nodes=1, tablets=1)
    tablet = config.tablets[0]
    engines = TabletEngines.open_all(tmp_path, config, "n1")
    try:
        first = engines.engines[tablet.id]
        first.apply(Batch([(b"m-old", b"data")]), sync=True)
        send, receive = trio.open_memory_channel[Exception](10)
        node = StandInNode()
        node.replicas[tablet.id] = StandIn(tablet, first, receive)
        made: list[StandIn] = []

        def make(engine: Engine) -> StandIn:
            made.append(StandIn(tablet, engine, receive))
            return made[-1]

        async with trio.open_nursery() as nursery:
            await nursery.start(supervise_replica, node, tablet, make, engines)
            path = engines.path(tablet.id)

            await send.send(EngineError(f"data directory {path}: No space left on device (writing)"))
            await trio.sleep(1)
            assert not made, "a full disk waits before restarting"
            await trio.sleep(RESTART_AFTER_S)
            assert len(made) == 1 and made[0].engine is engines.engines[tablet.id], "restarted on its store, reopened"
            assert made[0].rebuild_reason == "" and made[0].engine.get(b"m-old") == b"data"
            assert not PaxosStorage(made[0].engine).load().rebuilding
            assert not list(path.parent.glob("*.corrupt-*"))

            await send.send(CorruptionError(f"data directory {path} is corrupt: block checksum mismatch (reading)"))
            await trio.sleep(0.1)
            assert len(made) == 2 and made[1].engine is not made[0].engine
            fresh = made[1].engine
            assert "checksum mismatch" in made[1].rebuild_reason
            assert fresh.get(b"m-old") is None and PaxosStorage(fresh).load().rebuilding
            (aside,) = path.parent.glob(f"{tablet.id}.corrupt-*")
            assert (aside / "CURRENT").exists(), "the old store is set aside whole"

            node.rebuild_requests[tablet.id] = "repair asked for by an admin"
            node.replica_scopes[tablet.id].cancel()
            await trio.sleep(0.1)
            assert len(made) == 3 and made[2].rebuild_reason == "repair asked for by an admin"
            assert len(list(path.parent.glob(f"{tablet.id}.corrupt-*"))) == 2
            assert node.rebuild_requests == {}
            assert [r.started for r in made] == [1, 1, 1]
            nursery.cancel_scope.cancel()
    finally:
        engines.close()


def test_a_store_corrupt_at_start_is_set_aside_and_opened_fresh(tmp_path: pathlib.Path) -> None:
    config = generate(nodes=1, tablets=2)
    engines = TabletEngines.open_all(tmp_path, config, "n1")
    t1, t2 = config.tablets
    engines.engines[t1.id].apply(Batch([(b"m-x", b"1")]), sync=True)
    engines.engines[t2.id].apply(Batch([(b"m-y", b"2")]), sync=True)
    engines.close()
    (manifest,) = engines.path(t1.id).glob("MANIFEST-*")
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))

    reopened = TabletEngines.open_all(tmp_path, config, "n1")
    try:
        assert set(reopened.corrupt_on_open) == {t1.id}
        assert "corrupt" in reopened.corrupt_on_open[t1.id] and str(engines.path(t1.id)) in reopened.corrupt_on_open[t1.id]
        assert PaxosStorage(reopened.engines[t1.id]).load().rebuilding
        assert reopened.engines[t1.id].get(b"m-x") is None
        assert reopened.engines[t2.id].get(b"m-y") == b"2", "the other tablet's store is untouched"
        assert not PaxosStorage(reopened.engines[t2.id]).load().rebuilding
        assert len(list(engines.path(t1.id).parent.glob(f"{t1.id}.corrupt-*"))) == 1
    finally:
        reopened.close()
