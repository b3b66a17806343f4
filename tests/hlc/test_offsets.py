"""Clock-offset estimation and the fencing decision (hlc/offsets.py, DESIGN.md contract 6)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings, strategies as st

from hlc.offsets import BOOT_GRACE_NS, DRIFT_PPM, STALE_AFTER_NS, FenceCause, OffsetMonitor, Sampled

MS = 1_000_000
MAX_OFFSET = 10 * MS
LIMIT = 9 * MS  # the default fence fraction, 0.9


def probe(monitor: OffsetMonitor, peer: str, now: int, offset: int, rtt: int = 2 * MS, noise: int = 0) -> Sampled:
    """A round trip of `rtt` to a peer `offset` ahead; its clock is read `noise` off the midpoint."""
    return monitor.record(peer, now, now + rtt // 2 + offset + noise, now + rtt)


def views(clocks: dict[str, int], errors: dict[tuple[str, str], int], noises: dict[tuple[str, str], int],
          now: int = 1_000 * MS) -> dict[str, OffsetMonitor]:
    """Each node's own monitor, fed one sample of each peer it measures: true offset, bounded error and noise."""
    monitors = {}
    for me in clocks:
        peers = sorted(set(clocks) - {me})
        monitor = OffsetMonitor(me, peers, MAX_OFFSET)
        for peer in peers:
            if (me, peer) in errors:
                error = errors[me, peer]
                probe(monitor, peer, now, clocks[peer] - clocks[me], rtt=2 * error, noise=noises[me, peer])
        monitor.evaluate(now + 2 * LIMIT)  # after the slowest round trip
        monitors[me] = monitor
    return monitors


def serving(monitors: dict[str, OffsetMonitor]) -> list[str]:
    return sorted(node for node, monitor in monitors.items() if not monitor.fenced)


def test_estimate_and_error_bound() -> None:
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)
    probe(monitor, "n2", 1_000 * MS, 3 * MS, rtt=4 * MS)
    assert monitor.offsets() == (("n2", 3 * MS, 2 * MS),)


def test_boot_grace_then_serving() -> None:
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)
    assert monitor.evaluate(0).fenced and monitor.cause is FenceCause.WAITING
    probe(monitor, "n2", 10 * MS, 1 * MS)
    assert not monitor.evaluate(20 * MS).fenced  # itself and n2: a majority of three
    five = OffsetMonitor("n1", ["n2", "n3", "n4", "n5"], MAX_OFFSET)
    probe(five, "n2", 10 * MS, 1 * MS)
    assert five.evaluate(20 * MS).fenced  # two of five are not a majority
    probe(five, "n3", 10 * MS, -2 * MS)
    assert not five.evaluate(20 * MS).fenced


def test_the_window_intersects_its_samples() -> None:
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)
    probe(monitor, "n2", 0, 2 * MS, rtt=1 * MS)  # [1.5, 2.5]ms
    probe(monitor, "n2", 200 * MS, 3 * MS, rtt=6 * MS)  # slow, [0, 6]ms: the fast one still bounds it
    (_, offset, error), = monitor.offsets()
    drift = (206 - 1) * MS * DRIFT_PPM // 1_000_000  # the first sample widened by its age
    assert (offset, error) == (2 * MS, MS // 2 + drift)
    probe(monitor, "n2", 400 * MS, 3 * MS, rtt=2 * MS)  # [2, 4]ms: tighter than either alone
    (_, offset, error), = monitor.offsets()
    assert 2 * MS <= offset - error and offset + error <= 2 * MS + MS // 2 + 2 * drift
    probe(monitor, "n2", 600 * MS, 20 * MS, rtt=1 * MS)  # disjoint from all: the clock stepped
    assert monitor.offsets() == (("n2", 20 * MS, MS // 2),)
    assert monitor.fresh(601 * MS + STALE_AFTER_NS - 1) != {}
    assert monitor.fresh(601 * MS + STALE_AFTER_NS) == {}  # the window slid past it


def test_slow_round_trips_neither_fence_nor_count() -> None:
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)
    probe(monitor, "n2", 0, 50 * MS, rtt=40 * MS)
    assert monitor.offsets() == ()
    assert monitor.evaluate(41 * MS).fenced  # still waiting: nothing usable
    # Offset 8ms measured with 1ms error: at most 9ms, not beyond the 9ms limit.
    probe(monitor, "n2", 100 * MS, 8 * MS, rtt=2 * MS)
    assert not monitor.evaluate(102 * MS).fenced


@pytest.mark.parametrize("rule", [True, False], ids=["rule", "mutant"])
def test_a_node_that_stops_measuring_fences(rule: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OffsetMonitor, "FENCE_WITHOUT_SAMPLES", rule)
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)
    probe(monitor, "n2", 0, 1 * MS)
    probe(monitor, "n3", 0, 1 * MS)
    assert not monitor.evaluate(10 * MS).fenced
    # Probes stop coming back usable (load, or a partition); the samples go stale.
    state = monitor.evaluate(STALE_AFTER_NS + 10 * MS)
    if rule:
        assert state.fenced and state.cause is FenceCause.NO_SAMPLES and "0 of 2 peers" in state.reason
        assert monitor.fence_events == 1
    else:
        assert not state.fenced  # the bug: no fresh measurement, yet trusted to serve
    # Whatever the variant, the node waits at boot.
    assert OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET).evaluate(0).fenced


