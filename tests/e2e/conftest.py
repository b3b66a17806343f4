"""Fixtures starting real local clusters (see harness.py).

Every cluster a fixture starts is stopped by the fixture's finalizer, also when
start-up or the test fails or pytest is interrupted; a SIGKILLed pytest takes
its nodes down through their parent-death signal (tools/localcluster.py).
"""

from __future__ import annotations

import pathlib
from typing import Callable, Iterator

import pytest

from tests.e2e.harness import LocalCluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One healthy 3-node, 4-tablet cluster shared by a module's non-destructive tests."""
    cluster = LocalCluster(tmp_path_factory.mktemp("shared") / "data")
    try:
        cluster.start_all()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def fresh_cluster(tmp_path: pathlib.Path) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill and restart nodes."""
    cluster = LocalCluster(tmp_path / "data")
    try:
        cluster.start_all()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def make_cluster(tmp_path: pathlib.Path) -> Iterator[Callable[..., LocalCluster]]:
    """`make_cluster(**options)`: a healthy cluster with LocalCluster options of the test's
    choosing, stopped when the test ends however it ends."""
    clusters: list[LocalCluster] = []

    def make(**options) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"data{len(clusters)}", **options)
        clusters.append(cluster)
        cluster.start_all()
        cluster.wait_healthy()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all()
