"""Mutual TLS for the TCP transport: the cluster CA, certificates, SSL contexts, identities.

Role: makes the certificates `chronodb up` and `chronodb cert` write under
`DIR/certs/` (the `cryptography` library: EC P-256 keys, ECDSA-SHA256), and
turns them into `ssl.SSLContext`s for the three parties: a node accepting
connections (`NodeTls.server`), a node dialing a peer (`NodeTls.dialer`),
and a client (`ClientTls.context`). Every context is TLS 1.3 only,
`CERT_REQUIRED` both ways, trusting only the cluster CA.

Files (the CockroachDB `cockroach cert` layout):

    DIR/certs/ca.crt, ca.key                 the cluster CA (ca.key mode 0600)
    DIR/certs/node.<id>.crt, node.<id>.key   one per node: CN=<id>, OU=node,
                                             SAN URI chronodb://node/<id> + the node's host (IP or DNS)
    DIR/certs/client.<name>.crt, .key        one per client: CN=<name>, OU=<role>,
                                             SAN URI chronodb://client/<name>

Identity (`identity_of(peercert)`, pure on the dict `getpeercert()`
returns): a certificate whose SAN says `chronodb://node/<id>` (and OU=node)
is node <id>, with role `peer`; one saying `chronodb://client/<name>` is a
client whose role is its OU (reader, writer or admin). Anything else is no
identity and the connection is refused. Hostname checks are off
(`check_hostname=False`): the dialer checks instead that the certificate
names the node id it meant to reach, which is what a node's address in
cluster.toml stands for (an IP SAN is still written, for other tools).

Invariants: a key file is created with mode 0600 before any byte is written
(no window where it is world-readable); an existing certificate is never
overwritten (`CertError`), so `up` on an existing DIR keeps its CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import re
import ssl
from typing import Any, Optional

import attrs

from txn.net.peer_rules import Identity, Role

CERTS_DIR_NAME = "certs"
INSECURE_MARKER = "INSECURE"  # DIR/INSECURE: this cluster was started with --insecure
DEFAULT_CLIENT = "root"
NODE_URI_PREFIX = "chronodb://node/"
CLIENT_URI_PREFIX = "chronodb://client/"
CA_DAYS = 3650
LEAF_DAYS = 1825
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CLIENT_ROLES = (Role.READER, Role.WRITER, Role.ADMIN)


class CertError(Exception):
    """A certificate cannot be made or loaded; the text says which file and why."""


def certs_dir(data_dir: str | os.PathLike[str]) -> pathlib.Path:
    return pathlib.Path(data_dir) / CERTS_DIR_NAME


def node_cert_paths(certs: pathlib.Path, node_id: str) -> tuple[pathlib.Path, pathlib.Path]:
    return certs / f"node.{node_id}.crt", certs / f"node.{node_id}.key"


def client_cert_paths(certs: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return certs / f"client.{name}.crt", certs / f"client.{name}.key"


# ---------------------------------------------------------------- identities (pure)


def identity_of(peercert: Optional[dict[str, Any]]) -> Optional[Identity]:
    """Who a verified certificate names, from `SSLObject.getpeercert()`; None if nobody."""
    if not peercert:
        return None
    uris = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]
    units = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "organizationalUnitName"]
    for uri in uris:
        if uri.startswith(NODE_URI_PREFIX) and units == ["node"]:
            return Identity(uri[len(NODE_URI_PREFIX):], Role.PEER)
        if uri.startswith(CLIENT_URI_PREFIX) and len(units) == 1 and units[0] in {r.value for r in CLIENT_ROLES}:
            return Identity(uri[len(CLIENT_URI_PREFIX):], Role(units[0]))
    return None


def tls_reason(error: BaseException) -> str:
    """The OpenSSL reason behind trio's BrokenResourceError, in words an operator can act on."""
    cause = error.__cause__ or error
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or str(cause)
        hints = {
            "CERTIFICATE_VERIFY_FAILED": "certificate not signed by this cluster's CA",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the node requires a certificate and none was sent",
            "TLSV1_ALERT_UNKNOWN_CA": "the other side does not trust our CA (certificate from another cluster)",
            "WRONG_VERSION_NUMBER": "the other side does not speak TLS (an --insecure node or client?)",
            "UNSUPPORTED_PROTOCOL": "the other side does not speak TLS 1.3",
            # The node refused our certificate and closed (its log says why): the TLS stream does not flush
            # the TLS alert before the connection closes, so all a client sees is the close.
            "UNEXPECTED_EOF_WHILE_READING": "the other side closed the connection in the TLS handshake "
                                            "(our certificate refused? signed by another cluster's CA?)",
        }
        hint = hints.get(reason)
        verify = getattr(cause, "verify_message", None)
        return f"{reason}" + (f" ({verify})" if verify else "") + (f": {hint}" if hint else "")
    if isinstance(cause, ConnectionResetError):
        # The node resets a connection whose certificate it refused (the TLS stream does not flush the alert).
        return f"{cause} (our certificate refused? signed by another cluster's CA?)"
    return str(cause) or type(cause).__name__


