"""Keeping a node's tablet replicas running when their storage fails: rebuild or restart one, never the node.

Role: `TabletEngines` owns the real LevelDB directories of one node's
replicas; `supervise_replica` runs one replica and replaces it when its
storage fails, so the node's other tablets keep serving:
- **corruption** (`CorruptionError`: at start-up when the directory is
  opened, or later from any read or apply of that replica), and
  **repair** on demand (`chronodb repair --node ID --tablet T`): the replica
  stops, its directory is set aside whole as `<tablet dir>.corrupt-<UTC time>`
  (never deleted: it is the evidence), a fresh empty store is opened and
  marked "rebuilding" (synced, paxos/storage.py) before a new replica
  starts on it. That replica learns everything again from its peers (the
  log, or a snapshot) and votes for nothing until it is fenced
  (paxos/replica.py, "Rebuilding"): it lost whatever it promised or accepted.
  One log line says which tablet, which directory and what is wrong.
- **any other storage failure** (`EngineError`: a full disk, an I/O error):
  the replica stops, and after `RESTART_AFTER_S` its store is closed and
  opened again (LevelDB refuses every write after a failed one until
  reopened) and a new replica starts on it, recovering exactly what was
  synced, as after a process restart (no memory grows while the disk is
  full; the replica rejoins when space returns, trying again every
  `RESTART_AFTER_S` until the store opens). Nothing acknowledged is lost: a
  write is acknowledged only after a majority synced it.

The simulation keeps its `DictEngine`s and no `TabletEngines`: there a
repair is refused, and a storage failure restarts the replica as here.

Invariants: a replica and its engine are replaced together, while no task
of the old replica runs; a directory is set aside only after its engine is
closed; the "rebuilding" marker is synced before the new replica starts, so
a crash in between leaves a store that still does not vote.
"""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
from typing import TYPE_CHECKING, Callable

import attrs
import trio

from mvcc.engine import CorruptionError, Engine, EngineError
from mvcc.engine_leveldb import LevelDbEngine
from paxos.storage import PaxosStorage
from txn.api.cluster import ClusterConfig, TabletConfig
from txn.node.config import tablet_dir

if TYPE_CHECKING:
    from txn.node.server import Node
    from txn.tablet.tablet_replica import TabletReplica

log = logging.getLogger("chronodb.node")

RESTART_AFTER_S = 5.0  # a replica whose storage failed (not corruption) restarts on it after this


class StartError(Exception):
    """A tablet directory that cannot be opened for a reason other than corruption (one line)."""


