"""`chronodb bench kv`'s keys: dealt evenly over the tablets of any default layout.

Before, every key was b"bench-NNNNN", all inside the first tablet of the default
3-tablet layout (split at b"d" and b"p"), so one leader served every request."""

from __future__ import annotations

import collections

import pytest

from tools.bench_kv import bench_keys
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
