"""`chronodb status`: is the cluster serving? Who leads each tablet?

Role: asks every node (admin `StatusRequest`, short deadline) and prints each
node's address, metrics endpoint (cluster.toml's `metrics_port`) and whether
it answers, and each tablet's range, replicas, serving leader and lease
holder. Exit 0 only when every tablet has a lease-holding leader that serves;
else 1, so scripts can wait on it.
`--json` prints `{"nodes": [{"id", "address", "metrics", "up"}], "tablets": [{"id",
"start", "end", "replicas", "leader", "lease_holder", "durable_index",
"durable_ts", "distributed_commits", "not_durable_commits",
"replica_indexes": [{"node", "chosen_index", "applied_index",
"durable_index", "durable_ts", "distributed_commits",
"not_durable_commits"}]}], "rebuilding": [{"node", "tablet", "reason"}],
"healthy"}` with keys as printable text (`rebuilding`: replicas rebuilding
from their peers, txn/node/rebuild.py; also printed as one line each);
`"metrics"` is `"host:port"` of the node's `/metrics`, null without a metrics port.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import trio

from tools.errors import EXIT_NEGATIVE, EXIT_OK, CliError
from tools.common import DEFAULT_DIR, printable
from txn import api
from txn.node.config import ClusterConfig, ConfigError, NodeConfig, load_config
from txn.net.client_connection import open_client_connection
from txn.net.messaging import TransportError
from hlc import HybridClock
from hlc.physical import SystemClock
from txn.net.tls import DEFAULT_CLIENT, CertError, ClientTls, client_tls_for_dir, is_insecure

NODE_TIMEOUT_S = 1.5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="show nodes and tablet leaders; exit 0 when every tablet has a leader",
        description="Ask every node of DIR/cluster.toml for its state; show each node's address and "
        "metrics endpoint (HTTP GET /metrics). Exit 0 only when every tablet "
        "has a lease-holding, serving leader; otherwise 1 (scripts can wait on it).",
    )
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


AUTO: Any = object()  # "the client certificate of the config's own data directory"


def tls_for_config(config: ClusterConfig, user: str = DEFAULT_CLIENT) -> ClientTls | None:
    """The client TLS of the directory `config` was loaded from (None: --insecure, or a config built in code)."""
    return client_tls(config.source_dir, user) if config.source_dir else None


def client_tls(data_dir: str, user: str = DEFAULT_CLIENT) -> ClientTls | None:
    """DIR's client certificate for the observer tools (None when DIR runs --insecure)."""
    try:
        return client_tls_for_dir(data_dir, user)
    except CertError as error:
        raise CliError(str(error)) from None


async def ask_node(config: ClusterConfig, node_id: str, request: Any, timeout_s: float = NODE_TIMEOUT_S, *,
                   tls: ClientTls | None = AUTO) -> Any:
    """One admin request to one node: its reply, or None if it does not answer in time.

    `tls` is the client certificate (`client_tls(dir)`); None speaks plain TCP (--insecure);
    by default, the certificate of the directory the config came from."""
    if tls is AUTO:
        tls = tls_for_config(config)
    host, port = config.node(node_id).address
    clock = HybridClock(SystemClock(), config.max_offset_ns)
    reply = None
    with trio.move_on_after(timeout_s * 2):
        try:
            async with open_client_connection(host, port, cluster_id=config.cluster_id, clock=clock, timeout_s=timeout_s,
                                              tls=tls) as conn:
                try:
                    reply = await conn.call(request, timeout_s=timeout_s)
                except (TransportError, OSError):
                    pass
        except (TransportError, OSError):
            pass
    return reply


async def ask_nodes(config: ClusterConfig, requests: dict[str, Any], timeout_s: float = NODE_TIMEOUT_S, *,
                    tls: ClientTls | None = AUTO) -> dict[str, Any]:
    """node id -> reply (None for a node that did not answer), asked concurrently."""
    replies: dict[str, Any] = {}

    async def one(node_id: str, request: Any) -> None:
        replies[node_id] = await ask_node(config, node_id, request, timeout_s, tls=tls)

    async with trio.open_nursery() as nursery:
        for node_id, request in requests.items():
            nursery.start_soon(one, node_id, request)
    return {node_id: replies.get(node_id) for node_id in requests}


async def gather(config: ClusterConfig, tls: ClientTls | None = AUTO) -> dict[str, api.NodeStatusReply | None]:
    """Each node's status reply, or None when it does not answer in time."""
    replies = await ask_nodes(config, {node.id: api.StatusRequest() for node in config.nodes}, tls=tls)
    return {n: r if isinstance(r, api.NodeStatusReply) else None for n, r in replies.items()}


async def gather_durability(config: ClusterConfig, tls: ClientTls | None = AUTO) -> dict[str, api.DurabilityReply | None]:
    """Each node's durable watermarks and commit counters (txn/api/metrics.py), or None."""
    replies = await ask_nodes(config, {node.id: api.DurabilityRequest() for node in config.nodes}, tls=tls)
    return {n: r if isinstance(r, api.DurabilityReply) else None for n, r in replies.items()}