# ---------------------------------------------------------------- making certificates


def _x509() -> Any:
    try:
        from cryptography import x509  # imported here: only `up` and `cert` make certificates
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as error:  # pragma: no cover - a dependency in pyproject.toml
        raise CertError(f"making certificates needs the 'cryptography' package: {error}") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise CertError(f"bad {kind} name {name!r}: use letters, digits, '_', '.', '-' (at most 63)")


def _write_new(path: pathlib.Path, data: bytes, *, secret: bool) -> None:
    """Create path (refusing to overwrite), mode 0600 for secrets from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    except FileExistsError:
        raise CertError(f"{path} already exists; remove it first to replace it") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    if secret:
        os.chmod(path, 0o600)  # in case the umask was stricter than needed, keep exactly 0600


def _pem_key(key: Any) -> bytes:
    _, _, serialization, _, _, _ = _x509()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(certs: pathlib.Path) -> tuple[Any, Any]:
    x509, _, serialization, _, _, _ = _x509()
    try:
        ca_cert = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    except FileNotFoundError as error:
        raise CertError(f"no cluster CA: {error.filename} is missing (run `chronodb cert create-ca`)") from None
    except ValueError as error:
        raise CertError(f"cannot read the cluster CA in {certs}: {error}") from None
    return ca_cert, ca_key


def create_ca(certs: pathlib.Path, *, common_name: str = "chronodb cluster CA") -> pathlib.Path:
    """Write ca.crt and ca.key (0600); refuses if either exists."""
    x509, hashes, _, ec, _, NameOID = _x509()
    for path in (certs / "ca.crt", certs / "ca.key"):
        if path.exists():
            raise CertError(f"{path} already exists; remove it first to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chronodb"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_new(certs / "ca.key", _pem_key(key), secret=True)
    _write_new(certs / "ca.crt", cert.public_bytes(_x509()[2].Encoding.PEM), secret=False)
    return certs / "ca.crt"


def _issue(certs: pathlib.Path, paths: tuple[pathlib.Path, pathlib.Path], common_name: str, unit: str,
           sans: list[Any], usages: list[Any]) -> pathlib.Path:
    x509, hashes, serialization, ec, _, NameOID = _x509()
    for path in paths:
        if path.exists():
            raise CertError(f"{path} already exists; remove it first to replace it")
    ca_cert, ca_key = _load_ca(certs)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chronodb"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_new(paths[1], _pem_key(key), secret=True)
    _write_new(paths[0], cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return paths[0]


def _host_san(host: str) -> Any:
    x509 = _x509()[0]
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def create_node_cert(certs: pathlib.Path, node_id: str, hosts: list[str]) -> pathlib.Path:
    """node.<id>.crt/.key, signed by the CA in `certs`; usable as TLS server and client."""
    _check_name("node", node_id)
    x509, _, _, _, EKU, _ = _x509()
    sans = [x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id)]
    sans += [_host_san(host) for host in dict.fromkeys(hosts + ["localhost"])]
    return _issue(certs, node_cert_paths(certs, node_id), node_id, "node", sans,
                  [EKU.SERVER_AUTH, EKU.CLIENT_AUTH])


def create_client_cert(certs: pathlib.Path, name: str, role: Role = Role.ADMIN) -> pathlib.Path:
    """client.<name>.crt/.key with `role` in its OU; usable only as a TLS client."""
    _check_name("client", name)
    if role not in CLIENT_ROLES:
        raise CertError(f"a client's role is one of {', '.join(r.value for r in CLIENT_ROLES)}, not {role.value!r}")
    x509, _, _, _, EKU, _ = _x509()
    return _issue(certs, client_cert_paths(certs, name), name, role.value,
                  [x509.UniformResourceIdentifier(CLIENT_URI_PREFIX + name)], [EKU.CLIENT_AUTH])


def ensure_cluster_certs(certs: pathlib.Path, nodes: list[tuple[str, str]]) -> list[pathlib.Path]:
    """What `chronodb up` does on first use: the CA, each missing node cert, the root client. Returns what it made."""
    made = []
    if not (certs / "ca.crt").exists():
        made.append(create_ca(certs))
    for node_id, host in nodes:
        if not node_cert_paths(certs, node_id)[0].exists():
            made.append(create_node_cert(certs, node_id, [host]))
    if not client_cert_paths(certs, DEFAULT_CLIENT)[0].exists():
        made.append(create_client_cert(certs, DEFAULT_CLIENT, Role.ADMIN))
    return made


# ---------------------------------------------------------------- SSL contexts


def _context(purpose: ssl.Purpose, ca: pathlib.Path, cert: pathlib.Path, key: pathlib.Path) -> ssl.SSLContext:
    for path in (ca, cert, key):
        if not path.exists():
            raise CertError(f"{path} is missing (make it with `chronodb cert`, or run with --insecure)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # replaced by the explicit node-id check (module docstring)
    context.verify_mode = ssl.CERT_REQUIRED
    if purpose is ssl.Purpose.CLIENT_AUTH:
        context.num_tickets = 0  # no session resumption here: a ticket per connection would be built for nothing
    try:
        context.load_verify_locations(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as error:
        raise CertError(f"cannot load {cert} / {key} / {ca}: {error}") from None
    return context


@attrs.frozen
class NodeTls:
    """A node's two contexts: accepting (peers and clients) and dialing peers."""

    server: ssl.SSLContext
    dialer: ssl.SSLContext


