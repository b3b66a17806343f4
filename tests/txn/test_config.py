"""cluster.toml: the default layout, round trip, validation, [limits], directory ownership."""

from __future__ import annotations

import pathlib

import attrs
import pytest

from txn.api.cluster import LIMIT_RANGES, TransportLimits
from txn.net.options import TransportOptions
from txn.node.config import (
    ClusterConfig, ConfigError, NodeConfig, TabletConfig, ensure_node_dir, from_toml, generate,
    load_config, to_toml, write_config,
)


def test_default_layout_covers_key_space_and_spreads_leaders() -> None:
    config = generate(nodes=3, tablets=4, port=7400)
    # Typed keys spread: alice and bob (and most names) land on different tablets.
    assert [t.start for t in config.tablets] == [b"", b"b", b"j", b"t"]
    assert [t.end for t in config.tablets] == [b"b", b"j", b"t", None]
    assert config.tablet_for_key(b"alice").id != config.tablet_for_key(b"bob").id
    assert all(len(t.replicas) == 3 for t in config.tablets)
    assert {t.preferred_leader for t in config.tablets} == {"n1", "n2", "n3"}
    assert [n.port for n in config.nodes] == [7400, 7401, 7402]
    assert [n.metrics_port for n in config.nodes] == [8400, 8401, 8402]
    for key in (b"", b"\x00", b"a\xff", b"b", b"\xff\xff"):
        tablet = config.tablet_for_key(key)
        assert tablet.start <= key and (tablet.end is None or key < tablet.end)


def test_five_nodes_replicate_three_ways() -> None:
    config = generate(nodes=5, tablets=5)
    assert all(len(set(t.replicas)) == 3 for t in config.tablets)
    assert {t.preferred_leader for t in config.tablets} == {"n1", "n2", "n3", "n4", "n5"}


def test_toml_round_trip(tmp_path: pathlib.Path) -> None:
    config = generate(nodes=3, tablets=7, max_offset_ns=25_000_000)
    write_config(tmp_path, config)
    assert load_config(tmp_path) == config
    assert from_toml(to_toml(config)) == config


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda text: text.replace('max_offset = "10ms"', 'max_offset = "ten"'), "corrupt"),
        (lambda text: text.replace("[[nodes]]", "[[nodes", 1), "corrupt"),
        (lambda text: text.replace('start = "62"', 'start = "63"'), "gaps"),
        (lambda text: text.replace('replicas = ["n1"', 'replicas = ["n9"', 1), "bad replicas"),
        (lambda text: text.replace('preferred_leader = "n1"', 'preferred_leader = "n9"', 1), "not a replica"),
    ],
)
def test_bad_config_is_refused_with_a_reason(mutate, message: str) -> None:
    text = to_toml(generate())
    with pytest.raises(ConfigError, match=message):
        from_toml(mutate(text))


def test_a_config_without_metrics_ports_loads_and_stays_without() -> None:
    """cluster.toml files from before metrics ports: every node loads with none (no endpoint)."""
    text = "\n".join(line for line in to_toml(generate()).splitlines() if not line.startswith("metrics_port"))
    config = from_toml(text)
    assert [n.metrics_port for n in config.nodes] == [None, None, None]
    assert all(n.metrics_address is None for n in config.nodes)
    assert "metrics_port" not in to_toml(config)
    assert from_toml(to_toml(config)) == config


def test_metrics_ports_explicit_and_on_other_hosts() -> None:
    config = generate(nodes=2, port=9000, metrics_port=9100)
    assert [n.metrics_address for n in config.nodes] == [("127.0.0.1", 9100), ("127.0.0.1", 9101)]
    # One port number on two hosts is two addresses.
    two_hosts = ClusterConfig("c", 1, [NodeConfig("n1", "10.0.0.1", 7400, 8400), NodeConfig("n2", "10.0.0.2", 7400, 8400)],
                              [TabletConfig("t1", b"", None, ["n1", "n2"], "n1")])
    assert from_toml(to_toml(two_hosts)) == two_hosts