def durability_records(config: ClusterConfig, replies: dict[str, api.DurabilityReply | None]) -> dict[str, dict[str, Any]]:
    """tablet id -> {"durable_index", "durable_ts", "distributed_commits", "not_durable_commits", "replicas": [...]}:
    the watermark is the highest any replica knows; counters add up over the replicas that led."""
    records: dict[str, dict[str, Any]] = {}
    for tablet in config.tablets:
        replicas = []
        for node_id in tablet.replicas:
            reply = replies.get(node_id)
            found = next((d for d in reply.tablets if d.tablet_id == tablet.id), None) if reply else None
            if found is not None:
                replicas.append({"node": node_id, "chosen_index": found.chosen_index, "applied_index": found.applied_index,
                                 "durable_index": found.durable_index,
                                 "durable_ts": None if found.durable_ts is None else str(found.durable_ts),
                                 "distributed_commits": found.distributed_commits,
                                 "not_durable_commits": found.not_durable_commits})
        best = max(replicas, key=lambda r: r["durable_index"], default=None)
        records[tablet.id] = {
            "durable_index": None if best is None else best["durable_index"],
            "durable_ts": None if best is None else best["durable_ts"],
            "distributed_commits": sum(r["distributed_commits"] for r in replicas),
            "not_durable_commits": sum(r["not_durable_commits"] for r in replicas),
            "replicas": replicas,
        }
    return records


def tablet_leaders(config: ClusterConfig, replies: dict[str, api.NodeStatusReply | None]) -> dict[str, tuple[str | None, str | None]]:
    """tablet id -> (serving leader, lease holder), from the nodes that answered."""
    leaders: dict[str, tuple[str | None, str | None]] = {}
    for tablet in config.tablets:
        serving = holder = None
        for node_id in tablet.replicas:
            reply = replies.get(node_id)
            if reply is None:
                continue
            for status in reply.tablets:
                if status.id == tablet.id and status.lease_holder:
                    holder = node_id
                    if status.serving:
                        serving = node_id
        leaders[tablet.id] = (serving, holder)
    return leaders


def metrics_text(node: NodeConfig, none: str | None) -> str | None:
    """The node's metrics endpoint as host:port; `none` when it has no metrics port."""
    return none if node.metrics_port is None else f"{node.host}:{node.metrics_port}"


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.dir)
    except ConfigError as error:
        raise CliError(str(error)) from None
    insecure = is_insecure(args.dir)
    replies = trio.run(gather, config, client_tls(args.dir))
    durability = durability_records(config, trio.run(gather_durability, config, client_tls(args.dir)))
    leaders = tablet_leaders(config, replies)
    healthy = all(serving is not None for serving, _ in leaders.values())
    rebuilding = [{"node": node_id, "tablet": t.id, "reason": t.rebuilding}
                  for node_id, reply in sorted(replies.items()) if reply is not None for t in reply.tablets if t.rebuilding]
    if args.json:
        print(json.dumps({
            "nodes": [{"id": n.id, "address": f"{n.host}:{n.port}", "metrics": metrics_text(n, None),
                       "up": replies[n.id] is not None} for n in config.nodes],
            "tablets": [
                {"id": t.id, "start": printable(t.start), "end": None if t.end is None else printable(t.end),
                 "replicas": list(t.replicas), "leader": leaders[t.id][0], "lease_holder": leaders[t.id][1],
                 "durable_index": durability[t.id]["durable_index"], "durable_ts": durability[t.id]["durable_ts"],
                 "distributed_commits": durability[t.id]["distributed_commits"],
                 "not_durable_commits": durability[t.id]["not_durable_commits"],
                 "replica_indexes": durability[t.id]["replicas"]}
                for t in config.tablets
            ],
            "rebuilding": rebuilding,
            "healthy": healthy,
            "insecure": insecure,
        }))
        return EXIT_OK if healthy else EXIT_NEGATIVE
    print(f"cluster {config.cluster_id}")
    if insecure:
        print("WARNING: INSECURE cluster (--insecure): no TLS, no authentication, every client is an admin")
    else:
        print("security: mutual TLS, certificates in " + str(pathlib.Path(args.dir) / "certs"))
    print(f"{'NODE':<6} {'ADDRESS':<22} {'METRICS':<22} UP")
    for node in config.nodes:
        print(f"{node.id:<6} {node.host + ':' + str(node.port):<22} {metrics_text(node, '-'):<22} "
              f"{'yes' if replies[node.id] else 'no'}")
    print(f"{'TABLET':<7} {'START':<10} {'END':<10} {'REPLICAS':<16} {'LEADER':<7} {'LEASE':<7} DURABLE")
    for tablet in config.tablets:
        serving, holder = leaders[tablet.id]
        end = "(end)" if tablet.end is None else printable(tablet.end)
        durable = durability[tablet.id]
        durable_text = "-" if durable["durable_index"] is None else f"{durable['durable_index']} @ {durable['durable_ts'] or '-'}"
        print(f"{tablet.id:<7} {printable(tablet.start) or '(start)':<10} {end:<10} {','.join(tablet.replicas):<16} "
              f"{serving or '-':<7} {holder or '-':<7} {durable_text}")
    for row in rebuilding:
        print(f"rebuilding: {row['node']}/{row['tablet']} learns the tablet again from its peers and does not vote yet "
              f"({row['reason']})")
    print("healthy: every tablet has a serving leader" if healthy else "not healthy: some tablet has no serving leader")
    return EXIT_OK if healthy else EXIT_NEGATIVE
