"""`chronodb bench kv`'s keys: dealt evenly over the tablets of any default layout, and
picked per operation at random (as etcd's load generator does) or by a walk.

Before, every key was b"bench-NNNNN", all inside the first tablet of the default
3-tablet layout (split at b"d" and b"p"), so one leader served every request."""

from __future__ import annotations

import collections
import itertools
import pathlib
import subprocess
import sys

import pytest

from tools.bench_kv import KEYS, WORKLOADS, bench_keys, client_processes, homes, key_indexes, layout_text
from txn.api import TabletInfo
from txn.node.config import default_split_points


def layout(tablets: int) -> list[TabletInfo]:
    bounds = [b""] + default_split_points(tablets) + [None]
    return [TabletInfo(f"t{i + 1}", bounds[i], bounds[i + 1], ("n1",), None) for i in range(tablets)]


@pytest.mark.parametrize("tablets", [1, 2, 3, 4, 8, 16, 17])
def test_every_tablet_gets_an_equal_share_of_distinct_keys(tablets: int) -> None:
    infos = layout(tablets)
    keys = bench_keys(list(reversed(infos)), 1000)
    assert len(set(keys)) == 1000
    owners: collections.Counter[str] = collections.Counter()
    for key in keys:
        (owner,) = [t.id for t in infos if t.start <= key and (t.end is None or key < t.end)]
        owners[owner] += 1
    assert set(owners) == {t.id for t in infos}
    assert max(owners.values()) - min(owners.values()) <= 1


def test_random_keys_are_uniform_reproducible_and_not_a_walk() -> None:
    drawn = list(itertools.islice(key_indexes("random", 7919), 30 * KEYS))
    assert drawn == list(itertools.islice(key_indexes("random", 7919), 30 * KEYS)), "seeded: the same every run"
    assert set(drawn) == set(range(KEYS))
    counts = collections.Counter(drawn)
    assert max(counts.values()) < 60 and min(counts.values()) > 5  # about 30 each
    # Clients do not move in step: the walk sent clients whose writes finished together to the next
    # tablet together. Here two clients' next tablets (index mod 3) agree about a third of the time.
    first, second = (list(itertools.islice(key_indexes("random", start), 3000)) for start in (1, 2))
    same = sum(a % 3 == b % 3 for a, b in zip(first, second)) / 3000
    assert 0.25 < same < 0.42


def test_a_walk_steps_through_every_key_in_turn() -> None:
    walked = list(itertools.islice(key_indexes("walk", KEYS - 2), KEYS + 2))
    assert walked[:4] == [KEYS - 2, KEYS - 1, 0, 1]
    assert sorted(walked[:KEYS]) == list(range(KEYS))


@pytest.mark.parametrize("processes,clients", [(3, 1), (1, 3), (2, 2), (1, 1)])
def test_each_client_of_a_run_is_near_the_next_node_in_turn(processes: int, clients: int) -> None:
    """`--client-processes` x `--clients-per-process`: the k-th client of the whole run dials node
    k mod 3 first (its stale reads go there), and every order holds every node once."""
    addresses = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
    orders = homes(addresses, processes, clients)
    assert [len(per_process) for per_process in orders] == [clients] * processes
    flat = [order for per_process in orders for order in per_process]
    assert [order[0] for order in flat] == [addresses[k % 3] for k in range(processes * clients)]
    assert all(sorted(order) == addresses for order in flat)


def test_fewer_than_one_client_process_or_client_is_refused_in_one_line() -> None:
    for flag in ("--client-processes", "--clients-per-process"):
        result = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "kv", flag, "0"], capture_output=True,
                                text=True, cwd=pathlib.Path(__file__).resolve().parent.parent, timeout=60)
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and "at least 1" in result.stderr, result.stderr


def test_writes_run_from_one_client_process_and_reads_from_three_unless_told() -> None:
    """`bench kv`'s default layout (tools/bench_kv.py DEFAULT_PROCESSES): one process is enough for
    writes and leaves the shared cores to the nodes; reads need three. `--client-processes N`
    sets every workload's."""
    assert [client_processes(kind, None) for kind in WORKLOADS] == [1, 3, 3]
    assert [client_processes(kind, 2) for kind in WORKLOADS] == [2, 2, 2]
    assert layout_text(WORKLOADS, None) == "client processes: write 1, strong-read 3, past-read 3"
    assert layout_text(["write"], 4) == "4 client processes"
    assert layout_text(["write", "past-read"], 1) == "1 client process"
