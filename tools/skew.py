"""`chronodb skew`: inject clock skew into running nodes (Jepsen's vocabulary).

Role: sends `SkewRequest`s to a node's admin interface, which drives that
node's `SkewedClock` while it keeps serving. The node's hybrid logical clock
never goes backwards (a clock moved back only slows the HLC's wall part), so
skew never loses data; skew beyond the cluster's max_offset makes the node
fence itself (hlc/offsets.py) until the skew is cleared.

Injected skew is not persisted: a restarted node starts with a clean clock.
"""

from __future__ import annotations

import argparse
import json

import trio

from hlc import format_duration_ns, parse_duration_ns
from tools.errors import EXIT_OK, EXIT_UNREACHABLE, CliError
from tools.common import DEFAULT_DIR
from tools.status import ask_nodes, client_tls
from txn.net.tls import ClientTls
from txn import api
from txn.node.config import ClusterConfig, ConfigError, load_config

TIMEOUT_S = 2.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "skew", help="inject clock skew into running nodes, or show it",
        description="Change the physical clock of a running node (its SkewedClock) through an admin "
        "request. Durations accept ns, us, ms and s; write negative ones as --offset=-20ms. Injected skew "
        "is NOT persisted: a restarted node starts with a clean clock. Skew never moves a node's hybrid "
        "logical clock backwards and never loses data; beyond 80%% of max_offset the node fences itself "
        "(stops serving) until its clock is back within bounds.",
        epilog="examples: chronodb skew n2 --offset 5ms | chronodb skew n2 --bump 50ms | "
        "chronodb skew n3 --strobe 30ms --period 200ms --for 5s | chronodb skew --show | chronodb skew --reset",
    )
    parser.add_argument("node", nargs="?", help="node id (not with --show or --reset)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--offset", metavar="DUR", help="set the injected offset (replaces the previous one)")
    action.add_argument("--clear", action="store_true", help="remove injected offset, drift and any strobe")
    action.add_argument("--bump", metavar="DUR", help="a one-off jump of the clock by DUR")
    action.add_argument("--strobe", metavar="DUR", help="flip the clock between +DUR and its offset every --period for --for")
    action.add_argument("--show", action="store_true", help="each node's injected skew, measured peer offsets and fencing")
    action.add_argument("--reset", action="store_true", help="clear the skew of every node")
    parser.add_argument("--drift", metavar="PPM", type=int, help="with --offset: also set a drift in parts per million")
    parser.add_argument("--period", metavar="DUR", help="with --strobe: how long each side lasts")
    parser.add_argument("--for", dest="duration", metavar="DUR", help="with --strobe: for how long")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def duration(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration_ns(text)
    except ValueError as error:
        raise CliError(f"bad {flag}: {error}") from None


def build_request(args: argparse.Namespace) -> api.SkewRequest:
    if args.clear or args.reset:
        return api.SkewRequest(api.SkewAction.CLEAR, None, None, None, None)
    if args.show:
        return api.SkewRequest(api.SkewAction.SHOW, None, None, None, None)
    if args.bump is not None:
        return api.SkewRequest(api.SkewAction.BUMP, duration(args.bump, "--bump"), None, None, None)
    if args.strobe is not None:
        period, length = duration(args.period, "--period"), duration(args.duration, "--for")
        if not period or not length or period <= 0 or length <= 0:
            raise CliError("--strobe needs a positive --period and --for")
        return api.SkewRequest(api.SkewAction.STROBE, duration(args.strobe, "--strobe"), None, period, length)
    return api.SkewRequest(api.SkewAction.SET, duration(args.offset, "--offset"), args.drift, None, None)


async def ask(config: ClusterConfig, node_ids: list[str], request: api.SkewRequest,
              tls: ClientTls | None = None) -> dict[str, api.NodeClockReply | str]:
    replies = await ask_nodes(config, {node_id: request for node_id in node_ids}, TIMEOUT_S, tls=tls)
    return {n: r if isinstance(r, api.NodeClockReply) else ("unreachable" if r is None else str(r)) for n, r in replies.items()}


def as_json(reply: api.NodeClockReply) -> dict:
    return {
        "id": reply.node_id, "offset_ns": reply.offset_ns, "drift_ppm": reply.drift_ppm, "fenced": reply.fenced,
        "fence_reason": reply.fence_reason, "strobing": reply.strobing,
        "peer_offsets_ns": {p.peer: p.offset_ns for p in reply.peers if p.error_ns >= 0},
        "peer_offset_errors_ns": {p.peer: p.error_ns for p in reply.peers if p.error_ns >= 0},
        "rejected_messages": {p.peer: p.rejected_messages for p in reply.peers},
    }


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.dir)
    except ConfigError as error:
        raise CliError(str(error)) from None
    if args.show or args.reset:
        if args.node:
            raise CliError("--show and --reset act on every node; do not name one")
        node_ids = [n.id for n in config.nodes]
    else:
        if not args.node:
            raise CliError("name the node to skew (or use --show / --reset)")
        try:
            config.node(args.node)
        except ConfigError as error:
            raise CliError(str(error)) from None
        node_ids = [args.node]
    if args.drift is not None and args.offset is None:
        raise CliError("--drift goes with --offset (use --offset 0 --drift PPM for drift alone)")
    request = build_request(args)
    answers = trio.run(ask, config, node_ids, request, client_tls(args.dir))
    failures = {n: a for n, a in answers.items() if not isinstance(a, api.NodeClockReply)}
    if args.json:
        print(json.dumps({"nodes": [as_json(a) if isinstance(a, api.NodeClockReply) else {"id": n, "error": a}
                                    for n, a in answers.items()]}))
    else:
        for node_id, answer in answers.items():
            if not isinstance(answer, api.NodeClockReply):
                print(f"{node_id}: {answer}")
                continue
            peers = ", ".join(
                f"{p.peer} {format_duration_ns(p.offset_ns)}±{format_duration_ns(p.error_ns)}"
                + (f" ({p.rejected_messages} rejected)" if p.rejected_messages else "")
                for p in answer.peers if p.error_ns >= 0
            ) or "not measured yet"
            state = f"FENCED ({answer.fence_reason})" if answer.fenced else "serving"
            strobe = ", strobing" if answer.strobing else ""
            print(f"{node_id}: offset {format_duration_ns(answer.offset_ns)}, drift {answer.drift_ppm}ppm{strobe}; "
                  f"{state}; peers: {peers}")
    if failures:
        raise CliError(f"{len(failures)} node(s) did not answer: {', '.join(failures)}", EXIT_UNREACHABLE)
    return EXIT_OK
