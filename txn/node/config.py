"""The cluster configuration on disk: `DIR/cluster.toml`, and the per-node directories.

Role: `generate()` makes the default layout (with a fresh random cluster id;
each node's metrics port `METRICS_PORT_OFFSET` above its port unless told),
`write_config()` / `load_config()` store and read `DIR/cluster.toml`
(records and validation: txn/api/cluster.py), `ensure_node_dir()` ties a
node's directory to the cluster it belongs to.

Invariants:
- cluster.toml is written atomically (temp file + rename);
- a node directory holds a `CLUSTER_ID` file naming the cluster it belongs to;
  a directory of another cluster is refused rather than mixed in.
"""

from __future__ import annotations

import os
import pathlib
import secrets

import attrs

from txn.api.cluster import (  # noqa: F401 - the records are used through this module too
    CLUSTER_ID_NAME,
    CONFIG_NAME,
    DEFAULT_GC_RETENTION_NS,
    DEFAULT_MAX_OFFSET_NS,
    REPLICATION_FACTOR,
    ClusterConfig,
    ConfigError,
    NodeConfig,
    TabletConfig,
    TransportLimits,
    from_toml,
    to_toml,
    validate,
)


# How often a key starts with each character, roughly: digits and capitals a
# little each, lowercase letters by the frequency of English initial letters.
# Keys people type (names, words, ids) then spread over the tablets, where an
# even split of the first byte over 0x00-0xff put every letter in one tablet.
_INITIAL_WEIGHTS: tuple[tuple[str, float], ...] = (
    *((digit, 1.0) for digit in "0123456789"),
    *((upper, 0.5) for upper in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("a", 11.7), ("b", 4.4), ("c", 5.2), ("d", 3.2), ("e", 2.8), ("f", 4.0), ("g", 1.6), ("h", 4.2),
    ("i", 7.3), ("j", 0.5), ("k", 0.9), ("l", 2.4), ("m", 3.8), ("n", 2.3), ("o", 7.6), ("p", 4.3),
    ("q", 0.2), ("r", 2.8), ("s", 6.7), ("t", 16.0), ("u", 1.2), ("v", 0.8), ("w", 5.5), ("x", 0.05),
    ("y", 0.8), ("z", 0.05),
)


def default_split_points(tablets: int) -> list[bytes]:
    """tablets - 1 increasing first-byte split points.

    Up to 16 tablets: at the quantiles of `_INITIAL_WEIGHTS` (4 tablets:
    b"b", b"j", b"t", so "alice" and "bob" land on different tablets); more:
    the first byte split evenly over 0x00-0xff."""
    if tablets <= 16:
        total = sum(weight for _, weight in _INITIAL_WEIGHTS)
        points: list[bytes] = []
        cumulative = 0.0
        chars = [char for char, _ in _INITIAL_WEIGHTS]
        for index, (char, weight) in enumerate(_INITIAL_WEIGHTS):
            cumulative += weight
            while len(points) < tablets - 1 and cumulative >= total * (len(points) + 1) / tablets and index + 1 < len(chars):
                point = chars[index + 1].encode()
                if not points or point > points[-1]:
                    points.append(point)
                else:
                    break
        if len(points) == tablets - 1:
            return points
    return [bytes([i * 256 // tablets]) for i in range(1, tablets)]


METRICS_PORT_OFFSET = 1000  # the default metrics port: the node's port + 1000 (7400 -> 8400)


MAX_TABLETS = 256  # what `generate` (chronodb up --tablets) lays out at most


def generate(
    *, nodes: int = 3, tablets: int = 4, host: str = "127.0.0.1", port: int = 7400,
    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS, cluster_id: str | None = None, metrics_port: int | None = None,
) -> ClusterConfig:
    """The default layout: tablets split the key space where typed keys spread
    (`default_split_points`), 3 replicas each (fewer if fewer nodes),
    preferred leaders spread round-robin. Node i listens on `port + i` and
    serves metrics on `metrics_port + i` (default `port + METRICS_PORT_OFFSET`)."""
    if not 1 <= nodes <= 99:
        raise ConfigError(f"--nodes must be between 1 and 99, not {nodes}")
    if not 1 <= tablets <= MAX_TABLETS:
        raise ConfigError(f"--tablets must be between 1 and {MAX_TABLETS}, not {tablets}")
    if not 1 <= port <= 65535 - nodes:
        raise ConfigError(f"--port {port} leaves no room for {nodes} nodes")
    if metrics_port is None:
        metrics_port = port + METRICS_PORT_OFFSET
        if metrics_port > 65535 - nodes:
            raise ConfigError(f"--port {port} leaves no room for {nodes} metrics ports {METRICS_PORT_OFFSET} above it; "
                              "give --metrics-port")
    if not 1 <= metrics_port <= 65535 - nodes:
        raise ConfigError(f"--metrics-port {metrics_port} leaves no room for {nodes} nodes")
    if port < metrics_port + nodes and metrics_port < port + nodes:
        raise ConfigError(f"--metrics-port {metrics_port} overlaps the node ports {port}-{port + nodes - 1}")
    node_list = [NodeConfig(f"n{i + 1}", host, port + i, metrics_port + i) for i in range(nodes)]
    bounds = [b""] + default_split_points(tablets) + [None]
    width = min(REPLICATION_FACTOR, nodes)
    tablet_list = []
    for i in range(tablets):
        replicas = tuple(node_list[(i + j) % nodes].id for j in range(width))
        tablet_list.append(TabletConfig(f"t{i + 1}", bounds[i], bounds[i + 1], replicas, replicas[0]))
    config = ClusterConfig(cluster_id or secrets.token_hex(8), max_offset_ns, node_list, tablet_list)
    validate(config)
    return config


def config_path(data_dir: str | os.PathLike[str]) -> pathlib.Path:
    return pathlib.Path(data_dir) / CONFIG_NAME


def load_config(data_dir: str | os.PathLike[str]) -> ClusterConfig:
    path = config_path(data_dir)
    if not pathlib.Path(data_dir).is_dir():
        raise ConfigError(f"data directory {data_dir} does not exist (run `chronodb up --dir {data_dir}` first)")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing (run `chronodb up --dir {data_dir}` to create a cluster)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    return attrs.evolve(from_toml(text, source=str(path)), source_dir=str(data_dir))


def write_config(data_dir: str | os.PathLike[str], config: ClusterConfig) -> pathlib.Path:
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    validate(config)
    directory = pathlib.Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = config_path(directory)
    temporary = path.with_suffix(".toml.tmp")
    temporary.write_text(to_toml(config))
    os.replace(temporary, path)
    return path


def node_dir(data_dir: str | os.PathLike[str], node_id: str) -> pathlib.Path:
    return pathlib.Path(data_dir) / node_id


def tablet_dir(data_dir: str | os.PathLike[str], node_id: str, tablet_id: str) -> pathlib.Path:
    return node_dir(data_dir, node_id) / "tablets" / tablet_id


def ensure_node_dir(data_dir: str | os.PathLike[str], config: ClusterConfig, node_id: str) -> pathlib.Path:
    """Create (or check) DIR/<node>/ and its CLUSTER_ID marker."""
    config.node(node_id)
    directory = node_dir(data_dir, node_id)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / CLUSTER_ID_NAME
    if marker.exists():
        found = marker.read_text().strip()
        if found != config.cluster_id:
            raise ConfigError(
                f"{directory} belongs to cluster {found}, not {config.cluster_id} (from {config_path(data_dir)})"
            )
    else:
        marker.write_text(config.cluster_id + "\n")
    return directory
