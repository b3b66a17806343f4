"""Roles against request types (txn/api/permissions.py) and certificate identities (txn/net/tls.py)."""

from __future__ import annotations

import attrs
import pytest

from txn import api
from txn.api.permissions import GRANTS, REQUIRED, Permission, permission_problem
from txn.net.peer_rules import Identity, Role, check_identity
from txn.net.tls import identity_of
from txn.wire import codec


def request_types() -> list[type]:
    """Every registered api class whose name says it is a request, plus the one-way PaxosEnvelope."""
    classes = [cls for cls in vars(api).values() if isinstance(cls, type) and attrs.has(cls)]
    return [cls for cls in classes if cls.__name__.endswith("Request") or cls in (api.PaxosEnvelope, api.ClockProbe)]


def test_every_request_type_has_a_required_permission() -> None:
    missing = [cls.__name__ for cls in request_types() if cls not in REQUIRED]
    assert not missing, f"classify these in txn/api/permissions.py REQUIRED: {missing}"


@pytest.mark.parametrize("role, allowed", [
    (Role.READER, {Permission.STATUS, Permission.READ}),
    (Role.WRITER, {Permission.STATUS, Permission.READ, Permission.WRITE}),
    (Role.ADMIN, {Permission.STATUS, Permission.READ, Permission.WRITE, Permission.ADMIN}),
    (Role.PEER, {Permission.STATUS, Permission.READ, Permission.WRITE, Permission.PEER}),
])
def test_roles_grant_exactly(role: Role, allowed: set[Permission]) -> None:
    assert GRANTS[role] == allowed


def test_transaction_requests_split_into_reads_and_writes() -> None:
    reads = {cls.__name__ for cls, need in REQUIRED.items() if need is Permission.READ}
    assert {"TxnReadRequest", "TxnScanRequest", "TimestampRequest", "ReadRequest", "ScanRequest"} == reads
    assert REQUIRED[api.PrepareRequest] is REQUIRED[api.CommitRequest] is Permission.WRITE
    assert REQUIRED[api.SkewRequest] is REQUIRED[api.InspectKeyRequest] is Permission.ADMIN
    assert REQUIRED[api.ResolveRequest] is REQUIRED[api.TxnStatusRequest] is Permission.PEER


def test_problems_name_request_and_role() -> None:
    write = api.WriteRequest("t1", (), 1)
    assert permission_problem(Role.WRITER, write) is None
    assert permission_problem(Role.READER, write) == "WriteRequest needs the write permission, which the reader role does not have"
    assert "no role" in permission_problem(None, write)
    assert "not an allowed request" in permission_problem(Role.ADMIN, object())
    assert permission_problem(Role.ADMIN, api.PaxosEnvelope("t1", b"")) is not None  # clients never speak Paxos


def cert(uri: str, unit: str) -> dict:
    return {"subject": ((("organizationName", "chronodb"),), (("organizationalUnitName", unit),), (("commonName", "x"),)),
            "subjectAltName": (("URI", uri), ("IP Address", "127.0.0.1"))}


def test_identity_from_certificate_fields() -> None:
    assert identity_of(cert("chronodb://node/n2", "node")) == Identity("n2", Role.PEER)
    assert identity_of(cert("chronodb://client/alice", "reader")) == Identity("alice", Role.READER)
    assert identity_of(cert("chronodb://client/alice", "peer")) is None  # a client cannot name itself a peer
    assert identity_of(cert("chronodb://client/alice", "node")) is None
    assert identity_of(cert("https://example.com", "admin")) is None
    assert identity_of(None) is None and identity_of({}) is None


def test_speaker_must_match_certificate() -> None:
    assert check_identity("n1", Identity("n1", Role.PEER)) is None
    assert check_identity("client", Identity("alice", Role.WRITER)) is None
    assert "cannot speak as node 'n1'" in check_identity("n1", Identity("alice", Role.ADMIN))
    assert "not node 'n1'" in check_identity("n1", Identity("n2", Role.PEER))
    assert "not a client's" in check_identity("client", Identity("n2", Role.PEER))
    assert "names no chronodb" in check_identity("client", None)
