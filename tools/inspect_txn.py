"""`chronodb inspect txn ID`: a transaction's record, participants and state on every replica.

Role: asks every node (`InspectTxnRequest`, online) or reads every stopped
node's tablets (`--offline`) and shows, per tablet and replica, whether the
transaction is prepared there (at which timestamp, with which coordinator),
the coordinator's decision record if that tablet coordinates it, and, at the
serving leader, the locks it holds or why the leader aborted it. A commit's
record is deleted `decision_retention` after every participant resolved it
(txn/tablet/forgetting.py): no record is then all there is to show. Nor does a
transaction aborted before anything was prepared have one (a refused commit logs no decision).
"""

from __future__ import annotations

import argparse

import trio

from tools.status import ask_nodes
from txn import api
from txn.node.admin import txn_on_tablet


def add_parser(what: argparse._SubParsersAction, common) -> None:
    sub = what.add_parser("txn", help="a transaction: its decision record, participants and state on each replica")
    sub.add_argument("txn_id", metavar="ID")
    common(sub, node_flag=False)
    sub.set_defaults(func=run_txn)


def run_txn(args: argparse.Namespace) -> int:
    from tools.inspector import EXIT_OK, OfflineReplica, config_of, emit, ts_text  # the inspector's own helpers

    config = config_of(args)
    rows: list[dict] = []
    if args.offline:
        for tablet in config.tablets:
            for node_id in tablet.replicas:
                replica = OfflineReplica(args, config, node_id, tablet.id)
                try:
                    rows.append(record(node_id, txn_on_tablet(tablet.id, replica.state.txns, args.txn_id, False), ts_text))
                finally:
                    replica.close()
    else:
        replies = trio.run(ask_nodes, config, {n.id: api.InspectTxnRequest(args.txn_id) for n in config.nodes})
        for node in config.nodes:
            reply = replies.get(node.id)
            if not isinstance(reply, api.InspectTxnReply):
                rows.append({"node": node.id, "up": False})
                continue
            rows.extend(record(node.id, info, ts_text) for info in reply.tablets)
    decision = next((r for r in rows if r.get("decision")), None)
    participants = sorted({r["tablet"] for r in rows if r.get("prepared_ts") or r.get("decision")})
    summary = {
        "txn": args.txn_id,
        "decision": decision["decision"] if decision else None,
        "commit_ts": decision["commit_ts"] if decision else None,
        "coordinator": decision["tablet"] if decision else next((r["coordinator"] for r in rows if r.get("coordinator")), None),
        "participants_prepared": participants,
        "replicas": rows,
    }
    lines = [f"transaction {args.txn_id}: "
             + (f"{summary['decision']}" + (f" at {summary['commit_ts']}" if summary["commit_ts"] else "") if decision
                else "no decision recorded: not decided (yet), aborted before anything was prepared (a refused "
                "commit logs no decision), or committed and forgotten once every participant resolved it (after "
                "the cluster's decision_retention); abort records are kept")
             + (f", coordinator {summary['coordinator']}" if summary["coordinator"] else "")]
    for row in rows:
        if not row.get("up", True):
            lines.append(f"  {row['node']:<4} down")
            continue
        state = []
        if row["prepared_ts"]:
            state.append(f"prepared at {row['prepared_ts']} ({row['writes']} writes)")
        if row["decision"]:
            own = f" ({row['writes']} writes)" if row["writes"] and not row["prepared_ts"] else ""
            state.append(f"decision {row['decision']}{own}")
        if row["locked_keys"] or row["locked_ranges"]:
            state.append(f"holds {row['locked_keys']} key and {row['locked_ranges']} range locks")
        if row["aborted_reason"]:
            state.append(f"aborted here: {row['aborted_reason']}")
        if state or row["serving"]:
            lines.append(f"  {row['tablet']:<4} {row['node']:<4}{' leader' if row['serving'] else '       '}  "
                         + ("; ".join(state) or "nothing"))
    emit(args, summary, lines)
    return EXIT_OK


def record(node_id: str, info: api.TxnOnTablet, ts_text) -> dict:
    return {
        "node": node_id, "up": True, "tablet": info.tablet_id, "serving": info.serving,
        "prepared_ts": ts_text(info.prepared_ts), "coordinator": info.coordinator, "writes": info.writes,
        "decision": info.decision, "commit_ts": ts_text(info.commit_ts), "locked_keys": info.locked_keys,
        "locked_ranges": info.locked_ranges, "aborted_reason": info.aborted_reason,
    }
