"""The `chronodb` console command: parses arguments and dispatches.

Role: the single entry point (`chronodb = tools.cli:main`). Each subcommand
lives in its own module with a `register(subparsers)` function that adds its
parser and sets `func(args) -> int`; `COMMAND_MODULES` lists them in the order
`--help` shows them.

Invariants: every failure a user can cause ends as one line on stderr,
`chronodb: <what went wrong>`, and a non-zero exit code (tools/errors.py);
a traceback means a bug of ours.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from typing import Sequence

from tools.errors import EXIT_USAGE, CliError

COMMAND_MODULES: tuple[str, ...] = (
    "tools.up",
    "tools.node",
    "tools.cert",
    "tools.status",
    "tools.kv",
    "tools.txn_cli",
    "tools.skew",
    "tools.fault",
    "tools.inspector",
    "tools.backup",
    "tools.restore",
    "tools.demo",
    "tools.bench",
    "tools.verify",
    "tools.sim",
)


def version() -> str:
    try:
        return importlib.metadata.version("chronodb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronodb",
        description="chronodb: a timestamp-ordered, transactional key-value store.",
        epilog="Exit codes: 0 success, 1 negative answer (not found, unhealthy), 2 bad usage or configuration, "
        "3 no node reachable, 4 no leader within the deadline, 5 outcome unknown (a write may or may not have committed), "
        "6 transaction aborted on every attempt.",
    )
    parser.add_argument("--version", action="version", version=f"chronodb {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


NEGATIVE_VALUE_FLAGS = ("--at", "--offset", "--bump", "--strobe")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--at -5s` as `--at=-5s`: argparse would take `-5s` for an option."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in NEGATIVE_VALUE_FLAGS and i + 1 < len(items) and items[i + 1][:2].startswith("-") \
                and items[i + 1][1:2].isdigit():
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"chronodb: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
