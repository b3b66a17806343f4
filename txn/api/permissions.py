"""Who may send what: every request type's required permission, and each role's grants.

Role: the node checks each request against this table before it dispatches
it (txn/node/server.py), with the role the transport read from the
sender's certificate (txn/net/tls.py; `Role` lives in txn/net/peer_rules.py,
below this layer). Pure.

- readers read (and see the tablet map and node status);
- writers read and write, including read-write transactions; transaction
  requests count as writes except `TxnReadRequest`, `TxnScanRequest` and
  `TimestampRequest`;
- admins do what writers do, and skew clocks and inspect;
- peers (node certificates) send the node-to-node messages (Paxos, clock
  probes, transaction status and resolution), and may read and write, since
  a node already moves every tablet's data by Paxos; clients may not send
  node-to-node messages, admins included, nor may peers administer.

Invariant: every request type registered in txn/api has an entry
(tests/txn/test_permissions.py); a request type without one is refused
(`permission_problem` fails closed), so a new message cannot slip through
unchecked.
"""

from __future__ import annotations

import enum
from typing import Optional

from txn.api import admin, backup, client, metrics, peer, txn
from txn.net.peer_rules import Role


class Permission(enum.StrEnum):
    STATUS = "status"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    PEER = "peer"


REQUIRED: dict[type, Permission] = {
    client.TabletMapRequest: Permission.STATUS,
    admin.StatusRequest: Permission.STATUS,
    client.ReadRequest: Permission.READ,
    client.ScanRequest: Permission.READ,
    txn.TxnReadRequest: Permission.READ,
    txn.TxnScanRequest: Permission.READ,
    txn.TimestampRequest: Permission.READ,
    client.WriteRequest: Permission.WRITE,
    txn.PrepareRequest: Permission.WRITE,
    txn.CommitRequest: Permission.WRITE,
    txn.OnePhaseCommitRequest: Permission.WRITE,
    txn.AbortRequest: Permission.WRITE,
    admin.SkewRequest: Permission.ADMIN,
    admin.InspectKeyRequest: Permission.ADMIN,
    admin.InspectTabletRequest: Permission.ADMIN,
    admin.InspectLogRequest: Permission.ADMIN,
    admin.InspectTxnRequest: Permission.ADMIN,
    admin.FaultRequest: Permission.ADMIN,
    admin.RepairRequest: Permission.ADMIN,
    backup.ExportRequest: Permission.ADMIN,
    metrics.DurabilityRequest: Permission.STATUS,
    peer.PaxosEnvelope: Permission.PEER,
    peer.ClockProbe: Permission.PEER,
    txn.TxnStatusRequest: Permission.PEER,
    txn.ResolveRequest: Permission.PEER,
}

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.READER: frozenset({Permission.STATUS, Permission.READ}),
    Role.WRITER: frozenset({Permission.STATUS, Permission.READ, Permission.WRITE}),
    Role.ADMIN: frozenset({Permission.STATUS, Permission.READ, Permission.WRITE, Permission.ADMIN}),
    Role.PEER: frozenset({Permission.STATUS, Permission.READ, Permission.WRITE, Permission.PEER}),
}


def permission_problem(role: Optional[Role], msg: object) -> Optional[str]:
    """None if `role` may send `msg`; else the one-line reason it may not."""
    required = REQUIRED.get(type(msg))
    name = type(msg).__name__
    if required is None:
        return f"{name} is not an allowed request"
    if role is None:
        return f"{name} needs the {required.value} permission and the sender has no role"
    if required not in GRANTS[role]:
        return f"{name} needs the {required.value} permission, which the {role.value} role does not have"
    return None
