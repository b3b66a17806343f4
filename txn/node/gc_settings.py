"""CPython's cyclic garbage collector, set for a serving node.

Role: keep the collector off the request path. Measured on 3 nodes under 64
writing clients (`bench kv`, 10 s, gc callbacks timing every collection):
the collector freed nothing at all (the write path's objects all die by
reference counting), yet it took 7.2-7.6% of each node's event-loop CPU:
about 55 young collections a second at the default threshold of 700 net new
container objects, and full collections that each walked start-up's ~52,000
objects (modules, classes, configuration, certificates) for about 33 ms, a
pause every request in flight on the node waited out.

`settle_for_serving()` runs once, when the node has started:
- `gc.collect()`, then `gc.freeze()`: what start-up left alive moves to the
  permanent generation, which no later collection walks;
- the young generation's threshold goes from 700 to `YOUNG_THRESHOLD` net
  new container objects. A node in steady state keeps far fewer new objects
  alive than that (under the same load: no young collection at all in
  10 s), so collections become rare, and each still walks only the young.

Invariants: the collector stays enabled, so reference cycles (an exception
and its traceback, say) are still freed: after at most `YOUNG_THRESHOLD` net
new objects, a few MB at most, instead of 700. The older generations keep
their default thresholds. Process-wide: call it from a node's own process
(`chronodb node`), never from a library or a test process.
"""

from __future__ import annotations

import gc

import attrs

YOUNG_THRESHOLD = 20_000


@attrs.frozen
class GcSettings:
    """What `settle_for_serving` left: objects frozen, and the three generations' thresholds."""

    frozen_objects: int
    thresholds: tuple[int, int, int]


def settle_for_serving() -> GcSettings:
    """Freeze what start-up left alive and raise the young threshold (module docstring)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return GcSettings(frozen_objects=gc.get_freeze_count(), thresholds=gc.get_threshold())
