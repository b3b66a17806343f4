"""A scan reply is bounded whatever limit the request asks for (txn/api/limits.py), and says
when it was cut short, so a client pages on instead of taking it for the end of the range."""

from __future__ import annotations

import trio

from hlc import Timestamp
from tests.txn.test_node_metrics import ask, one_node
from txn import api
from txn.api.limits import MAX_SCAN_REPLY_BYTES, MAX_SCAN_ROWS, scan_page
from txn.node.wiring import serve_node

TIMEOUT_NS = 10_000_000_000


def rows(count: int, value_bytes: int) -> list[api.Row]:
    return [api.Row(b"k%05d" % i, b"v" * value_bytes, Timestamp(1, 0)) for i in range(count)]


def test_a_page_within_bounds_is_whole() -> None:
    page, more = scan_page(rows(10, 100), limit=10)
    assert len(page) == 10 and not more


def test_a_page_over_the_byte_bound_is_cut_and_says_so() -> None:
    value_bytes = MAX_SCAN_REPLY_BYTES // 4
    page, more = scan_page(rows(10, value_bytes), limit=10)
    assert 1 <= len(page) < 10 and more
    assert sum(len(r.key) + len(r.value) for r in page) <= MAX_SCAN_REPLY_BYTES


def test_one_row_larger_than_the_bound_still_goes_alone() -> None:
    page, more = scan_page(rows(2, MAX_SCAN_REPLY_BYTES + 1), limit=2)
    assert len(page) == 1 and more


def test_the_row_bound_caps_an_unbounded_limit() -> None:
    page, more = scan_page(rows(MAX_SCAN_ROWS, 1), limit=10**9)
    assert len(page) == MAX_SCAN_ROWS and more
    _, more = scan_page(rows(MAX_SCAN_ROWS, 1), limit=MAX_SCAN_ROWS)
    assert not more  # exactly what was asked: the client's own paging goes on


async def test_a_node_bounds_scan_replies_and_marks_them() -> None:
    node, env = one_node()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_node, node, env)
        with trio.fail_after(30):
            while not all(r.leader_hint() == "n1" for r in node.replicas.values()):
                await trio.sleep(0.02)
        for first in range(0, MAX_SCAN_ROWS + 200, 100):
            writes = tuple(api.KeyWrite(b"a%05d" % i, b"x") for i in range(first, first + 100))
            assert isinstance(await ask(node, api.WriteRequest("t1", writes, TIMEOUT_NS)), api.WriteReply)
        big = b"y" * (MAX_SCAN_REPLY_BYTES // 4)  # four rows with their keys are just over the bound
        for i in range(5):
            assert isinstance(await ask(node, api.WriteRequest("t1", (api.KeyWrite(b"b%d" % i, big),), TIMEOUT_NS)), api.WriteReply)

        everything = await ask(node, api.ScanRequest("t1", b"a", b"b", api.ReadMode.STRONG, None, 10**9, TIMEOUT_NS))
        assert isinstance(everything, api.ScanReply)
        assert len(everything.rows) == MAX_SCAN_ROWS and everything.more
        heavy = await ask(node, api.ScanRequest("t1", b"b", b"c", api.ReadMode.STRONG, None, 100, TIMEOUT_NS))
        assert isinstance(heavy, api.ScanReply) and len(heavy.rows) == 3 and heavy.more
        rest = await ask(node, api.ScanRequest("t1", heavy.rows[-1].key + b"\x00", b"c", api.ReadMode.AT, heavy.ts, 100, TIMEOUT_NS))
        assert isinstance(rest, api.ScanReply) and len(rest.rows) == 2 and not rest.more
        nursery.cancel_scope.cancel()