@attrs.frozen
class ClientTls:
    context: ssl.SSLContext
    name: str


def load_node_tls(certs: pathlib.Path, node_id: str) -> NodeTls:
    crt, key = node_cert_paths(certs, node_id)
    return NodeTls(_context(ssl.Purpose.CLIENT_AUTH, certs / "ca.crt", crt, key),
                   _context(ssl.Purpose.SERVER_AUTH, certs / "ca.crt", crt, key))


def load_client_tls(certs: pathlib.Path, name: str = DEFAULT_CLIENT) -> ClientTls:
    crt, key = client_cert_paths(certs, name)
    return ClientTls(_context(ssl.Purpose.SERVER_AUTH, certs / "ca.crt", crt, key), name)


def is_insecure(data_dir: str | os.PathLike[str]) -> bool:
    """Whether DIR was last started with --insecure (its clients then speak plain TCP)."""
    return (pathlib.Path(data_dir) / INSECURE_MARKER).exists()


def set_insecure(data_dir: str | os.PathLike[str], insecure: bool) -> None:
    marker = pathlib.Path(data_dir) / INSECURE_MARKER
    if insecure:
        marker.write_text("This cluster runs with --insecure: no TLS, no authentication, every client is admin.\n")
    else:
        marker.unlink(missing_ok=True)


def client_tls_for_dir(data_dir: str | os.PathLike[str], name: str = DEFAULT_CLIENT) -> Optional[ClientTls]:
    """The client's TLS for a data directory: None if the cluster is insecure, else its client cert."""
    if is_insecure(data_dir):
        return None
    return load_client_tls(certs_dir(data_dir), name)
