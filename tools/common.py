"""Helpers every `chronodb` subcommand shares: the default data directory and byte <-> text.

`DEFAULT_DIR` is where `chronodb up` keeps a cluster and where every other
command looks for cluster.toml; `printable` and `to_bytes` are the one way
keys and values are shown and parsed on the command line.
"""

from __future__ import annotations

from tools.errors import CliError

DEFAULT_DIR = "chronodb-data"


def printable(data: bytes) -> str:
    """Bytes as text: printable ASCII as is, everything else as \\xNN (backslash doubled)."""
    out = []
    for byte in data:
        char = chr(byte)
        if char == "\\":
            out.append("\\\\")
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def to_bytes(text: str, as_hex: bool, what: str) -> bytes:
    if not as_hex:
        return text.encode("utf-8", "surrogateescape")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CliError(f"{what} {text!r} is not hex") from None