@pytest.mark.parametrize("metrics_ports, message", [
    ((7401, 8401), "metrics_port 7401 on 127.0.0.1 is already node n2's port"),
    ((8400, 8400), "node n2: metrics_port 8400 on 127.0.0.1 is already node n1's metrics_port"),
    ((0, 8401), "metrics_port 0 is not a port"),
    ((8400, 70000), "metrics_port 70000 is not a port"),
])
def test_bad_metrics_ports_are_refused(metrics_ports: tuple[int, int], message: str) -> None:
    nodes = [NodeConfig("n1", "127.0.0.1", 7400, metrics_ports[0]), NodeConfig("n2", "127.0.0.1", 7401, metrics_ports[1])]
    text = to_toml(ClusterConfig("c", 1, nodes, [TabletConfig("t1", b"", None, ["n1", "n2"], "n1")]))
    with pytest.raises(ConfigError, match=message):
        from_toml(text)


@pytest.mark.parametrize("options, message", [
    ({"port": 7400, "metrics_port": 7401}, "overlaps the node ports 7400-7402"),
    ({"port": 7400, "metrics_port": 65534}, "--metrics-port 65534 leaves no room"),
    ({"port": 65000}, "give --metrics-port"),
])
def test_generate_refuses_metrics_ports_that_cannot_be(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate(nodes=3, **options)


def test_missing_directory_and_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope")
    with pytest.raises(ConfigError, match="missing"):
        load_config(tmp_path)


def test_unbounded_last_tablet_required() -> None:
    config = ClusterConfig("c", 1, [NodeConfig("n1", "h", 1)], [TabletConfig("t1", b"", b"\x10", ["n1"], "n1")])
    with pytest.raises(ConfigError, match="unbounded"):
        from_toml(to_toml(config))


def test_node_dir_belongs_to_one_cluster(tmp_path: pathlib.Path) -> None:
    first = generate(cluster_id="aaaa")
    directory = ensure_node_dir(tmp_path, first, "n1")
    assert (directory / "CLUSTER_ID").read_text().strip() == "aaaa"
    assert ensure_node_dir(tmp_path, first, "n1") == directory
    with pytest.raises(ConfigError, match="belongs to cluster aaaa"):
        ensure_node_dir(tmp_path, generate(cluster_id="bbbb"), "n1")
    with pytest.raises(ConfigError, match="no node 'n7'"):
        ensure_node_dir(tmp_path, first, "n7")


def test_default_split_points_are_increasing_for_every_tablet_count() -> None:
    from txn.node.config import default_split_points

    for tablets in range(1, 257):
        points = default_split_points(tablets)
        assert len(points) == tablets - 1 and points == sorted(set(points)), tablets


# ---------------------------------------------------------------- [limits]

SECOND_NS = 1_000_000_000
# Every limit away from its default (and each its own value, so a swapped field shows).
TUNED = TransportLimits(
    max_connections=4000, max_handshaking=100, max_requests_in_flight=32, max_queued_reply_bytes=20 << 20,
    max_client_input_bytes=128 << 20, peer_queue_bytes=48 << 20, handshake_timeout_ns=2 * SECOND_NS,
    client_idle_timeout_ns=90 * SECOND_NS, client_frame_timeout_ns=1_500_000_000,
)


def with_limits(text: str, table: str) -> str:
    """cluster.toml text with `table` (a [limits] table's text) before the nodes."""
    head, _, rest = text.partition("[[nodes]]")
    return f"{head}{table}\n\n[[nodes]]{rest}"


def test_without_limits_the_node_runs_with_the_transport_defaults() -> None:
    text = to_toml(generate())
    assert "[limits]" not in text  # a file at the defaults says nothing of them
    config = from_toml(text)
    assert config.limits == TransportLimits()
    assert config.limits.transport_options() == TransportOptions()


def test_limits_round_trip_and_reach_the_transport_options(tmp_path: pathlib.Path) -> None:
    config = attrs.evolve(generate(), limits=TUNED)
    write_config(tmp_path, config)
    text = (tmp_path / "cluster.toml").read_text()
    assert 'client_idle_timeout = "90s"' in text and 'client_frame_timeout = "1500ms"' in text
    assert load_config(tmp_path) == config
    assert TUNED.transport_options() == TransportOptions(
        max_connections=4000, max_handshaking=100, max_requests_in_flight=32, max_queued_reply_bytes=20 << 20,
        max_client_input_bytes=128 << 20, peer_queue_bytes=48 << 20, handshake_timeout_s=2.0,
        client_idle_timeout_s=90.0, client_frame_timeout_s=1.5,
    )


def test_limits_table_sets_only_its_keys_and_is_written_back_so() -> None:
    text = with_limits(to_toml(generate()), '[limits]\nmax_connections = 2048\nclient_idle_timeout = "10m"')
    config = from_toml(text)
    assert config.limits == TransportLimits(max_connections=2048, client_idle_timeout_ns=600 * SECOND_NS)
    assert config.limits == attrs.evolve(TransportLimits(), max_connections=2048)  # 10m is the default
    written = to_toml(config)
    assert "max_connections = 2048" in written and "client_idle_timeout" not in written
    assert from_toml(written) == config


@pytest.mark.parametrize("table, message", [
    ("max_conections = 10",
     "invalid: unknown key 'max_conections' in \\[limits\\] \\(known: client_frame_timeout, client_idle_timeout, "
     "handshake_timeout, max_client_input_bytes, max_connections, max_handshaking, max_queued_reply_bytes, "
     "max_requests_in_flight, peer_queue_bytes\\)"),
    ('max_connections = "10"', "corrupt: limits.max_connections must be an integer"),
    ("max_connections = true", "corrupt: limits.max_connections must be an integer"),
    ("client_idle_timeout = 600", 'corrupt: limits.client_idle_timeout must be a duration string like "30s"'),
    ('handshake_timeout = "soon"', "corrupt: limits.handshake_timeout: not a duration"),
    ("max_requests_in_flight = 0", "invalid: limits.max_requests_in_flight must be between 1 and 65536, not 0"),
    ("max_client_input_bytes = -1", "invalid: limits.max_client_input_bytes must be between 1 and 1073741824, not -1"),
    ("peer_queue_bytes = 2147483648", "invalid: limits.peer_queue_bytes must be between 1 and 1073741824"),
    ("max_connections = 100000", "invalid: limits.max_connections must be between 1 and 16384, not 100000"),
    ("max_queued_reply_bytes = 1048576", "invalid: limits.max_queued_reply_bytes must be between 16777216 and"),
    ('client_idle_timeout = "0s"', "invalid: limits.client_idle_timeout must be between 100ms and 24h, not 0s"),
    ('client_frame_timeout = "-5s"', "invalid: limits.client_frame_timeout must be between 100ms and 10m, not -5s"),
    ('handshake_timeout = "2m"', "invalid: limits.handshake_timeout must be between 100ms and 1m, not 2m"),
    ("max_handshaking = 2000", "invalid: limits.max_handshaking \\(2000\\) must be at most limits.max_connections \\(1024\\)"),
    ("max_connections = 32", "invalid: limits.max_handshaking \\(128, its default: set it too\\) must be at most "
     "limits.max_connections \\(32\\)"),
    ("max_connections = 2\nmax_handshaking = 2",
     "invalid: limits.max_connections \\(2\\) must be at least 3: room for the other 2 nodes' connections"),
])
def test_bad_limits_are_refused_with_one_line_naming_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^cluster.toml is {message}") as caught:
        from_toml(with_limits(to_toml(generate(nodes=3)), f"[limits]\n{table}"))
    assert "\n" not in str(caught.value)


def test_limits_that_are_not_a_table_are_refused() -> None:
    text = to_toml(generate()).replace('max_key_bytes', 'limits = 5\nmax_key_bytes', 1)
    with pytest.raises(ConfigError, match=r"corrupt: limits must be a table \(\[limits\]\)"):
        from_toml(text)


def test_the_defaults_are_within_the_ranges() -> None:
    """Every default passes validation (a node with no [limits] starts), at any node count generate allows."""
    assert set(LIMIT_RANGES) == set(attrs.fields_dict(TransportLimits))
    for name, value in attrs.asdict(TransportLimits()).items():
        low, high = LIMIT_RANGES[name]
        assert low <= value <= high, name
    generate(nodes=99)  # validates


@pytest.mark.parametrize("before, after, where", [
    ("max_value_bytes = ", "max_value_byte = ", "the top level"),
    ('host = "', 'hots = "', r"\[\[nodes\]\]"),
    ("preferred_leader = ", "prefered_leader = ", r"\[\[tablets\]\]"),
])
def test_a_misspelled_key_is_refused_not_ignored(before: str, after: str, where: str) -> None:
    """A misspelled key was ignored: its setting silently the default (or, for a required key, "corrupt")."""
    text = to_toml(generate()).replace(before, after, 1)
    misspelled = after.split(" ")[0]
    with pytest.raises(ConfigError, match=f"^cluster.toml is invalid: unknown key '{misspelled}' in {where} "
                                          r"\(known: "):
        from_toml(text)
