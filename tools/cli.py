"""The `chronodb` console command: parses arguments and dispatches.

Role: the single entry point (`chronodb = tools.cli:main`). Each subcommand
lives in its own module with a `register(subparsers)` function that adds its
parser and sets `func(args) -> int`; `COMMAND_MODULES` lists them in the order
`--help` shows them, and `COMMANDS` says which module registers each command,
so that `chronodb get ...` imports only tools/kv.py and what it needs (about
0.5 s of CPU instead of 1.5 s for every module: the nodes, the simulation,
networkx, matplotlib). `--help`, no command or an unknown one imports all.
tests/test_cli.py checks that COMMANDS matches what the modules register.

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
    "tools.repair",
    "tools.inspector",
    "tools.backup",
    "tools.restore",
    "tools.demo",
    "tools.bench",
    "tools.verify",
    "tools.sim",
)


# command -> the module that registers it
COMMANDS: dict[str, str] = {
    "up": "tools.up", "node": "tools.node", "cert": "tools.cert", "status": "tools.status",
    "put": "tools.kv", "delete": "tools.kv", "get": "tools.kv", "scan": "tools.kv", "txn": "tools.txn_cli",
    "skew": "tools.skew", "fault": "tools.fault", "repair": "tools.repair", "inspect": "tools.inspector", "backup": "tools.backup",
    "restore": "tools.restore", "demo": "tools.demo", "bench": "tools.bench", "verify": "tools.verify",
    "sim": "tools.sim",
}


def version() -> str:
    try:
        return importlib.metadata.version("chronodb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with just `command`'s module when it is known."""
    parser = argparse.ArgumentParser(
        prog="chronodb",
        description="chronodb: a timestamp-ordered, transactional key-value store.",
        epilog="Exit codes: 0 success, 1 negative answer (not found, unhealthy), 2 bad usage or configuration, "
        "3 no node reachable, 4 no leader within the deadline, 5 outcome unknown (a write may or may not have committed), "
        "6 transaction aborted on every attempt.",
    )
    parser.add_argument("--version", action="version", version=f"chronodb {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command named by argv (its first argument, unless that is an option)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


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
    arguments = join_negative_values(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(arguments))
    args = parser.parse_args(arguments)
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
