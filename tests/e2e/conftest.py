"""Fixtures starting real local clusters (see harness.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.harness import LocalCluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One healthy 3-node, 4-tablet cluster shared by a module's non-destructive tests."""
    cluster = LocalCluster(tmp_path_factory.mktemp("shared") / "data")
    cluster.start_all()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def fresh_cluster(tmp_path) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill and restart nodes."""
    cluster = LocalCluster(tmp_path / "data")
    cluster.start_all()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()
