"""`chronodb cert`: the cluster CA and the node and client certificates, for multi-host deployments.

Role: what `chronodb up` does by itself on one host, step by step, in the
convention of `cockroach cert`: make the CA once, then a certificate per
node (naming its id and host) and per client (naming its role), all under
`--certs-dir` (default DIR/certs; files in txn/net/tls.py). Copy ca.crt and
a node's node.<id>.crt/.key to that node's host; ca.crt and a client's
files to the client's. ca.key (mode 0600) never needs to leave the host
that signs.

    chronodb cert create-ca
    chronodb cert create-node n1 --host 10.0.0.1
    chronodb cert create-client alice --role writer
    chronodb cert list

An existing file is never overwritten: one line and exit 2.
"""

from __future__ import annotations

import argparse
import pathlib

from tools.common import DEFAULT_DIR
from tools.errors import EXIT_OK, CliError
from txn.net.peer_rules import Role
from txn.net.tls import CLIENT_ROLES, CertError, certs_dir, create_ca, create_client_cert, create_node_cert, identity_of


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cert", help="make the cluster CA, node and client certificates",
        description="Make TLS certificates under --certs-dir (default DIR/certs). `chronodb up` makes them "
        "itself on one host; use this for nodes and clients on other hosts.",
    )
    commands = parser.add_subparsers(dest="cert_command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
        sub.add_argument("--certs-dir", default=None, help="where the certificates are (default DIR/certs)")

    ca = commands.add_parser("create-ca", help="the cluster CA: ca.crt and ca.key (0600)")
    common(ca)
    ca.set_defaults(func=run_create_ca)
    node = commands.add_parser("create-node", help="node.ID.crt/.key, signed by the CA")
    node.add_argument("id", help="node id as in cluster.toml, e.g. n1")
    node.add_argument("--host", action="append", required=True,
                      help="the node's address (IP or DNS name) as in cluster.toml; repeat for more")
    common(node)
    node.set_defaults(func=run_create_node)
    client = commands.add_parser("create-client", help="client.NAME.crt/.key, signed by the CA")
    client.add_argument("name", help="client name, e.g. root or alice")
    client.add_argument("--role", default="admin", choices=[r.value for r in CLIENT_ROLES],
                        help="reader: reads; writer: reads and writes; admin: also skew and inspect (default admin)")
    common(client)
    client.set_defaults(func=run_create_client)
    listing = commands.add_parser("list", help="the certificates and who each names")
    common(listing)
    listing.set_defaults(func=run_list)


def _certs(args: argparse.Namespace) -> pathlib.Path:
    return pathlib.Path(args.certs_dir) if args.certs_dir else certs_dir(args.dir)


def run_create_ca(args: argparse.Namespace) -> int:
    try:
        print(f"created {create_ca(_certs(args))} and its key ca.key (mode 0600)")
    except CertError as error:
        raise CliError(str(error)) from None
    return EXIT_OK


def run_create_node(args: argparse.Namespace) -> int:
    try:
        print(f"created {create_node_cert(_certs(args), args.id, args.host)} (node {args.id}, hosts {', '.join(args.host)})")
    except CertError as error:
        raise CliError(str(error)) from None
    return EXIT_OK


def run_create_client(args: argparse.Namespace) -> int:
    try:
        print(f"created {create_client_cert(_certs(args), args.name, Role(args.role))} (client {args.name}, role {args.role})")
    except CertError as error:
        raise CliError(str(error)) from None
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    import ssl

    certs = _certs(args)
    if not certs.is_dir():
        raise CliError(f"no certificates in {certs}")
    for path in sorted(certs.glob("*.crt")):
        try:
            decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
        except (ssl.SSLError, OSError) as error:
            print(f"{path.name}\tunreadable: {error}")
            continue
        who = identity_of(decoded)
        print(f"{path.name}\t{who if who is not None else 'CA' if path.name == 'ca.crt' else 'names nobody'}"
              f"\tvalid until {decoded.get('notAfter')}")
    return EXIT_OK