def test_one_clock_far_off_fences_only_itself() -> None:
    clocks = {"n1": 0, "n2": 0, "n3": 50 * MS}
    pairs = list(itertools.permutations(clocks, 2))
    monitors = views(clocks, {p: MS // 2 for p in pairs}, {p: 0 for p in pairs})
    assert serving(monitors) == ["n1", "n2"]
    assert monitors["n3"].cause is FenceCause.SKEWED and "beyond 9ms from n1" in monitors["n3"].reason
    # The same seen by n1 alone when n3's probes do not get through.
    clocks = {"n1": 50 * MS, "n2": 0, "n3": 0}
    assert serving(views(clocks, {p: MS // 2 for p in pairs}, {p: 0 for p in pairs})) == ["n2", "n3"]


@settings(max_examples=300, deadline=None)
@given(errors=st.lists(st.integers(0, 3 * MS // 4), min_size=6, max_size=6),
       noise_fractions=st.lists(st.floats(-1, 1), min_size=6, max_size=6))
def test_three_clocks_fence_exactly_one_of_the_outer_two(errors: list[int], noise_fractions: list[float]) -> None:
    # +0.7, 0 and -0.7 max_offset: n1 and n3 are 1.4 max_offset apart. Each
    # node judges from its own samples (true offsets within their bounds) and
    # all three agree: the tie goes against the larger id, n3.
    clocks = {"n1": 7 * MS, "n2": 0, "n3": -7 * MS}
    pairs = list(itertools.permutations(clocks, 2))
    errors_by_pair = dict(zip(pairs, errors))
    noises = {pair: int(errors_by_pair[pair] * f) for pair, f in zip(pairs, noise_fractions)}
    monitors = views(clocks, errors_by_pair, noises)
    assert serving(monitors) == ["n1", "n2"]
    assert monitors["n3"].cause is FenceCause.SKEWED and "n1" in monitors["n3"].reason


@st.composite
def clock_sets(draw: st.DrawFn, measure_all: bool):
    size = draw(st.sampled_from([3, 5]))
    nodes = [f"n{i}" for i in range(1, size + 1)]
    clocks = {n: draw(st.integers(-3 * MAX_OFFSET, 3 * MAX_OFFSET)) for n in nodes}
    rng = random.Random(draw(st.integers(0, 2**32)))
    errors, noises = {}, {}
    for a, b in itertools.combinations(nodes, 2):
        if measure_all or rng.random() < 0.7:  # a pair measures each other both ways, or not at all
            for pair in ((a, b), (b, a)):
                errors[pair] = rng.choice([0, 1, MS // 10, MS, 3 * MS, LIMIT])
                noises[pair] = rng.randint(-errors[pair], errors[pair])
    return clocks, errors, noises


@settings(max_examples=400, deadline=None)
@given(clock_sets(measure_all=True))
def test_no_two_serving_clocks_beyond_the_limit(case) -> None:
    clocks, errors, noises = case
    monitors = views(clocks, errors, noises)
    up = serving(monitors)
    for a, b in itertools.combinations(up, 2):
        assert abs(clocks[a] - clocks[b]) <= LIMIT < MAX_OFFSET, (a, b, clocks, up)
    # Not at the price of liveness: clocks well within the limit all serve.
    if max(clocks.values()) - min(clocks.values()) + 2 * max(errors.values()) <= LIMIT:
        assert up == sorted(clocks)


@settings(max_examples=400, deadline=None)
@given(clock_sets(measure_all=False))
def test_serving_clocks_that_measure_each_other_are_within_the_limit(case) -> None:
    clocks, errors, noises = case
    up = serving(views(clocks, errors, noises))
    for a, b in itertools.combinations(up, 2):
        if (a, b) in errors:
            assert abs(clocks[a] - clocks[b]) <= LIMIT, (a, b, clocks, up)


def test_fences_and_recovers_after_a_streak() -> None:
    monitor = OffsetMonitor("n3", ["n1", "n2"], MAX_OFFSET)
    now = 0
    for _ in range(2):
        now += 200 * MS
        probe(monitor, "n1", now, 0)
        probe(monitor, "n2", now, 0)
    assert not monitor.evaluate(now).fenced
    now += BOOT_GRACE_NS  # past boot, when one good round would do
    probe(monitor, "n1", now, 10 * MS)  # n1 conflicts with n3 and n2: n1 is the outlier, n3 serves on
    assert not monitor.evaluate(now).fenced
    probe(monitor, "n2", now, 10 * MS)  # now n3 is the outlier
    state = monitor.evaluate(now)
    assert state.fenced and state.cause is FenceCause.SKEWED and "beyond 9ms from n1" in state.reason
    assert monitor.fence_events == 1
    for i in range(3):
        now += 200 * MS
        probe(monitor, "n1", now, 0)
        probe(monitor, "n2", now, 0)
        assert monitor.evaluate(now).fenced == (i < 2)
    assert monitor.cause is FenceCause.WITHIN_BOUNDS and monitor.fence_events == 1


def test_monitoring_off_never_fences() -> None:
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)
    monitor.turn_off()
    probe(monitor, "n2", 0, 50 * MS)
    probe(monitor, "n3", 0, 50 * MS)
    assert not monitor.evaluate(STALE_AFTER_NS * 2).fenced
    assert OffsetMonitor("n1", [], MAX_OFFSET).evaluate(0).cause is FenceCause.NO_PEERS


def test_a_step_or_a_sample_beyond_the_limit_is_judged_at_once() -> None:
    monitor = OffsetMonitor("n3", ["n1", "n2"], MAX_OFFSET)
    assert probe(monitor, "n1", 0, 0) is Sampled.NARROWED
    assert probe(monitor, "n2", 0, 0) is Sampled.NARROWED
    assert probe(monitor, "n1", 100 * MS, 0, rtt=1 * MS) is Sampled.NARROWED  # inside the first: narrows it
    assert not monitor.evaluate(101 * MS).fenced
    t = 101 * MS + BOOT_GRACE_NS  # past boot
    assert probe(monitor, "n1", t, 2 * MS) is Sampled.ALARM  # disjoint from [-0.5, 0.5]: a step
    assert probe(monitor, "n2", t, 8 * MS, rtt=4 * MS) is Sampled.ALARM  # overlaps, but alone beyond 9 ms
    assert probe(monitor, "n2", t, 40 * MS, rtt=40 * MS) is Sampled.DROPPED  # error 20 ms: says nothing
    # Both peers step 20 ms ahead: this clock is the outlier, and `check` fences it before any round.
    for peer in ("n1", "n2"):
        assert probe(monitor, peer, t + 100 * MS, 20 * MS) is Sampled.ALARM
    state = monitor.check(t + 102 * MS)
    assert state.fenced and state.cause is FenceCause.SKEWED and monitor.fence_events == 1
    # The peers step back. `check` never unfences, however often it runs: that takes a streak of rounds.
    for i in range(3):
        for peer in ("n1", "n2"):
            probe(monitor, peer, t + (200 + 100 * i) * MS, 0)
        assert monitor.check(t + (202 + 100 * i) * MS).fenced
    assert monitor.evaluate(t + 500 * MS).fenced and monitor.evaluate(t + 600 * MS).fenced
    assert not monitor.evaluate(t + 700 * MS).fenced


def test_at_boot_the_first_good_sample_serves_and_a_wide_one_costs_no_streak() -> None:
    monitor = OffsetMonitor("n3", ["n1", "n2"], MAX_OFFSET)
    # A slow first round trip (a TLS handshake on a busy box): n1 somewhere in 5.8 +- 6.25 ms.
    sampled = probe(monitor, "n1", 0, 5_800_000, rtt=12_500_000)
    assert sampled is Sampled.ALARM and monitor.wants_check(sampled)
    state = monitor.check(13 * MS)
    assert state.fenced and state.cause is FenceCause.SKEWED and monitor.fence_events == 0
    # Precise samples narrow it. Not yet served since boot: one good judgement serves, here a check.
    sampled = probe(monitor, "n1", 100 * MS, 0, rtt=1 * MS)
    assert sampled is Sampled.NARROWED and monitor.wants_check(sampled)
    assert not monitor.check(101 * MS).fenced
    # Within the grace after first serving, the same again: the next good sample serves.
    probe(monitor, "n2", 200 * MS, 0, rtt=1 * MS)
    assert probe(monitor, "n1", 300 * MS, 20 * MS, rtt=1 * MS) is Sampled.ALARM
    assert probe(monitor, "n2", 300 * MS, 20 * MS, rtt=1 * MS) is Sampled.ALARM
    assert monitor.check(301 * MS).fenced
    assert monitor.wants_check(probe(monitor, "n1", 400 * MS, 0, rtt=1 * MS))
    assert monitor.wants_check(probe(monitor, "n2", 400 * MS, 0, rtt=1 * MS))
    assert not monitor.check(401 * MS).fenced
    # Past it, the same story takes the full streak of rounds.
    t = 101 * MS + BOOT_GRACE_NS
    assert monitor.booting and not monitor.evaluate(t).fenced and not monitor.booting
    assert not monitor.wants_check(probe(monitor, "n1", t, 0, rtt=1 * MS))
    probe(monitor, "n1", t + 100 * MS, 20 * MS, rtt=1 * MS)
    probe(monitor, "n2", t + 100 * MS, 20 * MS, rtt=1 * MS)
    assert monitor.check(t + 101 * MS).fenced
    probe(monitor, "n1", t + 200 * MS, 0, rtt=1 * MS)
    probe(monitor, "n2", t + 200 * MS, 0, rtt=1 * MS)
    assert monitor.check(t + 201 * MS).fenced and monitor.evaluate(t + 202 * MS).fenced


def test_a_step_within_the_limit_that_moves_the_median_is_judged_at_once() -> None:
    # n3 at 0 conflicts with n1 at +9.6 ms, and n2 at +1 ms makes n1 the outlier. Then n2 steps to
    # +8 ms: within the limit alone, but now n3 is the one farther from the median, and fences.
    monitor = OffsetMonitor("n3", ["n1", "n2"], MAX_OFFSET)
    assert probe(monitor, "n1", 0, 9_600_000, rtt=MS // 5) is Sampled.ALARM
    assert probe(monitor, "n2", 0, 1 * MS, rtt=MS // 5) is Sampled.NARROWED
    assert not monitor.evaluate(1 * MS).fenced
    assert probe(monitor, "n2", 100 * MS, 8 * MS, rtt=MS // 5) is Sampled.ALARM  # disjoint: a step
    assert monitor.check(101 * MS).fenced


US = 1_000  # the property below draws microseconds: an estimate's midpoint and half-width are then exact


@settings(max_examples=400, deadline=None)
@given(clocks=st.lists(st.integers(-15_000, 15_000), min_size=3, max_size=3),
       samples=st.lists(st.tuples(st.sampled_from(["n2", "n3"]), st.integers(0, 49), st.integers(0, 4_500),
                                  st.floats(-1, 1)), min_size=1, max_size=8),
       extra=st.tuples(st.sampled_from(["n2", "n3"]), st.integers(0, 4_500), st.floats(-1, 1)))
def test_a_sample_that_only_narrows_never_fences(clocks: list[int], samples, extra) -> None:
    """The premise of judging only ALARM samples between rounds: after a NARROWED one, a judgement
    at the same instant fences only if the one before it did (the rule is monotone in the bounds)."""
    true = dict(zip(["n1", "n2", "n3"], (c * US for c in clocks)))
    monitor = OffsetMonitor("n1", ["n2", "n3"], MAX_OFFSET)

    def sample(peer: str, at: int, error_us: int, noise: float) -> Sampled:
        rtt = 2 * error_us * US
        return probe(monitor, peer, at - rtt, true[peer] - true["n1"], rtt=rtt, noise=round(error_us * noise) * US)

    for peer, at_10ms, error_us, noise in sorted(samples, key=lambda x: x[1]):
        sample(peer, at_10ms * 10 * MS, error_us, noise)  # ages of whole 10 ms: drift of whole microseconds
    now = 500 * MS
    before = monitor._judge(monitor.fresh(now))[0]
    if sample(extra[0], now, extra[1], extra[2]) is Sampled.NARROWED and before is FenceCause.WITHIN_BOUNDS:
        assert monitor._judge(monitor.fresh(now))[0] is FenceCause.WITHIN_BOUNDS
