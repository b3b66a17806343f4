"""`chronodb bench kv` names its errors: under a row with errors, how many of each kind, with
the first one's text, from all client processes together (tools/bench_kv.py)."""

from __future__ import annotations

from tools.bench_kv import error_line, merge_error_kinds


def test_error_kinds_of_all_client_processes_are_added_keeping_the_first_text() -> None:
    merged = merge_error_kinds([
        {"OutcomeUnknown": [3, "write to tablet t2 sent to n3, then connection lost"]},
        {},
        {"OutcomeUnknown": [2, "a later text"], "Unavailable": [1, "no replica answered"]},
    ])
    assert merged == {"OutcomeUnknown": [5, "write to tablet t2 sent to n3, then connection lost"],
                      "Unavailable": [1, "no replica answered"]}


def test_the_error_line_puts_the_most_frequent_kind_first_and_cuts_long_texts() -> None:
    line = error_line({"Unavailable": [1, "no replica answered"], "OutcomeUnknown": [5, "x" * 500]}, text_chars=20)
    assert line == "  errors: OutcomeUnknown 5 (first: 'xxxxxxxxxxxxxxxxxxxx'); Unavailable 1 (first: 'no replica answered')"
    assert not line.lstrip().startswith(("write", "strong-read", "past-read"))  # vs_etcd.sh parses rows by that
