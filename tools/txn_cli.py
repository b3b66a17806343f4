"""`chronodb txn`: one transaction from the shell, as statements.

Role: parses statements (`get K`, `put K V`, `delete K`, `scan START END
[LIMIT]`, split like a shell line so values may be quoted; `''` as END means
to the end of the key space), runs them in order as one read-write
transaction (retried after an abort, keeping its priority, up to
`--max-attempts`) or, with `--read-only`, as reads of one snapshot, and prints
every read and the timestamp.

Output: one line per row read, `KEY<TAB>VALUE` (a key not found: `KEY` and
no tab), then `committed at TS` (or `read at TS`). `--json`: ONE object
`{"ts", "time", "reads": [{"key", "value", "version_ts"}]}`, `version_ts` null
for a key not found or the transaction's own write.

Exit codes: 0 committed (or read); 2 a bad statement or usage; 3, 4 as for
put; 5 outcome unknown (the commit may or may not have happened; never
retried); 6 aborted on every attempt (nothing of it is visible).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, Sequence

from hlc import Timestamp, format_iso
from tools.common import DEFAULT_DIR, printable, to_bytes
from tools.errors import EXIT_ABORTED, EXIT_OK, EXIT_OUTCOME_UNKNOWN, CliError
from tools.kv import TIMESTAMP_HELP, check_at, emit, parse_dur, resolve_at, with_client
from txn.client import OutcomeUnknown, TxnAborted
from txn.client.transaction import Op, apply_ops

USAGE = "statements: 'get KEY', 'put KEY VALUE', 'delete KEY', 'scan START END [LIMIT]'"
EXIT_HELP = (
    "exit codes: 0 committed, 2 bad statement or usage, 3 no node reachable, 4 no leader within the deadline, "
    "5 outcome unknown (the commit may or may not have happened), 6 aborted on every attempt (nothing visible)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "txn", help="run statements as one transaction",
        description="Run STATEMENTs as one serializable transaction: reads lock at tablet leaders, writes are "
        "buffered and commit atomically across tablets (two-phase commit), reads see the transaction's own "
        "writes. Without STATEMENTs, one statement per line is read from stdin (blank lines and # comments "
        f"skipped). {USAGE}. --read-only reads at one timestamp without locks (strong by default).",
        epilog=EXIT_HELP,
    )
    parser.add_argument("statements", nargs="*", metavar="STATEMENT")
    parser.add_argument("--read-only", action="store_true", help="a lock-free snapshot: only get and scan")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TS", help=f"with --read-only: read at TS ({TIMESTAMP_HELP})")
    when.add_argument("--stale", metavar="DUR", help="with --read-only: read at now - DUR, now from a node's clock")
    parser.add_argument("--max-attempts", type=int, default=10, help="run at most N times after aborts (default 10)", metavar="N")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory holding cluster.toml (default ./{DEFAULT_DIR})")
    parser.add_argument("--json", action="store_true", help='print one object {"ts", "time", "reads"}')
    parser.add_argument("--hex", action="store_true", help="keys and values in statements are hex")
    parser.add_argument("--timeout", default="10s", help="deadline for each request (default 10s)")
    parser.set_defaults(func=run_txn)


def parse_statement(text: str, as_hex: bool) -> Op:
    """One statement as an operation for `apply_ops`; a bad one is a usage error naming it."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise CliError(f"bad statement {text!r}: {error}") from None
    verb, args = (words[0].lower(), words[1:]) if words else ("", [])
    arity = {"get": (1,), "put": (2,), "delete": (1,), "scan": (2, 3)}
    if verb not in arity or len(args) not in arity[verb]:
        raise CliError(f"bad statement {text!r} ({USAGE})")
    if verb == "scan":
        start = to_bytes(args[0], as_hex, "START")
        end = to_bytes(args[1], as_hex, "END") if args[1] != "" else None
        if len(args) == 2:
            return ("scan", start, end)
        if not args[2].isdigit() or int(args[2]) <= 0:
            raise CliError(f"bad statement {text!r}: LIMIT must be a positive integer")
        return ("scan", start, end, int(args[2]))
    if verb == "put":
        return ("put", to_bytes(args[0], as_hex, "KEY"), to_bytes(args[1], as_hex, "VALUE"))
    return (verb, to_bytes(args[0], as_hex, "KEY"))


def parse_statements(lines: Sequence[str], as_hex: bool, read_only: bool) -> list[Op]:
    ops = [parse_statement(line, as_hex) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ops:
        raise CliError(f"no statements ({USAGE})")
    if read_only and any(op[0] in ("put", "delete") for op in ops):
        raise CliError("--read-only allows only get and scan")
    return ops


def run_txn(args: argparse.Namespace) -> int:
    if (args.at or args.stale) and not args.read_only:
        raise CliError("--at and --stale need --read-only (a read-write transaction reads the latest values)")
    if args.max_attempts < 1:
        raise CliError("--max-attempts must be at least 1")
    lines = args.statements if args.statements else sys.stdin.read().splitlines()
    ops = parse_statements(lines, args.hex, args.read_only)
    stale = parse_dur(args.stale, "--stale") if args.stale else None
    check_at(args.at)
    if args.read_only:
        ts, reads = with_client(args, lambda c, t: _snapshot(c, ops, args.at, stale))
    else:
        ts, reads = with_client(args, lambda c, t: _transaction(c, ops, args.max_attempts))
    _print(args, ts, reads)
    return EXIT_OK


async def _transaction(client, ops: list[Op], max_attempts: int) -> tuple[Timestamp | None, list]:
    async def body(tx):
        await apply_ops(tx, ops)
        return tx

    try:
        tx = await client.run_transaction(body, max_attempts=max_attempts)
    except TxnAborted as error:
        raise CliError(f"aborted after {max_attempts} attempt(s): {error}", EXIT_ABORTED) from None
    except OutcomeUnknown as error:
        raise CliError(f"outcome unknown: transaction {error.txn_id} may or may not have committed: {error}",
                       EXIT_OUTCOME_UNKNOWN) from None
    return tx.commit_ts, tx.reads


async def _snapshot(client, ops: list[Op], at_text: str | None, stale_ns: int | None) -> tuple[Timestamp, list]:
    at = await resolve_at(client, at_text)
    async with client.snapshot(at=at, stale=stale_ns) as snap:
        await apply_ops(snap, ops)
    return snap.ts, snap.reads


def _print(args: argparse.Namespace, ts: Timestamp | None, reads: list) -> None:
    if args.json:
        emit({
            "ts": None if ts is None else str(ts), "time": None if ts is None else format_iso(ts),
            "reads": [_row_json(row) for row in reads],
        })
        return
    for row in reads:
        print(printable(row.key) if row.value is None else f"{printable(row.key)}\t{printable(row.value)}")
    print(f"{'read' if args.read_only else 'committed'} at {ts if ts is not None else '(nothing to commit)'}")


def _row_json(row: Any) -> dict[str, Any]:
    return {
        "key": printable(row.key), "value": None if row.value is None else printable(row.value),
        "version_ts": None if row.version_ts is None else str(row.version_ts),
    }
