"""tools/flamegraph.py: py-spy's collapsed stacks to the top functions by self time and a flame graph,
on a small hand-written recording."""

from __future__ import annotations

import pytest

from tools.flamegraph import EMPTY_STACK, format_top, parse_collapsed, render_svg, top_self

# py-spy --format raw: frames root first, the sample count last. The fourth line is a torn
# sample (--nonblocking caught the stack mid-change), the last an empty one.
COLLAPSED = """\
main (tools/node.py:60);run (trio/_core/_run.py:2424);apply (mvcc/engine_leveldb.py:174) 7
main (tools/node.py:60);run (trio/_core/_run.py:2424);decode (txn/wire/codec.py:456) 2
main (tools/node.py:60);run (trio/_core/_run.py:2424) 3
decode (txn/wire/codec.py:456) 1
main (tools/node.py:60);run (trio/_core/_run.py:2424);apply (mvcc/engine_leveldb.py:174) 1
 2
"""


def test_collapsed_stacks_add_up_per_stack() -> None:
    stacks = parse_collapsed(COLLAPSED)
    assert stacks[("main (tools/node.py:60)", "run (trio/_core/_run.py:2424)", "apply (mvcc/engine_leveldb.py:174)")] == 8
    assert stacks[("decode (txn/wire/codec.py:456)",)] == 1
    assert stacks[()] == 2
    assert sum(stacks.values()) == 16
    with pytest.raises(ValueError, match="line 1"):
        parse_collapsed("main (tools/node.py:60);run\n")


def test_self_time_goes_to_the_leaf_frame_ranked_most_first() -> None:
    assert top_self(parse_collapsed(COLLAPSED)) == [
        ("apply (mvcc/engine_leveldb.py:174)", 8),
        ("decode (txn/wire/codec.py:456)", 3),  # 2 under run and 1 torn sample: same function
        ("run (trio/_core/_run.py:2424)", 3),  # ties by name
        (EMPTY_STACK, 2),
    ]
    assert top_self(parse_collapsed(COLLAPSED), count=2) == top_self(parse_collapsed(COLLAPSED))[:2]


def test_the_summary_gives_shares_of_all_samples() -> None:
    text = format_top("n1 insecure-write-c4", parse_collapsed(COLLAPSED), count=2)
    assert text.splitlines() == [
        "== n1 insecure-write-c4: 16 samples, top 2 functions by self time",
        "   50.0%       8  apply (mvcc/engine_leveldb.py:174)",
        "   18.8%       3  decode (txn/wire/codec.py:456)",
    ]
    assert "no samples" in format_top("n2 idle", {})


def test_the_flame_graph_draws_each_frame_as_wide_as_its_samples() -> None:
    svg = render_svg(parse_collapsed(COLLAPSED), "n1 <write>")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "n1 &lt;write&gt; (16 samples)" in svg
    # 1200 px for 16 samples: all 1200, main 13 samples, apply under run 8, the torn decode 1.
    assert '<title>all (16 samples, 100.00%)</title><rect x="0.00" y=' in svg
    # Callees side by side in name order: the torn decode (1 sample) first, then main.
    assert '<title>main (tools/node.py:60) (13 samples, 81.25%)</title><rect x="75.00" y=' in svg
    assert 'width="975.00"' in svg and 'width="600.00"' in svg and 'width="75.00"' in svg
    assert render_svg(parse_collapsed(COLLAPSED), "n1") == render_svg(parse_collapsed(COLLAPSED), "n1")
    assert "<svg" in render_svg({}, "idle")
