"""`chronodb inspect`: look inside tablets, keys, logs and nodes.

Role: the tablet inspector. Online (default) it asks running nodes through
their admin requests and keeps answering what it can while the cluster is
degraded (a node that does not answer is shown as down; a tablet without a
leader still shows its replicas' state). Offline (`--offline`) it opens the
LevelDB directories of stopped nodes read-only in spirit (nothing is
written); LevelDB allows one process at a time, so a running node's
directory is refused with exit code 2 rather than waited on.

Both paths build the same records, so their output agrees for a stopped node
on everything that is stored (versions, log entries, indexes, safe time).
"""

from __future__ import annotations

import argparse
import functools
import json

import trio

from hlc import Timestamp, format_duration_ns
from mvcc.engine import EngineError
from mvcc.engine_leveldb import LevelDbEngine
from paxos.storage import PaxosStorage
from tools import inspect_txn
from tools.errors import EXIT_OK, EXIT_UNREACHABLE, CliError
from tools.common import DEFAULT_DIR, printable, to_bytes
from tools.status import ask_nodes, client_tls, gather, gather_durability, tablet_leaders
from txn.net.tls import ClientTls
from txn import api
from txn.tablet.commands import describe_command
from txn.node.config import ClusterConfig, ConfigError, load_config, tablet_dir
from txn.tablet.state import TabletState

TIMEOUT_S = 2.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="inspect tablets, keys, Paxos logs and nodes (online or --offline)",
        description="The tablet inspector. Online through running nodes by default; --offline reads the "
        "data directories of stopped nodes (a running node's directory is refused with exit 2).",
    )
    what = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    def common(sub: argparse.ArgumentParser, *, node_flag: bool = True) -> None:
        sub.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.add_argument("--offline", action="store_true",
                         help="read stopped nodes' LevelDB directories instead (exit 2 if a node is running)")
        if node_flag:
            sub.add_argument("--node", help="only this node's replicas (with --offline: the stopped node to read)")

    tablets = what.add_parser("tablets", help="every tablet: range, replicas, leader, lease, per-replica indexes, lag, safe time, "
                              "GC horizon, prepared transactions, lock holders at the leader")
    common(tablets)
    tablets.set_defaults(func=run_tablets)
    tablet = what.add_parser("tablet", help="one tablet in depth: Paxos state, MVCC statistics, LevelDB size")
    tablet.add_argument("id")
    common(tablet)
    tablet.set_defaults(func=run_tablet)
    key = what.add_parser("key", help="every version of a key and any intent, on each replica, and whether they agree")
    key.add_argument("key")
    key.add_argument("--hex", action="store_true", help="KEY is hex")
    common(key)
    key.set_defaults(func=run_key)
    log = what.add_parser("log", help="decoded Paxos log entries of a tablet")
    log.add_argument("tablet")
    log.add_argument("--from", dest="from_index", type=int, default=1, help="first index (default 1)")
    log.add_argument("--to", dest="to_index", type=int, default=2**62, help="last index (default: the end; at most 1000 entries)")
    log.add_argument("--node", help="whose log (default: the leader online, the first replica offline)")
    common(log, node_flag=False)
    log.set_defaults(func=run_log)
    node = what.add_parser("node", help="one node: HLC, physical clock, injected skew, measured offsets, fencing, rejected messages")
    node.add_argument("id")
    common(node, node_flag=False)
    node.set_defaults(func=run_node)
    inspect_txn.add_parser(what, common)


# ---- plumbing -------------------------------------------------------------------

def config_of(args: argparse.Namespace) -> ClusterConfig:
    try:
        return load_config(args.dir)
    except ConfigError as error:
        raise CliError(str(error)) from None


