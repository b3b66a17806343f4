"""`chronodb fault`: network partitions injected into running nodes.

Role: sends the admin `FaultRequest` (txn/api/admin.py) that makes a node's
transport drop every frame to and/or from chosen peers until cleared: a real
fault as far as the other nodes can tell (no message, no error, only
silence). `chronodb verify --nemesis partition` uses the same request. Not
persisted: a restarted node drops nothing.

    chronodb fault partition n1 --from n2,n3            # n1 and {n2,n3} cannot talk (both nodes told)
    chronodb fault partition n1 --from n2 --one-way     # n1 hears nothing from n2; n1 -> n2 still flows
    chronodb fault partition --clear                    # every node drops nothing
    chronodb fault show [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import trio

from tools.common import DEFAULT_DIR
from tools.errors import EXIT_OK, EXIT_UNREACHABLE, CliError
from tools.status import ask_node, ask_nodes
from txn import api
from txn.node.config import ClusterConfig, ConfigError, load_config

TIMEOUT_S = 2.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fault", help="inject network partitions into running nodes (their transports drop traffic)",
        description="Make running nodes' transports drop all traffic to and from chosen peers until cleared. "
        "Both ways by default: the node and each peer named are told, so neither hears the other. "
        "Client connections are never blocked. Not persisted.",
    )
    parser.add_argument("action", choices=("partition", "show"))
    parser.add_argument("node", nargs="?", help="the node to isolate (partition)")
    parser.add_argument("--from", dest="peers", metavar="PEERS", help="comma-separated peers to cut NODE off from")
    parser.add_argument("--one-way", action="store_true", help="only NODE stops hearing PEERS; NODE -> PEERS still flows")
    parser.add_argument("--clear", action="store_true", help="heal: every node drops nothing")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def partition_requests(node: str, peers: list[str], one_way: bool) -> dict[str, list[api.FaultRequest]]:
    """node id -> the requests that cut `node` off from `peers` (one way: node stops hearing them)."""
    requests: dict[str, list[api.FaultRequest]] = {node: [api.FaultRequest(api.FaultAction.BLOCK, peers, True, not one_way)]}
    if not one_way:
        for peer in peers:
            requests.setdefault(peer, []).append(api.FaultRequest(api.FaultAction.BLOCK, (node,), True, True))
    return requests


async def apply_partition(config: ClusterConfig, node: str, peers: list[str], one_way: bool) -> dict[str, Any]:
    replies: dict[str, Any] = {}
    for target, requests in partition_requests(node, peers, one_way).items():
        for request in requests:
            replies[target] = await ask_node(config, target, request, TIMEOUT_S)
    return replies


async def clear_all(config: ClusterConfig) -> dict[str, Any]:
    return await ask_nodes(config, {n.id: api.FaultRequest(api.FaultAction.CLEAR) for n in config.nodes}, TIMEOUT_S)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.dir)
    except ConfigError as error:
        raise CliError(str(error)) from None
    ids = [n.id for n in config.nodes]
    if args.action == "show":
        replies = trio.run(ask_nodes, config, {n: api.FaultRequest(api.FaultAction.SHOW) for n in ids}, TIMEOUT_S)
    elif args.clear:
        replies = trio.run(clear_all, config)
    else:
        if args.node not in ids or not args.peers:
            raise CliError(f"partition needs NODE (one of {', '.join(ids)}) and --from PEERS, or --clear")
        peers = [p for p in args.peers.split(",") if p]
        bad = [p for p in peers if p not in ids or p == args.node]
        if bad:
            raise CliError(f"--from: {', '.join(bad)} are not other nodes of this cluster")
        replies = trio.run(apply_partition, config, args.node, peers, args.one_way)
    rows = []
    for node_id, reply in sorted(replies.items()):
        if isinstance(reply, api.FaultReply):
            rows.append({"node": node_id, "blocked_incoming": list(reply.blocked_incoming),
                         "blocked_outgoing": list(reply.blocked_outgoing), "dropped_frames": reply.dropped_frames})
        else:
            rows.append({"node": node_id, "error": getattr(reply, "message", "no answer")})
    if args.json:
        print(json.dumps({"nodes": rows}))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['node']}: {row['error']}")
            else:
                print(f"{row['node']}: drops from [{','.join(row['blocked_incoming'])}] "
                      f"to [{','.join(row['blocked_outgoing'])}], {row['dropped_frames']} frames dropped")
    return EXIT_OK if all("error" not in row for row in rows) else EXIT_UNREACHABLE
