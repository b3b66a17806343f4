"""cluster.toml: the default layout, round trip, validation, directory ownership."""

from __future__ import annotations

import pathlib

import pytest

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
