"""`chronodb backup`: every tablet's MVCC state at one timestamp, into a directory.

Role: picks the backup timestamp TS (`--at`, or a strong one: a node's
`now.wall + max_offset_ns`, so every write acknowledged before the command
started is at or below it), then pulls each tablet's versions at TS in
bounded pages (`ExportRequest`, txn/api/backup.py) from whichever replica can
serve them: a replica that dies, times out or is not yet past TS is left for
the next one, resuming at the same page. With `--since BACKUP` only versions
after that backup's timestamp (tombstones included): an incremental backup.
Writes chunk files and a manifest with sha256 checksums (tools/backup_format.py).

Invariants: DEST appears only complete (written into a temporary directory
beside it, renamed at the end); writers are never blocked (replicas serve
pages like reads at TS); a TS below a replica's GC horizon fails naming the
horizon. Output: a progress line on stderr (tablets, bytes), then one
summary line (`--json`: one object) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any

import attrs
import trio

from hlc import HybridClock, Timestamp
from hlc.physical import SystemClock
from tools.backup_format import FORMAT, BackupError, encode_chunk, open_backup, sha256_hex, write_file, write_manifest
from tools.common import DEFAULT_DIR
from tools.status import tls_for_config
from tools.errors import EXIT_NO_LEADER, EXIT_OK, EXIT_UNREACHABLE, CliError
from tools.kv import parse_dur, parse_ts
from txn import api
from txn.api.cluster import TabletConfig
from txn.net.client_connection import open_client_connection
from txn.net.messaging import TransportError
from txn.node.config import ClusterConfig, ConfigError, load_config

PAGE_BYTES_DEFAULT = 1 << 20
CONNECT_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backup", help="back up every tablet at one timestamp into a directory",
        description="Export every tablet's versions at one timestamp (default: now, strong) into DEST: "
        "chunk files and a manifest with checksums. --since BACKUP writes an incremental backup holding only "
        "what changed after BACKUP's timestamp.",
    )
    parser.add_argument("dest", metavar="DEST", help="directory to create (must not exist, or be empty)")
    parser.add_argument("--at", help="backup timestamp (WALL.LOGICAL, ISO-8601, or relative like -5s); default: now")
    parser.add_argument("--since", metavar="BACKUP", help="an earlier backup of this cluster: write an incremental backup")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory of the cluster (default ./{DEFAULT_DIR})")
    parser.add_argument("--timeout", default="60s", help="give up on a tablet no replica serves within this (default 60s)")
    parser.add_argument("--page-bytes", type=int, default=PAGE_BYTES_DEFAULT, help="bytes per page and chunk file (default 1 MiB)")
    parser.add_argument("--page-delay", default="0s", help="pause between pages, to spare a busy cluster (default 0s)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.dir)
    except ConfigError as error:
        raise CliError(str(error)) from None
    dest = pathlib.Path(args.dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CliError(f"{dest} exists and is not an empty directory")
    parent = None
    if args.since is not None:
        try:
            parent = open_backup(args.since)
        except BackupError as error:
            raise CliError(str(error)) from None
        if parent.cluster_id != config.cluster_id:
            raise CliError(f"{args.since} is a backup of cluster {parent.cluster_id}, not of {config.cluster_id}")
    at = None
    if args.at is not None:
        # A relative --at (-5s) counts back from a node's clock, never this machine's.
        relative = args.at.strip().startswith(("-", "+"))
        now_ns = trio.run(strong_timestamp, config).wall - config.max_offset_ns if relative else 0
        at = parse_ts(args.at, now_ns)
    options = Options(parse_dur(args.timeout, "--timeout") / 1e9, max(1, args.page_bytes), parse_dur(args.page_delay, "--page-delay") / 1e9)
    temporary = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        summary = trio.run(backup_cluster, config, temporary, dest, at, parent, options)
        if dest.exists():
            dest.rmdir()
        os.replace(temporary, dest)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    summary["dest"] = str(dest)
    if args.json:
        print(json.dumps(summary))
    else:
        kind = "full" if parent is None else f"incremental since {summary['since']}"
        print(f"backup of cluster {config.cluster_id} at {summary['ts']} ({kind}): {summary['tablets']} tablets, "
              f"{summary['versions']} versions, {summary['bytes']} bytes in {dest}")
    return EXIT_OK


class Options:
    def __init__(self, timeout_s: float, page_bytes: int, page_delay_s: float) -> None:
        self.timeout_s = timeout_s
        self.page_bytes = page_bytes
        self.page_delay_s = page_delay_s


async def call_node(config: ClusterConfig, node_id: str, request: Any, timeout_s: float) -> Any:
    """One request on a connection of its own; TransportError if the node cannot be reached."""
    host, port = config.node(node_id).address
    clock = HybridClock(SystemClock(), config.max_offset_ns)
    async with open_client_connection(host, port, cluster_id=config.cluster_id, clock=clock, timeout_s=CONNECT_TIMEOUT_S,
                                      tls=tls_for_config(config)) as conn:
        try:
            return await conn.call(request, timeout_s=timeout_s)
        except TransportError as error:
            problem = error  # raised outside: the connection's nursery would wrap it
    raise problem


async def strong_timestamp(config: ClusterConfig) -> Timestamp:
    """A node's now + max_offset: above every write acknowledged before this call."""
    for node in config.nodes:
        try:
            reply = await call_node(config, node.id, api.TimestampRequest(), CONNECT_TIMEOUT_S)
        except TransportError:
            continue
        if isinstance(reply, api.TimestampReply):
            return Timestamp(reply.now.wall + reply.max_offset_ns, 0)
    raise CliError("no node reachable to take a backup timestamp from", EXIT_UNREACHABLE)


