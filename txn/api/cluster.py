"""The cluster's configuration as values: nodes, tablets, max_offset, limits; and its TOML form.

Role: what every node, client and tool agrees on about the cluster: its id,
`max_offset`, `gc_retention`, the nodes (id, host, port, optional metrics
port), the tablets (id, key range, replica nodes, preferred leader) and the
transport limits every node applies (`TransportLimits`, the optional
`[limits]` table). Pure: records, validation and
the TOML text form; reading and writing `DIR/cluster.toml` and the node
directories is txn/node/config.py.

Invariants (checked by `validate`, so a hand-edited file fails early and clearly):
- node ids and tablet ids are unique; every replica names a known node;
- no two nodes share a host and port; a node's `metrics_port` (its `/metrics`
  HTTP endpoint, optional: absent, the node serves no metrics) is in
  1-65535 and no other address on its host uses it (no node port, no other
  node's metrics port);
- the tablets cover the whole key space: the first starts at b"", each ends
  where the next starts, the last is unbounded (end = None);
- the file names only known keys (`TOP_KEYS`, `NODE_KEYS`, `TABLET_KEYS`;
  a misspelled key was ignored and its setting silently the default);
- `[limits]` names only known keys, each within `LIMIT_RANGES`;
  `max_handshaking` is at most `max_connections`, and `max_connections`
  leaves room for the other nodes' connections and a client.

On disk (TOML; keys are hex so any bytes survive a text editor):

    cluster_id = "5f0c..."
    max_offset = "10ms"
    gc_retention = "1h"     # optional; old versions kept this long
    decision_retention = "30s"  # optional; a commit's 2PC record kept this long after every participant resolved it
    max_key_bytes = 4096    # optional; larger keys are refused before anything is proposed
    max_value_bytes = 4194304  # optional; likewise for values (at most MAX_VALUE_BYTES_CEILING)
    [limits]                # optional, and so is each key in it: absent, TransportOptions' default
    max_connections = 4096  # what each bounds: TransportOptions (txn/net/options.py);
    max_handshaking = 128   # the allowed ranges: LIMIT_RANGES. Only keys that differ from
    max_requests_in_flight = 256  # the default are written, so a file follows new defaults.
    max_queued_reply_bytes = 67108864
    max_client_input_bytes = 67108864
    peer_queue_bytes = 33554432
    handshake_timeout = "5s"      # durations, as max_offset
    client_idle_timeout = "2m"
    client_frame_timeout = "30s"
    [[nodes]]
    id = "n1"; host = "127.0.0.1"; port = 7400
    metrics_port = 8400     # optional; HTTP GET /metrics (Prometheus) on the same host
    [[tablets]]
    id = "t1"; start = ""; end = "40"; replicas = ["n1", "n2", "n3"]; preferred_leader = "n1"
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs

from hlc import format_duration_ns, parse_duration_ns
from txn.net.options import TransportOptions
from txn.wire.frames import MAX_FRAME_BYTES_DEFAULT

CONFIG_NAME = "cluster.toml"
CLUSTER_ID_NAME = "CLUSTER_ID"
DEFAULT_MAX_OFFSET_NS = 10_000_000
DEFAULT_GC_RETENTION_NS = 3600 * 1_000_000_000
# How long a coordinator keeps a commit decision's record once every participant acknowledged
# its resolution, before deleting it (txn/tablet/forgetting.py): for `chronodb inspect txn`,
# not for safety. Its leader holds each such id in memory meanwhile (about 150 bytes).
DEFAULT_DECISION_RETENTION_NS = 30 * 1_000_000_000
DEFAULT_MAX_KEY_BYTES = 4 << 10
DEFAULT_MAX_VALUE_BYTES = 4 << 20
# A write must fit in one wire frame (16 MiB, txn/wire/frames.py) inside a
# Paxos Accept with its envelope: the ceilings leave room for that.
MAX_KEY_BYTES_CEILING = 64 << 10
MAX_VALUE_BYTES_CEILING = 8 << 20
REPLICATION_FACTOR = 3

_SECOND_NS = 1_000_000_000
_GIB = 1 << 30
# The [limits] a node may be given, lowest and highest allowed, by TransportLimits field (a field
# ending in _ns is a duration, written without the suffix: client_idle_timeout = "600s"). The
# ceilings stop a slip of a few zeros from lifting a bound the node relies on.
LIMIT_RANGES: dict[str, tuple[int, int]] = {
    # Each connection is a file descriptor, and may hold one 64 KiB read chunk beyond
    # max_client_input_bytes (txn/net/input_budget.py): 16,384 of them are 1 GiB.
    "max_connections": (1, 16_384),
    "max_handshaking": (1, 16_384),  # and at most max_connections
    # Each request in flight is a task of the node with its frame held.
    "max_requests_in_flight": (1, 65_536),
    # One reply may fill a whole frame (16 MiB, txn/wire/frames.py): with less, a client reading
    # one large value or scan page would be cut off. Above 1 GiB: one unread client costs that.
    "max_queued_reply_bytes": (MAX_FRAME_BYTES_DEFAULT, _GIB),
    "max_client_input_bytes": (1, _GIB),  # node-wide; a frame always gets through (input_budget.py)
    "peer_queue_bytes": (1, _GIB),  # per peer, what a stopped peer costs; one frame always fits
    # Below 100 ms a loaded node's own event-loop stalls (an inline LevelDB write, tens of ms)
    # would close healthy connections. A dialer that has not finished TLS and its hello in a
    # minute is not coming; it holds a handshake slot meanwhile.
    "handshake_timeout_ns": (_SECOND_NS // 10, 60 * _SECOND_NS),
    # An idle connection holds one of max_connections; one whose client vanished without a FIN
    # (a NAT forgot it) is reclaimed only by this timeout.
    "client_idle_timeout_ns": (_SECOND_NS // 10, 24 * 3600 * _SECOND_NS),
    # An incomplete frame holds its bytes of the input budget (a slowloris); 10 min still lets
    # 16 MiB through at 28 KB/s.
    "client_frame_timeout_ns": (_SECOND_NS // 10, 600 * _SECOND_NS),
}


class ConfigError(Exception):
    """The configuration or a data directory is missing, corrupt or foreign."""


@attrs.frozen
class NodeConfig:
    id: str
    host: str
    port: int
    # The node's Prometheus endpoint (HTTP GET /metrics) on `host`. None: no
    # endpoint (cluster.toml files written before it existed load so).
    metrics_port: int | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return None if self.metrics_port is None else (self.host, self.metrics_port)


@attrs.frozen
class TabletConfig:
    id: str
    start: bytes
    end: bytes | None  # None: unbounded
    replicas: tuple[str, ...] = attrs.field(converter=tuple)
    preferred_leader: str

    def contains(self, key: bytes) -> bool:
        return self.start <= key and (self.end is None or key < self.end)


_DEFAULTS = TransportOptions()  # the defaults of every limit: TransportOptions is their one home


def _seconds_ns(seconds: float) -> int:
    return round(seconds * _SECOND_NS)


@attrs.frozen
class TransportLimits:
    """cluster.toml's `[limits]`: the transport bounds an operator may tune; each node runs
    its transport with them. What each bounds: `TransportOptions` (txn/net/options.py),
    whose defaults these are. Durations are int ns here, float seconds there."""

    max_connections: int = _DEFAULTS.max_connections
    max_handshaking: int = _DEFAULTS.max_handshaking
    max_requests_in_flight: int = _DEFAULTS.max_requests_in_flight
    max_queued_reply_bytes: int = _DEFAULTS.max_queued_reply_bytes
    max_client_input_bytes: int = _DEFAULTS.max_client_input_bytes
    peer_queue_bytes: int = _DEFAULTS.peer_queue_bytes
    handshake_timeout_ns: int = _seconds_ns(_DEFAULTS.handshake_timeout_s)
    client_idle_timeout_ns: int = _seconds_ns(_DEFAULTS.client_idle_timeout_s)
    client_frame_timeout_ns: int = _seconds_ns(_DEFAULTS.client_frame_timeout_s)

    def transport_options(self, base: TransportOptions = _DEFAULTS) -> TransportOptions:
        """`base` (by default the defaults) with these limits in place."""
        return attrs.evolve(base, **{_option_name(name): value / _SECOND_NS if _is_duration(name) else value
                                     for name, value in attrs.asdict(self).items()})


def _is_duration(field_name: str) -> bool:
    return field_name.endswith("_ns")


def _toml_key(field_name: str) -> str:
    """client_idle_timeout_ns -> client_idle_timeout; max_connections stays."""
    return field_name.removesuffix("_ns")


def _option_name(field_name: str) -> str:
    """The TransportOptions field: client_idle_timeout_ns -> client_idle_timeout_s."""
    return _toml_key(field_name) + "_s" if _is_duration(field_name) else field_name


@attrs.frozen
class ClusterConfig:
    cluster_id: str
    max_offset_ns: int
    nodes: tuple[NodeConfig, ...] = attrs.field(converter=tuple)
    tablets: tuple[TabletConfig, ...] = attrs.field(converter=tuple)
    # How far behind a replica's safe time old versions are kept; reads below
    # the resulting GC horizon fail with an error naming it.
    gc_retention_ns: int = DEFAULT_GC_RETENTION_NS
    # How long a commit's 2PC decision record is kept after every participant resolved it.
    decision_retention_ns: int = DEFAULT_DECISION_RETENTION_NS
    # Size limits of one key and one value: a larger one is refused before
    # anything is proposed, as a definite failure (txn/api/limits.py).
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    # The transport's bounds on what clients may cost ([limits]; absent: the defaults).
    limits: TransportLimits = attrs.field(factory=TransportLimits)
    # The data directory it was loaded from (not stored in the file): where tools
    # find the client certificate (txn/net/tls.py). None for a config built in code.
    source_dir: str | None = attrs.field(default=None, eq=False)

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(node.id for node in self.nodes)
        raise ConfigError(f"no node {node_id!r} in the cluster (nodes: {known})")

    def tablet(self, tablet_id: str) -> TabletConfig:
        for tablet in self.tablets:
            if tablet.id == tablet_id:
                return tablet
        raise ConfigError(f"no tablet {tablet_id!r} in the cluster")

    def tablet_for_key(self, key: bytes) -> TabletConfig:
        for tablet in self.tablets:
            if tablet.contains(key):
                return tablet
        raise AssertionError(f"tablets do not cover key {key!r}")  # validate() rules this out

    def tablets_of(self, node_id: str) -> tuple[TabletConfig, ...]:
        return tuple(tablet for tablet in self.tablets if node_id in tablet.replicas)


def validate(config: ClusterConfig) -> None:
    if not config.cluster_id:
        raise ConfigError("cluster_id is empty")
    if config.max_offset_ns <= 0:
        raise ConfigError("max_offset must be positive")
    if config.gc_retention_ns <= 0:
        raise ConfigError("gc_retention must be positive")
    if config.decision_retention_ns <= 0:
        raise ConfigError("decision_retention must be positive")
    if not 1 <= config.max_key_bytes <= MAX_KEY_BYTES_CEILING:
        raise ConfigError(f"max_key_bytes must be between 1 and {MAX_KEY_BYTES_CEILING}")
    if not 1 <= config.max_value_bytes <= MAX_VALUE_BYTES_CEILING:
        raise ConfigError(f"max_value_bytes must be between 1 and {MAX_VALUE_BYTES_CEILING} (one write must fit a wire frame)")
    node_ids = [node.id for node in config.nodes]
    if not node_ids:
        raise ConfigError("no nodes")
    if len(set(node_ids)) != len(node_ids):
        raise ConfigError(f"duplicate node ids in {node_ids}")
    addresses = [node.address for node in config.nodes]
    if len(set(addresses)) != len(addresses):
        raise ConfigError("two nodes share a host and port")
    _validate_metrics_ports(config.nodes)
    _validate_limits(config.limits, len(config.nodes))
    tablet_ids = [tablet.id for tablet in config.tablets]
    if len(set(tablet_ids)) != len(tablet_ids):
        raise ConfigError(f"duplicate tablet ids in {tablet_ids}")
    expected_start: bytes | None = b""
    for tablet in sorted(config.tablets, key=lambda t: t.start):
        if expected_start is None or tablet.start != expected_start:
            raise ConfigError(f"tablet {tablet.id} starts at {tablet.start.hex()!r}: tablets must cover the key space without gaps or overlaps")
        if tablet.end is not None and tablet.end <= tablet.start:
            raise ConfigError(f"tablet {tablet.id} has an empty range")
        unknown = [r for r in tablet.replicas if r not in node_ids]
        if unknown or not tablet.replicas or len(set(tablet.replicas)) != len(tablet.replicas):
            raise ConfigError(f"tablet {tablet.id} has bad replicas {list(tablet.replicas)}")
        if tablet.preferred_leader not in tablet.replicas:
            raise ConfigError(f"tablet {tablet.id}: preferred leader {tablet.preferred_leader} is not a replica")
        expected_start = tablet.end
    if expected_start is not None:
        raise ConfigError("the last tablet must be unbounded (no end)")


def _validate_metrics_ports(nodes: tuple[NodeConfig, ...]) -> None:
    taken = {node.address: f"node {node.id}'s port" for node in nodes}
    for node in nodes:
        if node.metrics_port is None:
            continue
        if not 1 <= node.metrics_port <= 65535:
            raise ConfigError(f"node {node.id}: metrics_port {node.metrics_port} is not a port (1-65535)")
        address = (node.host, node.metrics_port)
        if address in taken:
            raise ConfigError(f"node {node.id}: metrics_port {node.metrics_port} on {node.host} is already {taken[address]}")
        taken[address] = f"node {node.id}'s metrics_port"


def _validate_limits(limits: TransportLimits, node_count: int) -> None:
    for name, value in attrs.asdict(limits).items():
        low, high = LIMIT_RANGES[name]
        if not low <= value <= high:
            shown = _duration_text if _is_duration(name) else str
            raise ConfigError(f"limits.{_toml_key(name)} must be between {shown(low)} and {shown(high)}, "
                              f"not {shown(value)}")
    # Every other node dials in too, and counts against max_connections like a client.
    if limits.max_connections < node_count:
        raise ConfigError(f"limits.max_connections ({limits.max_connections}) must be at least {node_count}: "
                          f"room for the other {node_count - 1} nodes' connections and a client")
    if limits.max_handshaking > limits.max_connections:
        hint = ", its default: set it too" if limits.max_handshaking == _DEFAULTS.max_handshaking else ""
        raise ConfigError(f"limits.max_handshaking ({limits.max_handshaking}{hint}) must be at most "
                          f"limits.max_connections ({limits.max_connections})")


def to_toml(config: ClusterConfig) -> str:
    lines = [
        "# chronodb cluster configuration; every node and client reads it. Keys are hex.",
        f'cluster_id = "{config.cluster_id}"',
        f'max_offset = "{format_duration_ns(config.max_offset_ns)}"',
        f'gc_retention = "{format_duration_ns(config.gc_retention_ns)}"  # old versions kept this long',
        f'decision_retention = "{format_duration_ns(config.decision_retention_ns)}"  '
        "# a commit's 2PC record kept this long once every participant resolved it",
        f"max_key_bytes = {config.max_key_bytes}  # larger keys are refused",
        f"max_value_bytes = {config.max_value_bytes}  # larger values are refused",
        "",
    ]
    lines += _limits_toml(config.limits)
    for node in config.nodes:
        lines += ["[[nodes]]", f'id = "{node.id}"', f'host = "{node.host}"', f"port = {node.port}"]
        if node.metrics_port is not None:
            lines.append(f"metrics_port = {node.metrics_port}  # HTTP GET /metrics (Prometheus)")
        lines.append("")
    for tablet in config.tablets:
        replicas = ", ".join(f'"{r}"' for r in tablet.replicas)
        lines += ["[[tablets]]", f'id = "{tablet.id}"', f'start = "{tablet.start.hex()}"']
        if tablet.end is not None:
            lines.append(f'end = "{tablet.end.hex()}"')
        lines += [f"replicas = [{replicas}]", f'preferred_leader = "{tablet.preferred_leader}"', ""]
    return "\n".join(lines)


# Every key the file may hold (a misspelled one was ignored, its setting silently the default).
TOP_KEYS = ("cluster_id", "max_offset", "gc_retention", "decision_retention", "max_key_bytes", "max_value_bytes",
            "limits", "nodes", "tablets")
NODE_KEYS = ("id", "host", "port", "metrics_port")
TABLET_KEYS = ("id", "start", "end", "replicas", "preferred_leader")


def _check_keys(table: Any, known: tuple[str, ...], where: str) -> None:
    if not isinstance(table, dict):
        raise TypeError(f"{where} must be a table")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: {', '.join(known)})")


def from_toml(text: str, *, source: str = CONFIG_NAME) -> ClusterConfig:
    try:
        data = tomllib.loads(text)
        _check_keys(data, TOP_KEYS, "the top level")
        for node in data.get("nodes", []):
            _check_keys(node, NODE_KEYS, "[[nodes]]")
        for tablet in data.get("tablets", []):
            _check_keys(tablet, TABLET_KEYS, "[[tablets]]")
        config = ClusterConfig(
            cluster_id=_str(data, "cluster_id"),
            max_offset_ns=parse_duration_ns(_str(data, "max_offset")),
            gc_retention_ns=parse_duration_ns(_str(data, "gc_retention")) if "gc_retention" in data else DEFAULT_GC_RETENTION_NS,
            decision_retention_ns=(parse_duration_ns(_str(data, "decision_retention")) if "decision_retention" in data
                                   else DEFAULT_DECISION_RETENTION_NS),
            max_key_bytes=_int(data, "max_key_bytes") if "max_key_bytes" in data else DEFAULT_MAX_KEY_BYTES,
            max_value_bytes=_int(data, "max_value_bytes") if "max_value_bytes" in data else DEFAULT_MAX_VALUE_BYTES,
            limits=_limits_from_toml(data.get("limits", {})),
            nodes=[NodeConfig(_str(n, "id"), _str(n, "host"), _int(n, "port"),
                              _int(n, "metrics_port") if "metrics_port" in n else None) for n in data.get("nodes", [])],
            tablets=[
                TabletConfig(
                    _str(t, "id"), bytes.fromhex(_str(t, "start")),
                    bytes.fromhex(t["end"]) if "end" in t else None,
                    [str(r) for r in t.get("replicas", [])], _str(t, "preferred_leader"),
                )
                for t in data.get("tablets", [])
            ],
        )
    except (tomllib.TOMLDecodeError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{source} is corrupt: {error}") from None
    except ConfigError as error:  # well-formed, but not what a key may say
        raise ConfigError(f"{source} is invalid: {error}") from None
    try:
        validate(config)
    except ConfigError as error:
        raise ConfigError(f"{source} is invalid: {error}") from None
    return config


def _str(table: dict[str, Any], name: str) -> str:
    value = table[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _int(table: dict[str, Any], name: str, shown: str | None = None) -> int:
    value = table[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{shown or name} must be an integer")
    return value


def _limits_toml(limits: TransportLimits) -> list[str]:
    """The [limits] table with the keys that differ from the defaults; none: no table, so a
    file keeps following the defaults (and files from before [limits] round-trip unchanged)."""
    defaults = attrs.asdict(TransportLimits())
    lines = [f"{_toml_key(name)} = " + (f'"{_duration_text(value)}"' if _is_duration(name) else str(value))
             for name, value in attrs.asdict(limits).items() if value != defaults[name]]
    return ["[limits]  # the transport's bounds; a key not here has its default", *lines, ""] if lines else []


def _limits_from_toml(table: Any) -> TransportLimits:
    if not isinstance(table, dict):
        raise TypeError("limits must be a table ([limits])")
    fields = {_toml_key(name): name for name in attrs.fields_dict(TransportLimits)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in [limits] (known: {', '.join(sorted(fields))})")
    values = {}
    for key, value in table.items():
        name = fields[key]
        if _is_duration(name):
            if not isinstance(value, str):
                raise TypeError(f'limits.{key} must be a duration string like "30s"')
            try:
                values[name] = parse_duration_ns(value)
            except ValueError as error:
                raise ValueError(f"limits.{key}: {error}") from None
        else:
            values[name] = _int(table, key, f"limits.{key}")
    return TransportLimits(**values)


def _duration_text(ns: int) -> str:
    """Exact, unlike format_duration_ns (whose %g rounds), in the largest whole unit:
    10m, 90s, 1500ms, 7ns, 0s; parse_duration_ns reads each back."""
    units = (("h", 3600 * _SECOND_NS), ("m", 60 * _SECOND_NS), ("s", _SECOND_NS), ("ms", 1_000_000), ("us", 1_000))
    if ns == 0:
        return "0s"
    unit, scale = next(((unit, scale) for unit, scale in units if ns % scale == 0), ("ns", 1))
    return f"{ns // scale}{unit}"
