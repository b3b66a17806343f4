"""The log-writes note of `bench` rows (tools/log_writes.py): per operation and per pass of the
nodes' log-writer threads, from two readings of their /metrics; nothing said without both."""

from __future__ import annotations

import pathlib

from tools.bench_kv import cpu_note
from tools.localcluster import LocalCluster
from tools.log_writes import LogWrites, note


def test_the_note_divides_the_figures_writes_by_its_operations_and_its_passes() -> None:
    before, after = LogWrites(writes=1_000, passes=900), LogWrites(writes=1_380, passes=1_168)
    assert note(before, after, 1_000) == "log writes 0.38/op, 1.42 a pass"
    assert note(before, before, 1_000) == "log writes 0.00/op, no pass"  # nothing written meanwhile


def test_without_both_readings_or_operations_nothing_is_said() -> None:
    reading = LogWrites(writes=10, passes=10)
    assert note(None, reading, 100) == ""
    assert note(reading, None, 100) == ""
    assert note(reading, LogWrites(writes=20, passes=15), 0) == ""


def test_a_row_ends_with_the_log_writes_when_the_figures_have_them() -> None:
    figures = {"node_cpu_us_per_op": 405.0, "node_cores": 1.33, "client_cpu_us_per_op": 95.0,
               "box": "box 94% busy", "node_rss": None, "log_writes": "log writes 0.38/op, 1.42 a pass"}
    assert cpu_note(figures) == ("CPU/op: nodes 405 us (1.33 cores), clients 95 us; box 94% busy; "
                                 "log writes 0.38/op, 1.42 a pass")


def test_a_node_that_cannot_be_scraped_gives_no_reading(tmp_path: pathlib.Path) -> None:
    # A cluster whose nodes never started: every metrics port refuses the connection.
    cluster = LocalCluster(tmp_path / "data")
    assert LogWrites.read(cluster) is None
