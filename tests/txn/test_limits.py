"""Size limits (txn/api/limits.py) and their place in cluster.toml (txn/api/cluster.py)."""

from __future__ import annotations

import attrs
import pytest

from txn import api
from txn.api.cluster import (
    DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES, MAX_VALUE_BYTES_CEILING, ConfigError, from_toml, to_toml, validate,
)
from txn.api.limits import MAX_TXN_ID_BYTES, WRITE_BATCH_BYTES_CEILING, oversize, txn_id_problem
from txn.node.config import generate


def test_writes_within_the_limits_pass() -> None:
    writes = [api.KeyWrite(b"k" * 10, b"v" * 100), api.KeyWrite(b"gone", None)]
    assert oversize(writes, 10, 100) is None


def test_a_long_key_is_named_with_both_sizes() -> None:
    problem = oversize([api.KeyWrite(b"k" * 11, b"v")], 10, 100)
    assert problem is not None and "11 bytes" in problem and "max_key_bytes (10)" in problem and "not written" in problem


def test_a_long_value_is_named_with_its_key() -> None:
    problem = oversize([api.KeyWrite(b"ok", b"v"), api.KeyWrite(b"big", b"v" * 101)], 10, 100)
    assert problem is not None and "101 bytes" in problem and "b'big'" in problem and "max_value_bytes (100)" in problem


def test_a_batch_over_one_command_is_refused_even_when_each_value_fits() -> None:
    value = b"v" * (4 << 20)
    writes = [api.KeyWrite(f"k{i}".encode(), value) for i in range(WRITE_BATCH_BYTES_CEILING // len(value) + 1)]
    assert oversize(writes[:2], 100, len(value)) is None
    problem = oversize(writes, 100, len(value))
    assert problem is not None and "one replicated command" in problem


def test_limits_round_trip_through_toml_and_default_when_absent() -> None:
    config = attrs.evolve(generate(nodes=3, tablets=2), max_key_bytes=100, max_value_bytes=1000)
    again = from_toml(to_toml(config))
    assert (again.max_key_bytes, again.max_value_bytes) == (100, 1000)
    old_style = "\n".join(line for line in to_toml(config).splitlines() if not line.startswith(("max_key", "max_value")))
    loaded = from_toml(old_style)
    assert (loaded.max_key_bytes, loaded.max_value_bytes) == (DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES)


@pytest.mark.parametrize("field, value", [
    ("max_key_bytes", 0), ("max_value_bytes", 0), ("max_value_bytes", MAX_VALUE_BYTES_CEILING + 1), ("max_key_bytes", 1 << 20),
])
def test_limits_out_of_range_are_refused(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field):
        validate(attrs.evolve(generate(nodes=3, tablets=2), **{field: value}))


def test_a_non_integer_limit_in_the_file_is_a_clear_error() -> None:
    text = to_toml(generate(nodes=3, tablets=2)).replace("max_value_bytes = 4194304", 'max_value_bytes = "4MiB"')
    with pytest.raises(ConfigError, match="max_value_bytes must be an integer"):
        from_toml(text)


def test_a_transaction_id_is_bounded_in_utf8_bytes() -> None:
    assert MAX_TXN_ID_BYTES == 128
    assert txn_id_problem("0123abcd4567-12") is None
    assert txn_id_problem("x" * 128) is None
    assert txn_id_problem("\U0001F600" * 32) is None  # 128 bytes in 32 characters
    problem = txn_id_problem("x" * 129)
    assert problem is not None and "129 bytes exceeds 128 bytes" in problem and len(problem) < 120
    too_wide = txn_id_problem("\U0001F600" * 33)  # 33 characters, 132 bytes: the short-string shortcut must not pass it
    assert too_wide is not None and "132 bytes" in too_wide
