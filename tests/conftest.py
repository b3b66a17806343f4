"""Shared pytest options.

--seed N     replay one simulation seed (tests/sim and the Paxos sweeps use it)
--rewrite    regenerate the expected output of data-driven scripts
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, help="replay this simulation seed only")
    parser.addoption("--rewrite", action="store_true", default=False, help="rewrite data-driven expectations")


@pytest.fixture
def replay_seed(request: pytest.FixtureRequest) -> int | None:
    """The seed given with --seed, or None for the normal sweep."""
    return request.config.getoption("--seed")