@attrs.define
class TabletEngines:
    """The LevelDB stores of one node's replicas, by tablet id; `close()` closes them all."""

    data_dir: str | os.PathLike[str]
    node_id: str
    engines: dict[str, LevelDbEngine] = attrs.field(factory=dict)
    # Tablets opened fresh because their store was corrupt when opened: tablet -> what was wrong.
    corrupt_on_open: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def open_all(cls, data_dir: str | os.PathLike[str], config: ClusterConfig, node_id: str) -> "TabletEngines":
        engines = cls(data_dir, node_id)
        try:
            for tablet in config.tablets_of(node_id):
                engines.open(tablet.id)
        except BaseException:
            engines.close()
            raise
        return engines

    def path(self, tablet_id: str) -> pathlib.Path:
        return tablet_dir(self.data_dir, self.node_id, tablet_id)

    def open(self, tablet_id: str) -> LevelDbEngine:
        """Open a tablet's store; a corrupt one is set aside and replaced by a fresh store marked rebuilding."""
        path = self.path(tablet_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = LevelDbEngine(str(path))
        except CorruptionError as error:
            self.corrupt_on_open[tablet_id] = str(error)
            engine = self._fresh(tablet_id, str(error))
        except EngineError as error:
            raise StartError(str(error)) from None
        self.engines[tablet_id] = engine
        return engine

    def reopen(self, tablet_id: str) -> LevelDbEngine:
        """Close the tablet's store and open it again (after a failed write); corrupt: rebuilt instead."""
        old = self.engines.pop(tablet_id, None)
        if old is not None:
            try:
                old.close()
            except EngineError as error:
                log.warning("tablet %s: closing the store failed (%s); opening it again anyway", tablet_id, error)
        return self.open(tablet_id)

    def rebuild(self, tablet_id: str, reason: str) -> LevelDbEngine:
        """Close the tablet's store, set its directory aside and open a fresh one marked rebuilding."""
        old = self.engines.pop(tablet_id, None)
        if old is not None:
            try:
                old.close()
            except EngineError as error:
                log.warning("tablet %s: closing the old store failed (%s); setting it aside anyway", tablet_id, error)
        engine = self._fresh(tablet_id, reason)
        self.engines[tablet_id] = engine
        return engine

    def _fresh(self, tablet_id: str, reason: str) -> LevelDbEngine:
        path = self.path(tablet_id)
        aside = None
        if path.exists():
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            aside = path.with_name(f"{path.name}.corrupt-{stamp}")
            os.replace(path, aside)
        try:
            engine = LevelDbEngine(str(path))
        except EngineError as error:
            raise StartError(f"tablet {tablet_id}: cannot create a fresh store at {path}: {error}") from None
        PaxosStorage(engine).mark_rebuilding()
        log.error("tablet %s on %s: %s; %s; rebuilding this replica from its peers", tablet_id, self.node_id,
                  reason, f"old store set aside as {aside}" if aside else "no old store")
        return engine

    def close(self) -> None:
        for engine in self.engines.values():
            try:
                engine.close()
            except EngineError as error:
                log.warning("closing a store failed: %s", error)


def first_storage_error(group: BaseExceptionGroup) -> EngineError:
    """The storage error a replica's task group failed with (corruption first)."""
    corrupt = group.subgroup(CorruptionError)
    chosen = corrupt if corrupt is not None else group.subgroup(EngineError)
    assert chosen is not None
    while isinstance(chosen, BaseExceptionGroup):
        chosen = chosen.exceptions[0]
    assert isinstance(chosen, EngineError)
    return chosen


async def supervise_replica(
    node: "Node", tablet: TabletConfig, make_replica: Callable[[Engine], "TabletReplica"],
    engines: TabletEngines | None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the tablet's replica; rebuild it (corruption, repair) or restart it (other storage failures)."""
    started = False
    while True:
        replica = node.replicas[tablet.id]
        scope = trio.CancelScope()
        node.replica_scopes[tablet.id] = scope
        failure: EngineError | None = None
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(replica.run)
                    if not started:
                        started = True
                        task_status.started()
        except* EngineError as group:
            failure = first_storage_error(group)
        if failure is None and tablet.id not in node.rebuild_requests:
            return  # cancelled with the node
        rebuild = engines is not None and (tablet.id in node.rebuild_requests or isinstance(failure, CorruptionError))
        if failure is not None and not rebuild:
            log.error("tablet %s on %s stopped: %s; restarting it on the same store in %.0f s",
                      tablet.id, node.node_id, failure, RESTART_AFTER_S)
            await trio.sleep(RESTART_AFTER_S)
        engine = await _next_engine(node, tablet.id, replica.engine, engines, failure)
        fresh = make_replica(engine)
        fresh.rebuild_reason = (str(failure) if isinstance(failure, CorruptionError) else node.rebuild_requests.get(tablet.id)
                                or (engines.corrupt_on_open.get(tablet.id, "") if engines is not None else ""))
        node.rebuild_requests.pop(tablet.id, None)
        node.install_replica(fresh)
        if not started:
            started = True
            task_status.started()


async def _next_engine(node: "Node", tablet_id: str, engine: Engine, engines: TabletEngines | None,
                       failure: EngineError | None) -> Engine:
    """The store the next replica runs on: a fresh one (corruption, repair) or the same (anything else)."""
    if engines is None:
        return engine  # no real stores to replace (the simulation): restart on the same one
    reason = node.rebuild_requests.get(tablet_id) or (str(failure) if isinstance(failure, CorruptionError) else None)
    while True:
        try:
            return engines.rebuild(tablet_id, reason) if reason is not None else engines.reopen(tablet_id)
        except StartError as error:
            log.error("tablet %s on %s: %s; trying again in %.0f s", tablet_id, node.node_id, error, RESTART_AFTER_S)
            await trio.sleep(RESTART_AFTER_S)
