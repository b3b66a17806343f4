"""`chronodb put | get | delete | scan`: timestamped reads and writes from the shell.

Role: a thin layer over txn/client.py. Keys and values are given as text
(UTF-8) or, with `--hex`, as hex. Output prints bytes as text, escaping
anything unprintable as `\\xNN`; `--json` prints one object per line.

Exit codes (each with one one-line message on stderr):
  0 done   1 not found   2 bad usage or configuration, or refused (e.g. a value
  over max_value_bytes: definitely not written)
  3 no node reachable (connection refused)   4 no leader (or no replica) within the deadline
  5 outcome unknown: the write may or may not have committed
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from hlc import Timestamp, format_iso, parse_duration_ns, parse_user_timestamp
from tools.errors import (
    EXIT_NEGATIVE, EXIT_NO_LEADER, EXIT_OK, EXIT_OUTCOME_UNKNOWN, EXIT_UNREACHABLE, EXIT_USAGE, CliError,
)
from txn.client import ClientError, NoLeader, OutcomeUnknown, Refused, RequestTimeout, TooLarge, Unreachable, open_client
from txn.net.tls import DEFAULT_CLIENT, CertError, ClientTls, client_tls_for_dir
from txn.node.config import ConfigError, load_config
from tools.common import DEFAULT_DIR, printable, to_bytes

EXIT_CODES_HELP = (
    "exit codes: 0 done, 1 not found, 2 bad usage or configuration, or refused (definitely not written), 3 no node reachable "
    "(connection refused), 4 no leader within the deadline, 5 outcome unknown (the write may or "
    "may not have committed; never reported as failed or as done)"
)
TIMESTAMP_HELP = "WALL.LOGICAL, an ISO-8601 time, or relative to now such as -5s or -250ms"


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory holding cluster.toml (default ./{DEFAULT_DIR})")
    parser.add_argument("--user", default=DEFAULT_CLIENT,
                        help=f"client certificate DIR/certs/client.USER.crt to connect with (default {DEFAULT_CLIENT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--hex", action="store_true", help="KEY, VALUE, START and END are hex")
    parser.add_argument("--timeout", default="10s", help="deadline for the whole request (default 10s)")


def register(subparsers: argparse._SubParsersAction) -> None:
    put = subparsers.add_parser(
        "put", help="write a value; prints its commit timestamp",
        description="Write VALUE at KEY. Prints the commit timestamp, acknowledged only after the "
        "write is on a majority and commit-wait has passed. A value too long for the command line: "
        "--value-file F (raw bytes, - for standard input). Keys and values over the cluster's "
        "max_key_bytes / max_value_bytes (cluster.toml) are refused before anything is sent (exit 2).",
        epilog=EXIT_CODES_HELP,
    )
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value (or use --value-file)")
    put.add_argument("--value-file", metavar="F", help="read the value's raw bytes from file F (- for standard input)")
    add_common(put)
    put.set_defaults(func=run_put)

    delete = subparsers.add_parser(
        "delete", help="delete a key; prints the commit timestamp",
        description="Delete KEY (writes a tombstone; older versions stay readable at past timestamps).",
        epilog=EXIT_CODES_HELP,
    )
    delete.add_argument("key")
    add_common(delete)
    delete.set_defaults(func=run_delete)

    get = subparsers.add_parser(
        "get", help="read a key, now or at a timestamp",
        description="Read KEY. Default: a strong read that sees every write acknowledged before it "
        "began. --at reads at a timestamp; --stale DUR reads at now - DUR (served by the nearest "
        "replica, now on its clock); --max-stale DUR reads at the freshest timestamp a nearby replica "
        "can serve without waiting, but no older than now - DUR.", epilog=EXIT_CODES_HELP,
    )
    get.add_argument("key")
    when = get.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TS", help=TIMESTAMP_HELP)
    when.add_argument("--stale", metavar="DUR", help="exact staleness, e.g. 5s")
    when.add_argument("--max-stale", metavar="DUR", help="bounded staleness, e.g. 10s")
    add_common(get)
    get.set_defaults(func=run_get)

    scan = subparsers.add_parser(
        "scan", help="list keys in [START, END) at one timestamp",
        description="Print KEY<TAB>VALUE for every live key in [START, END), in key order, across "
        "tablets, all at one timestamp. END '' means to the end of the key space.",
        epilog=EXIT_CODES_HELP,
    )
    scan.add_argument("start")
    scan.add_argument("end")
    scan.add_argument("--at", metavar="TS", help=TIMESTAMP_HELP)
    scan.add_argument("--limit", type=int, default=None, help="at most N rows")
    add_common(scan)
    scan.set_defaults(func=run_scan)


def run_put(args: argparse.Namespace) -> int:
    key, value = to_bytes(args.key, args.hex, "KEY"), put_value(args)
    return _print_write(args, key, with_client(args, lambda c, t: c.put(key, value, timeout_s=t)))


def put_value(args: argparse.Namespace) -> bytes:
    """VALUE from the command line, or the raw bytes of --value-file (- is standard input)."""
    if (args.value is None) == (args.value_file is None):
        raise CliError("give either VALUE or --value-file F (- for standard input)")
    if args.value is not None:
        return to_bytes(args.value, args.hex, "VALUE")
    if args.value_file == "-":
        return sys.stdin.buffer.read()
    try:
        with open(args.value_file, "rb") as file:
            return file.read()
    except OSError as error:
        raise CliError(f"cannot read --value-file {args.value_file}: {error.strerror or error}") from None


def run_delete(args: argparse.Namespace) -> int:
    key = to_bytes(args.key, args.hex, "KEY")
    return _print_write(args, key, with_client(args, lambda c, t: c.delete(key, timeout_s=t)))


def _print_write(args: argparse.Namespace, key: bytes, result: Any) -> int:
    if args.json:
        emit({"key": printable(key), "ts": str(result.ts), "time": format_iso(result.ts)})
    else:
        print(result.ts)
    return EXIT_OK


def run_get(args: argparse.Namespace) -> int:
    key = to_bytes(args.key, args.hex, "KEY")
    stale = parse_dur(args.stale, "--stale") if args.stale else None
    max_stale = parse_dur(args.max_stale, "--max-stale") if args.max_stale else None
    check_at(args.at)

    async def get(client, timeout_s):
        at = await resolve_at(client, args.at)
        return await client.get(key, at=at, stale_ns=stale, max_stale_ns=max_stale, timeout_s=timeout_s)

    result = with_client(args, get)
    if args.json:
        emit({
            "key": printable(key), "value": None if result.value is None else printable(result.value),
            "ts": str(result.ts), "version_ts": None if result.version_ts is None else str(result.version_ts),
            "served_by": result.served_by,
        })
    elif result.value is None:
        print("not found", file=sys.stderr)
    else:
        print(printable(result.value))
    return EXIT_OK if result.value is not None else EXIT_NEGATIVE


def run_scan(args: argparse.Namespace) -> int:
    start = to_bytes(args.start, args.hex, "START")
    end = to_bytes(args.end, args.hex, "END") if args.end != "" else None
    if args.limit is not None and args.limit <= 0:
        raise CliError("--limit must be positive")
    check_at(args.at)

    async def scan(client, timeout_s):
        return await client.scan(start, end, at=await resolve_at(client, args.at), limit=args.limit, timeout_s=timeout_s)

    result = with_client(args, scan)
    for row in result.rows:
        if args.json:
            emit({"key": printable(row.key), "value": printable(row.value), "version_ts": str(row.version_ts)})
        else:
            print(f"{printable(row.key)}\t{printable(row.value)}")
    return EXIT_OK


def parse_ts(text: str, now_ns: int) -> Timestamp:
    try:
        return parse_user_timestamp(text, now_ns)
    except ValueError as error:
        raise CliError(f"bad timestamp: {error}") from None


def check_at(text: str | None) -> str | None:
    """A usage error for a malformed `--at` before anything connects."""
    if text:
        parse_ts(text, 1 << 62)
    return text


async def resolve_at(client, text: str | None) -> Timestamp | None:
    """`--at TS`; a relative one (-5s) is relative to a node's clock (TimestampRequest), not this machine's."""
    if not text:
        return None
    relative = text.strip()[:1] in ("-", "+")
    return parse_ts(text, (await client.node_timestamp()).now.wall if relative else 0)


def parse_dur(text: str, flag: str) -> int:
    try:
        value = parse_duration_ns(text)
    except ValueError as error:
        raise CliError(f"bad {flag}: {error}") from None
    if value < 0:
        raise CliError(f"{flag} must not be negative")
    return value


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def cluster_addresses(data_dir: str) -> tuple[str, list[tuple[str, int]], int]:
    try:
        config = load_config(data_dir)
    except ConfigError as error:
        raise CliError(str(error)) from None
    return config.cluster_id, [node.address for node in config.nodes], config.max_offset_ns


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """The client certificate of DIR (None when DIR was started --insecure)."""
    try:
        return client_tls_for_dir(args.dir, getattr(args, "user", DEFAULT_CLIENT))
    except CertError as error:
        raise CliError(str(error)) from None


def with_client(args: argparse.Namespace, operation) -> Any:
    """Run one client operation against the cluster of `args.dir`, mapping errors to exit codes."""
    cluster_id, addresses, max_offset_ns = cluster_addresses(args.dir)
    timeout_s = parse_dur(args.timeout, "--timeout") / 1e9
    tls = client_tls(args)

    async def go() -> Any:
        async with open_client(addresses, cluster_id=cluster_id, max_offset_ns=max_offset_ns, timeout_s=timeout_s,
                               tls=tls) as client:
            return await operation(client, timeout_s)

    try:
        return trio.run(go)
    except Unreachable as error:
        raise CliError(f"no node reachable: {error}", EXIT_UNREACHABLE) from None
    except NoLeader as error:
        raise CliError(f"no leader: {error}", EXIT_NO_LEADER) from None
    except RequestTimeout as error:
        raise CliError(f"timed out: {error}", EXIT_NO_LEADER) from None
    except OutcomeUnknown as error:
        raise CliError(f"outcome unknown: {error}", EXIT_OUTCOME_UNKNOWN) from None
    except (Refused, TooLarge) as error:
        raise CliError(f"refused: {error}", EXIT_USAGE) from None
    except ClientError as error:
        raise CliError(str(error), EXIT_USAGE) from None
