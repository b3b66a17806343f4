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
    "tools.demo",
    "tools.bench",
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
        epilog="Exit codes: 0 success, 1 negative answer (not found, unhealthy), 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"chronodb {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