class OfflineReplica:
    """A stopped node's replica, opened from its LevelDB directory."""

    def __init__(self, args: argparse.Namespace, config: ClusterConfig, node_id: str, tablet_id: str) -> None:
        path = tablet_dir(args.dir, node_id, tablet_id)
        if not path.is_dir():
            raise CliError(f"{path} does not exist: node {node_id} never stored tablet {tablet_id}")
        try:
            self.engine = LevelDbEngine(str(path), create_if_missing=False)
        except EngineError as error:
            if "in use" not in str(error):
                raise CliError(f"node {node_id}, tablet {tablet_id}: {error}") from None
            raise CliError(f"node {node_id} is running (its LevelDB {path} is locked): inspect it online, "
                           f"stop it first, or pick a stopped node with --node") from None
        self.state = TabletState(self.engine)
        self.persisted = PaxosStorage(self.engine).load()

    def close(self) -> None:
        self.engine.close()

    @property
    def first_index(self) -> int:
        return self.persisted.entries[0].index if self.persisted.entries else self.persisted.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.persisted.entries[-1].index if self.persisted.entries else self.persisted.snapshot_index


def chosen_replicas(args: argparse.Namespace, tablet) -> tuple[str, ...]:
    """The replicas of `tablet` to show: all, or the one --node names (if it holds one)."""
    if getattr(args, "node", None):
        return tuple(n for n in tablet.replicas if n == args.node)
    return tuple(tablet.replicas)


def ts_text(ts: Timestamp | None) -> str | None:
    return None if ts is None or ts == Timestamp.MIN else str(ts)


def emit(args: argparse.Namespace, obj: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(obj))
    else:
        print("\n".join(lines))


# ---- inspect tablets ----------------------------------------------------------------

def run_tablets(args: argparse.Namespace) -> int:
    config = config_of(args)
    records = []
    if args.offline:
        for tablet in config.tablets:
            replicas = []
            for node_id in chosen_replicas(args, tablet):
                replica = OfflineReplica(args, config, node_id, tablet.id)
                try:
                    replicas.append({
                        "node": node_id, "up": False, "chosen_index": None, "applied_index": replica.state.applied_index(),
                        "safe_ts": ts_text(replica.state.safe_ts), "gc_horizon": ts_text(replica.state.store.gc_horizon()),
                        "prepared_txns": sorted(replica.state.txns.prepared), "lock_holders": None,
                    })
                finally:
                    replica.close()
            records.append(tablet_record(tablet, None, 0, replicas))
    else:
        replies = trio.run(gather, config, client_tls(args.dir))
        durability = trio.run(gather_durability, config, client_tls(args.dir))
        for tablet in config.tablets:
            replicas, leader, lease_ns = [], None, 0
            for node_id in chosen_replicas(args, tablet):
                reply = replies.get(node_id)
                status = next((s for s in reply.tablets if s.id == tablet.id), None) if reply else None
                if status is None:
                    replicas.append({"node": node_id, "up": False})
                    continue
                if status.serving:
                    leader, lease_ns = node_id, status.lease_remaining_ns
                figures = durability.get(node_id)
                durable = next((d for d in figures.tablets if d.tablet_id == tablet.id), None) if figures else None
                replicas.append({
                    "node": node_id, "up": True, "chosen_index": status.chosen_index, "applied_index": status.applied_index,
                    "durable_index": durable.durable_index if durable else None,
                    "durable_ts": ts_text(durable.durable_ts) if durable else None,
                    "distributed_commits": durable.distributed_commits if durable else None,
                    "not_durable_commits": durable.not_durable_commits if durable else None,
                    "safe_ts": ts_text(status.safe_ts), "gc_horizon": ts_text(status.gc_horizon),
                    "prepared_txns": list(status.prepared_txns), "lock_holders": status.lock_holders if status.serving else None,
                })
            records.append(tablet_record(tablet, leader, lease_ns, replicas))
    lines = []
    for record in records:
        lease = f", lease {format_duration_ns(record['lease_remaining_ns'])} left" if record["leader"] else ""
        lines.append(f"tablet {record['id']} [{record['start'] or '(start)'}, {record['end'] or '(end)'}) "
                     f"leader {record['leader'] or '-'}{lease}")
        for replica in record["replicas"]:
            if "applied_index" not in replica:
                lines.append(f"  {replica['node']:<4} down")
                continue
            lag = f"lag {replica['lag']}" if replica.get("lag") is not None else ""
            lines.append(f"  {replica['node']:<4} chosen {replica['chosen_index'] if replica['chosen_index'] is not None else '-':>7} "
                         f"applied {replica['applied_index']:>7} {lag:<9} "
                         f"durable {replica['durable_index'] if replica.get('durable_index') is not None else '-':>7} "
                         f"@ {replica.get('durable_ts') or '-'}  safe {replica['safe_ts'] or '-'}  "
                         f"gc horizon {replica['gc_horizon'] or '-'}"
                         + (f"  prepared {len(replica['prepared_txns'])}" if replica.get("prepared_txns") else "")
                         + (f"  locks held by {replica['lock_holders']} txns" if replica.get("lock_holders") else ""))
    emit(args, {"tablets": records}, lines)
    return EXIT_OK


