"""`chronodb txn` statements: parsing and usage errors, without a cluster."""

from __future__ import annotations

import pytest

from tools.errors import EXIT_USAGE, CliError
from tools.txn_cli import parse_statement, parse_statements


@pytest.mark.parametrize("text, op", [
    ("get alice", ("get", b"alice")),
    ("GET alice", ("get", b"alice")),
    ("put bob 10", ("put", b"bob", b"10")),
    ("put 'a key' 'two words'", ("put", b"a key", b"two words")),
    ("delete carol", ("delete", b"carol")),
    ("scan a z", ("scan", b"a", b"z")),
    ("scan a ''", ("scan", b"a", None)),
    ("scan a z 5", ("scan", b"a", b"z", 5)),
])
def test_statements(text, op):
    assert parse_statement(text, as_hex=False) == op


def test_hex_statements():
    assert parse_statement("put 00ff 0a", as_hex=True) == ("put", b"\x00\xff", b"\x0a")


@pytest.mark.parametrize("text", ["", "frob a", "get", "get a b", "put a", "delete", "scan a", "scan a z 0",
                                  "scan a z x", "put 'unclosed v"])
def test_bad_statements_are_usage_errors(text):
    with pytest.raises(CliError) as raised:
        parse_statement(text, as_hex=False)
    assert raised.value.exit_code == EXIT_USAGE and "\n" not in str(raised.value)


def test_bad_hex_is_a_usage_error():
    with pytest.raises(CliError, match="not hex"):
        parse_statement("get zz", as_hex=True)


def test_stdin_lines_skip_blanks_and_comments():
    assert parse_statements(["# transfer", "", "get a", "  put b 1"], False, False) == [("get", b"a"), ("put", b"b", b"1")]


def test_no_statements_and_writes_in_read_only_are_usage_errors():
    with pytest.raises(CliError, match="no statements"):
        parse_statements(["", "# nothing"], False, False)
    with pytest.raises(CliError, match="read-only"):
        parse_statements(["get a", "delete b"], False, True)
