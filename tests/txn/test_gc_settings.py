"""A serving node's garbage-collector settings (txn/node/gc_settings.py).

The settings are process-wide, so each check runs in a fresh interpreter
(`python -c`), never in the test process. What must hold: start-up's objects
are frozen; a reference cycle made later is left alone for far more than the
default 700 net new objects; and the collector still frees it once the young
threshold is crossed, without anyone calling `gc.collect()`.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from txn.node.gc_settings import YOUNG_THRESHOLD

REPO = pathlib.Path(__file__).resolve().parents[2]

PROGRAM = """
import gc, json, weakref
import txn.node.wiring  # what a node has loaded when it settles
from txn.node.gc_settings import YOUNG_THRESHOLD, settle_for_serving

settings = settle_for_serving()

class Node:
    pass

freed = []
cycle = Node()
cycle.me = cycle
weakref.finalize(cycle, freed.append, True)
del cycle
kept = [[] for _ in range(5 * 700)]  # would have run the default threshold's collection five times
freed_early = bool(freed)
kept += [[] for _ in range(YOUNG_THRESHOLD)]  # crosses the raised one
print(json.dumps({"frozen": settings.frozen_objects, "thresholds": settings.thresholds,
                  "enabled": gc.isenabled(), "freed_early": freed_early, "freed": bool(freed)}))
"""


def run_settled() -> dict:
    completed = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True,
                               timeout=120, check=True)
    return json.loads(completed.stdout)


def test_start_up_is_frozen_and_the_young_threshold_raised() -> None:
    result = run_settled()
    assert result["frozen"] > 10_000  # the node stack's modules, classes and functions
    assert result["thresholds"][0] == YOUNG_THRESHOLD
    assert result["thresholds"][1:] == [10, 10]  # the older generations keep their defaults
    assert result["enabled"]


def test_a_cycle_waits_for_the_young_threshold_and_is_then_freed() -> None:
    result = run_settled()
    assert not result["freed_early"]
    assert result["freed"]