def tablet_record(tablet, leader: str | None, lease_ns: int, replicas: list[dict]) -> dict:
    top = max((r.get("applied_index") or 0 for r in replicas), default=0)
    for replica in replicas:
        if "applied_index" in replica:
            replica["lag"] = top - replica["applied_index"]
    return {
        "id": tablet.id, "start": printable(tablet.start), "end": None if tablet.end is None else printable(tablet.end),
        "replicas": replicas, "leader": leader, "lease_remaining_ns": lease_ns,
    }


# ---- inspect tablet ID ----------------------------------------------------------------

def run_tablet(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        tablet = config.tablet(args.id)
    except ConfigError as error:
        raise CliError(str(error)) from None
    replicas = []
    if args.offline:
        for node_id in chosen_replicas(args, tablet):
            replica = OfflineReplica(args, config, node_id, tablet.id)
            try:
                stats = replica.state.store.statistics()
                replicas.append({
                    "node": node_id, "up": False, "ballot": str(replica.persisted.promised),
                    "first_index": replica.first_index, "last_index": replica.last_index,
                    "snapshot_index": replica.persisted.snapshot_index, "applied_index": replica.state.applied_index(),
                    "chosen_index": None, "pending_proposals": None, "safe_ts": ts_text(replica.state.safe_ts),
                    "mvcc": mvcc_record(stats.keys, stats.versions, stats.tombstones, stats.intents, stats.approximate_bytes,
                                        stats.oldest_version_ts, stats.newest_version_ts, stats.gc_horizon),
                    "leveldb_bytes": replica.engine.size_on_disk(),
                })
            finally:
                replica.close()
    else:
        replies = trio.run(functools.partial(ask_nodes, tls=client_tls(args.dir)), config, {n: api.InspectTabletRequest(tablet.id) for n in chosen_replicas(args, tablet)})
        for node_id in chosen_replicas(args, tablet):
            reply = replies[node_id]
            if not isinstance(reply, api.InspectTabletReply):
                replicas.append({"node": node_id, "up": False})
                continue
            status = reply.status
            replicas.append({
                "node": node_id, "up": True, "ballot": status.ballot, "leader": status.serving,
                "first_index": status.first_index, "last_index": status.last_index,
                "snapshot_index": status.snapshot_index, "applied_index": status.applied_index,
                "chosen_index": status.chosen_index, "pending_proposals": status.pending_proposals,
                "safe_ts": ts_text(status.safe_ts),
                "mvcc": mvcc_record(reply.keys, reply.versions, reply.tombstones, reply.intents, reply.approximate_bytes,
                                    reply.oldest_version_ts, reply.newest_version_ts, status.gc_horizon),
                "leveldb_bytes": reply.leveldb_bytes,
                "space": {"gc_passes": reply.gc_passes, "gc_passes_skipped": reply.gc_passes_skipped,
                          "gc_dropped": reply.gc_dropped, "compactions": reply.compactions,
                          "compaction_max_ns": reply.compaction_max_ns},
            })
    lines = [f"tablet {tablet.id} [{printable(tablet.start) or '(start)'}, {'(end)' if tablet.end is None else printable(tablet.end)})"]
    for r in replicas:
        if "ballot" not in r:
            lines.append(f"  {r['node']}: down")
            continue
        m = r["mvcc"]
        lines += [
            f"  {r['node']}{' (leader)' if r.get('leader') else ''}: ballot {r['ballot']}, log [{r['first_index']}, {r['last_index']}], "
            f"snapshot {r['snapshot_index']}, chosen {r['chosen_index'] if r['chosen_index'] is not None else '-'}, "
            f"applied {r['applied_index']}, pending {r['pending_proposals'] if r['pending_proposals'] is not None else '-'}",
            f"     mvcc: {m['keys']} keys, {m['versions']} versions, {m['tombstones']} tombstones, {m['intents']} intents, "
            f"~{m['approximate_bytes']} bytes, oldest {m['oldest_version_ts'] or '-'}, newest {m['newest_version_ts'] or '-'}, "
            f"gc horizon {m['gc_horizon'] or '-'}; safe time {r['safe_ts'] or '-'}; LevelDB {r['leveldb_bytes']} bytes",
        ]
        if "space" in r:
            space = r["space"]
            lines.append(f"     space: {space['gc_passes']} GC passes ({space['gc_passes_skipped']} skipped: nothing to drop) "
                         f"dropped {space['gc_dropped']} versions; "
                         f"{space['compactions']} compactions, longest {space['compaction_max_ns'] / 1e6:.1f} ms")
    emit(args, {"id": tablet.id, "replicas": replicas}, lines)
    return EXIT_OK


def mvcc_record(keys, versions, tombstones, intents, approximate_bytes, oldest, newest, horizon) -> dict:
    return {
        "keys": keys, "versions": versions, "tombstones": tombstones, "intents": intents,
        "approximate_bytes": approximate_bytes, "oldest_version_ts": ts_text(oldest),
        "newest_version_ts": ts_text(newest), "gc_horizon": ts_text(horizon),
    }


# ---- inspect key KEY ----------------------------------------------------------------------

def run_key(args: argparse.Namespace) -> int:
    config = config_of(args)
    key = to_bytes(args.key, args.hex, "KEY")
    tablet = config.tablet_for_key(key)
    replicas = []
    if args.offline:
        for node_id in chosen_replicas(args, tablet):
            replica = OfflineReplica(args, config, node_id, tablet.id)
            try:
                store = replica.state.store
                versions = sorted(store.versions(key), key=lambda v: v.ts)
                intent = store.intent(key)
                replicas.append(key_record(node_id, replica.state.applied_index(), [(v.ts, v.value) for v in versions],
                                           intent.txn_id if intent else None, intent.ts if intent else None))
            finally:
                replica.close()
    else:
        replies = trio.run(functools.partial(ask_nodes, tls=client_tls(args.dir)), config, {n: api.InspectKeyRequest(tablet.id, key) for n in chosen_replicas(args, tablet)})
        for node_id in chosen_replicas(args, tablet):
            reply = replies[node_id]
            if not isinstance(reply, api.InspectKeyReply):
                replicas.append({"node": node_id, "up": False})
                continue
            replicas.append(key_record(node_id, reply.applied_index, [(v.ts, v.value) for v in reply.versions],
                                       reply.intent_txn, reply.intent_ts))
    answered = [r for r in replicas if "versions" in r]
    agree = all(r["versions"] == answered[0]["versions"] and r["intent"] == answered[0]["intent"] for r in answered)
    lines = [f"key {printable(key)} in tablet {tablet.id}: replicas {'agree' if agree else 'DIFFER (a replica may be behind; compare applied indexes)'}"]
    for r in replicas:
        if "versions" not in r:
            lines.append(f"  {r['node']}: down")
            continue
        lines.append(f"  {r['node']} (applied {r['applied_index']}): {len(r['versions'])} versions")
        for version in r["versions"]:
            lines.append(f"    {version['ts']}  {'(tombstone)' if version['value'] is None else version['value']}")
        if r["intent"]:
            lines.append(f"    intent of {r['intent']['txn_id']} at {r['intent']['ts']}")
    emit(args, {"key": printable(key), "tablet": tablet.id, "replicas": replicas, "agree": agree}, lines)
    return EXIT_OK if answered else EXIT_UNREACHABLE


def key_record(node_id: str, applied: int, versions: list, intent_txn: str | None, intent_ts: Timestamp | None) -> dict:
    return {
        "node": node_id, "applied_index": applied,
        "versions": [{"ts": str(ts), "value": None if value is None else printable(value)} for ts, value in versions],
        "intent": {"txn_id": intent_txn, "ts": str(intent_ts)} if intent_txn else None,
    }


# ---- inspect log TABLET ------------------------------------------------------------------------

def run_log(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        tablet = config.tablet(args.tablet)
    except ConfigError as error:
        raise CliError(str(error)) from None
    if args.node and args.node not in tablet.replicas:
        raise CliError(f"node {args.node} holds no replica of tablet {tablet.id} (replicas: {', '.join(tablet.replicas)})")
    if args.from_index < 1 or args.to_index < args.from_index:
        raise CliError("need 1 <= --from <= --to")
    if args.offline:
        node_id = args.node or tablet.replicas[0]
        replica = OfflineReplica(args, config, node_id, tablet.id)
        try:
            entries = [(e.index, str(e.ballot), e.command) for e in replica.persisted.entries
                       if args.from_index <= e.index <= args.to_index][:1000]
            first, last = replica.first_index, replica.last_index
        finally:
            replica.close()
    else:
        node_id = args.node or leaders_of(config, client_tls(args.dir)).get(tablet.id) or tablet.replicas[0]
        reply = trio.run(functools.partial(ask_nodes, tls=client_tls(args.dir)), config, {node_id: api.InspectLogRequest(tablet.id, args.from_index, args.to_index)})[node_id]
        if not isinstance(reply, api.InspectLogReply):
            raise CliError(f"node {node_id} did not answer (try another with --node, or --offline if it is stopped)", EXIT_UNREACHABLE)
        entries = [(e.index, e.ballot, e.command) for e in reply.entries]
        first, last = reply.first_index, reply.last_index
    records = [{"index": i, "ballot": b, "command": describe_command(c)} for i, b, c in entries]
    lines = [f"tablet {tablet.id} log on {node_id}: entries [{first}, {last}]"]
    lines += [f"  {r['index']:>7}  b={r['ballot']:<8} {r['command']}" for r in records]
    emit(args, {"tablet": tablet.id, "node": node_id, "first_index": first, "last_index": last, "entries": records}, lines)
    return EXIT_OK


def leaders_of(config: ClusterConfig, tls: ClientTls | None) -> dict[str, str | None]:
    return {tablet: serving for tablet, (serving, _) in tablet_leaders(config, trio.run(gather, config, tls)).items()}


# ---- inspect node ID -----------------------------------------------------------------------------

def run_node(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        config.node(args.id)
    except ConfigError as error:
        raise CliError(str(error)) from None
    if args.offline:
        raise CliError("inspect node shows a running node's clocks; there is nothing to read offline (use inspect tablet --offline)")
    reply = trio.run(functools.partial(ask_nodes, tls=client_tls(args.dir)), config, {args.id: api.SkewRequest(api.SkewAction.SHOW, None, None, None, None)})[args.id]
    if not isinstance(reply, api.NodeClockReply):
        raise CliError(f"node {args.id} does not answer", EXIT_UNREACHABLE)
    record = {
        "id": reply.node_id, "hlc_now": str(reply.hlc_now), "physical_ns": reply.physical_ns,
        "injected_offset_ns": reply.offset_ns, "injected_drift_ppm": reply.drift_ppm, "strobing": reply.strobing,
        "fenced": reply.fenced, "fence_reason": reply.fence_reason,
        "peers": [{"peer": p.peer, "offset_ns": p.offset_ns if p.error_ns >= 0 else None,
                   "error_ns": p.error_ns if p.error_ns >= 0 else None, "rejected_messages": p.rejected_messages}
                  for p in reply.peers],
    }
    lines = [
        f"node {reply.node_id}: hlc {reply.hlc_now}, physical {reply.physical_ns}",
        f"  injected skew: offset {format_duration_ns(reply.offset_ns)}, drift {reply.drift_ppm}ppm"
        + (", strobing" if reply.strobing else ""),
        f"  {'FENCED: ' + reply.fence_reason if reply.fenced else 'serving (' + reply.fence_reason + ')'}",
    ]
    for p in record["peers"]:
        measured = "not measured" if p["offset_ns"] is None else f"offset {format_duration_ns(p['offset_ns'])} ± {format_duration_ns(p['error_ns'])}"
        lines.append(f"  peer {p['peer']}: {measured}, {p['rejected_messages']} messages rejected (clock too far ahead)")
    emit(args, record, lines)
    return EXIT_OK