class Progress:
    """The progress line on stderr: rewritten in place on a terminal, a line per tablet otherwise."""

    def __init__(self, ts: Timestamp, tablets: int) -> None:
        self.ts, self.tablets, self.done, self.bytes = ts, tablets, 0, 0
        self.tty = sys.stderr.isatty()

    def show(self, final: bool = False) -> None:
        line = f"backup at {self.ts}: tablets {self.done}/{self.tablets}, {self.bytes} bytes"
        if self.tty:
            print("\r" + line, end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or self.done:
            print(line, file=sys.stderr, flush=True)


async def backup_cluster(config: ClusterConfig, out: pathlib.Path, dest: pathlib.Path, at: Timestamp | None, parent, options: Options) -> dict[str, Any]:
    ts = at if at is not None else await strong_timestamp(config)
    since = None if parent is None else parent.ts
    if since is not None and since >= ts:
        raise CliError(f"the backup timestamp {ts} is not after the earlier backup's {since}")
    progress = Progress(ts, len(config.tablets))
    files: dict[str, str] = {}
    tablets = []
    for index, tablet in enumerate(config.tablets):
        entry = await backup_tablet(config, tablet, index, ts, since, out, files, progress, options)
        tablets.append(entry)
        progress.done += 1
        progress.show(final=progress.done == len(config.tablets))
    manifest = {
        "format": FORMAT, "cluster_id": config.cluster_id, "ts": str(ts), "since": None if since is None else str(since),
        "parent": None if parent is None else {
            "path": os.path.relpath(parent.path.resolve(), dest.resolve()),
            "ts": str(parent.ts), "manifest_sha256": parent.manifest_sha256},
        "max_offset_ns": config.max_offset_ns, "settings": cluster_settings(config), "tablets": tablets, "files": files,
        "created_ns": time.time_ns(),
    }
    write_manifest(out, manifest)
    return {"cluster_id": config.cluster_id, "ts": str(ts), "since": manifest["since"], "tablets": len(tablets),
            "versions": sum(t["versions"] for t in tablets), "bytes": sum(t["bytes"] for t in tablets)}


def cluster_settings(config: ClusterConfig) -> dict[str, Any]:
    """What of cluster.toml a restore carries over besides max_offset: GC retention, size limits, [limits]."""
    return {"gc_retention_ns": config.gc_retention_ns, "max_key_bytes": config.max_key_bytes,
            "max_value_bytes": config.max_value_bytes, "limits": attrs.asdict(config.limits)}


async def backup_tablet(config: ClusterConfig, tablet: TabletConfig, index: int, ts: Timestamp, since: Timestamp | None,
                        out: pathlib.Path, files: dict[str, str], progress: Progress, options: Options) -> dict[str, Any]:
    """Pull one tablet's pages, moving to the next replica whenever one fails; resumes where it stopped."""
    order = [tablet.replicas[(index + i) % len(tablet.replicas)] for i in range(len(tablet.replicas))]
    chunks: list[str] = []
    served_by: list[str] = []
    versions = size = 0
    resume: bytes | None = None
    done = False
    last_problem = "no replica answered"
    deadline = trio.current_time() + options.timeout_s
    attempt = 0
    while not done:
        remaining_s = deadline - trio.current_time()
        if remaining_s <= 0:
            raise CliError(f"no replica of tablet {tablet.id} served the backup at {ts} within the timeout: {last_problem}", EXIT_NO_LEADER)
        node_id = order[attempt % len(order)]  # the same replica as long as it serves
        host, port = config.node(node_id).address
        clock = HybridClock(SystemClock(), config.max_offset_ns)
        fatal: str | None = None
        try:
            async with open_client_connection(host, port, cluster_id=config.cluster_id, clock=clock, timeout_s=CONNECT_TIMEOUT_S,
                                      tls=tls_for_config(config)) as conn:
                # Errors are kept and raised outside: the connection's nursery would wrap them.
                while True:
                    page_timeout_s = max(0.1, min(remaining_s, options.timeout_s / 4, 10.0))
                    request = api.ExportRequest(tablet.id, ts, since, resume, options.page_bytes, int(page_timeout_s * 1e9))
                    try:
                        reply = await conn.call(request, timeout_s=page_timeout_s + 1.0)
                    except TransportError as error:
                        last_problem = f"{node_id}: {error}"
                        break
                    if isinstance(reply, api.ErrorReply):
                        if reply.code in (api.ErrorCode.BELOW_GC_HORIZON, api.ErrorCode.FUTURE_READ, api.ErrorCode.BAD_REQUEST):
                            fatal = f"backup refused by {node_id}: {reply.message}"
                        last_problem = f"{node_id}: {reply}"
                        break
                    assert isinstance(reply, api.ExportReply) and reply.ts == ts, reply
                    if not served_by or served_by[-1] != reply.served_by:
                        served_by.append(reply.served_by)
                    if reply.versions:
                        name = f"tablets/{tablet.id}/{len(chunks) + 1:06d}.cbor"
                        data = encode_chunk([(v.key, v.ts, v.value) for v in reply.versions])
                        write_file(out / name, data)
                        files[name] = sha256_hex(data)
                        chunks.append(name)
                        versions += len(reply.versions)
                        size += len(data)
                        progress.bytes += len(data)
                        progress.show()
                    resume = reply.resume
                    if resume is None:
                        done = True
                        break
                    if options.page_delay_s:
                        await trio.sleep(options.page_delay_s)
        except TransportError as error:  # could not connect
            last_problem = f"{node_id}: {error}"
        if fatal is not None:
            raise CliError(fatal)
        if not done:
            attempt += 1
            await trio.sleep(RETRY_PAUSE_S)
    return {"id": tablet.id, "start": tablet.start.hex(), "end": None if tablet.end is None else tablet.end.hex(),
            "chunks": chunks, "versions": versions, "bytes": size, "served_by": served_by}
