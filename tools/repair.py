"""`chronodb repair`: rebuild one node's replica of one tablet from its peers.

Role: sends the admin `RepairRequest` (txn/api/admin.py) and follows the
rebuild through the node's status until the replica votes again. The node
does the work (txn/node/rebuild.py): the replica stops, its store is set
aside whole as `<tablet dir>.corrupt-<UTC time>` (never deleted), a fresh
store learns the tablet again from the others (log or snapshot) and votes
for nothing until fenced (paxos/replica.py, "Rebuilding"). A node does the
same by itself when it finds a tablet's store corrupt, at start-up or on a
read; this command is for a replica an operator no longer trusts.

    chronodb repair --node n2 --tablet t1            # rebuild, wait until it votes again (60 s)
    chronodb repair --node n2 --tablet t1 --wait 0   # ask, do not wait

Exit codes: 0 rebuilt (or asked, with --wait 0); 1 still rebuilding when
the wait ran out (it goes on: see `chronodb status`); 2 bad usage, an
unknown node or tablet, or a refusal (already rebuilding); 3 the node did
not answer.
"""

from __future__ import annotations

import argparse
import json

import trio

from tools.common import DEFAULT_DIR
from tools.errors import EXIT_NEGATIVE, EXIT_OK, EXIT_UNREACHABLE, CliError
from tools.status import ask_node
from txn import api
from txn.node.config import ClusterConfig, ConfigError, load_config

TIMEOUT_S = 5.0
POLL_S = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "repair", help="rebuild one node's replica of a tablet from its peers (admin)",
        description="Rebuild NODE's replica of TABLET from the other replicas: its store is set aside as "
        "<tablet dir>.corrupt-<time> (kept, never deleted), a fresh store learns the tablet again, and it "
        "votes in Paxos again only once fenced (it may have lost promises). The other replicas keep serving. "
        "Nodes do this by themselves for a store they find corrupt. Needs an admin certificate.",
    )
    parser.add_argument("--node", required=True, help="the node whose replica is rebuilt")
    parser.add_argument("--tablet", required=True, help="the tablet id (see `chronodb status`)")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="wait up to SECONDS for the replica to vote again (default 60; 0: do not wait)")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def _tablet_status(reply: object, tablet_id: str) -> api.TabletStatus | None:
    if not isinstance(reply, api.NodeStatusReply):
        return None
    return next((t for t in reply.tablets if t.id == tablet_id), None)


async def repair(config: ClusterConfig, node_id: str, tablet_id: str, wait_s: float) -> dict[str, object]:
    reply = await ask_node(config, node_id, api.RepairRequest(tablet_id), TIMEOUT_S)
    if reply is None:
        raise CliError(f"node {node_id} did not answer", EXIT_UNREACHABLE)
    if isinstance(reply, api.ErrorReply):
        raise CliError(f"{node_id}: {reply.message}")
    assert isinstance(reply, api.RepairReply), reply
    result: dict[str, object] = {"node": node_id, "tablet": tablet_id, "message": reply.message, "rebuilt": False}
    if wait_s <= 0:
        return result
    seen_rebuilding = False
    with trio.move_on_after(wait_s):
        while True:
            await trio.sleep(POLL_S)
            status = _tablet_status(await ask_node(config, node_id, api.StatusRequest(), TIMEOUT_S), tablet_id)
            if status is None:
                continue  # between replicas, or the node is busy: ask again
            if status.rebuilding:
                seen_rebuilding = True
                result["applied_index"] = status.applied_index
                continue
            if seen_rebuilding or status.applied_index > 0:
                result.update(rebuilt=True, applied_index=status.applied_index, chosen_index=status.chosen_index)
                return result
    return result


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.dir)
    except ConfigError as error:
        raise CliError(str(error)) from None
    if args.node not in {n.id for n in config.nodes}:
        raise CliError(f"--node {args.node}: not a node of this cluster ({', '.join(n.id for n in config.nodes)})")
    tablet = next((t for t in config.tablets if t.id == args.tablet), None)
    if tablet is None:
        raise CliError(f"--tablet {args.tablet}: no such tablet ({', '.join(t.id for t in config.tablets)})")
    if args.node not in tablet.replicas:
        raise CliError(f"node {args.node} holds no replica of tablet {args.tablet} (replicas: {', '.join(tablet.replicas)})")
    if args.wait < 0:
        raise CliError("--wait must be 0 or more seconds")
    result = trio.run(repair, config, args.node, args.tablet, args.wait)
    if args.json:
        print(json.dumps(result))
    elif args.wait <= 0:
        print(result["message"])
    elif result["rebuilt"]:
        print(f"{args.node}/{args.tablet}: rebuilt from its peers; votes again (applied index {result['applied_index']})")
    else:
        print(f"{args.node}/{args.tablet}: still rebuilding after {args.wait:g} s "
              f"(applied index {result.get('applied_index', 0)}); it goes on: see `chronodb status`")
    return EXIT_OK if result["rebuilt"] or args.wait <= 0 else EXIT_NEGATIVE
