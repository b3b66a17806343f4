"""`chronodb restore`: a new cluster directory holding exactly a backup's state at a timestamp.

Role: reads a backup chain (tools/backup_format.py: a full backup and the
incrementals after it; an incremental backup's manifest names its parent,
so naming the last one is enough), checks every file's sha256, then writes
offline, with the MVCC store, each replica's LevelDB of a new cluster (new
cluster id, `--nodes` nodes from `--port`, metrics ports from `--port` +
1000 as `up` gives them, the backup's tablet ranges):
every version at its original timestamp, up to TS (default: the chain's
last timestamp). `chronodb up --dir NEWDIR` then serves it.

Each replica's tablet metadata (txn/tablet/state.py) says applied index 0
(an empty Paxos log) and safe time TS, so every replica serves reads at TS at
once and a new leader's first timestamps (its barrier, from its clock) are
above TS. The MVCC GC horizon is set to the full backup's timestamp: below
it the restored cluster lacks the history, so a read there fails naming
that horizon instead of answering wrongly.

Invariants: nothing is half-restored: all checks come first, the cluster is
written into a temporary directory beside NEWDIR and renamed at the end. A
missing or corrupt file, a chain with a gap, a TS outside the chain, or a
non-empty NEWDIR: one line and exit 2.
"""

from __future__ import annotations

import argparse
import time
import json
import os
import pathlib
import shutil

import attrs

from hlc import Timestamp
from mvcc.engine import Batch
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.store import MvccStore
from tools.backup_format import Backup, BackupError, TabletRange, chain_up_to, load_chain, verify_files
from tools.common import DEFAULT_DIR
from tools.errors import EXIT_OK, CliError
from tools.kv import parse_ts
from txn.node.config import ClusterConfig, ConfigError, ensure_node_dir, generate, tablet_dir, validate, write_config
from txn.api.cluster import TransportLimits
from txn.tablet.state import APPLIED_KEY, SAFE_TS_KEY

BATCH_VERSIONS = 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore", help="create a new cluster directory from a backup (chain) at a timestamp",
        description="Create NEWDIR as a new cluster (new id) whose replicas hold exactly the backed-up state at TS "
        "(default: the last backup's timestamp). Name the last backup of a chain (its parents are found through "
        "their recorded paths) or every member. Then run `chronodb up --dir NEWDIR`.",
    )
    parser.add_argument("sources", metavar="SRC", nargs="+", help="backup directory (the newest of a chain), or several")
    parser.add_argument("--dir", default=DEFAULT_DIR, help="new cluster directory: must not exist or be empty")
    parser.add_argument("--at", help="restore this timestamp (within the chain); default: the newest backup's")
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the new cluster (default 3)")
    parser.add_argument("--port", type=int, default=7400, help="first node's port; the others follow, and metrics ports 1000 above (default 7400)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    new_dir = pathlib.Path(args.dir)
    if new_dir.exists() and (not new_dir.is_dir() or any(new_dir.iterdir())):
        raise CliError(f"{new_dir} exists and is not empty: restore needs a new directory")
    try:
        chain = load_chain(args.sources)
        needed, target = chain_up_to(chain, None if args.at is None else parse_ts(args.at, time.time_ns()))
        for backup in needed:
            verify_files(backup)
        config = restored_config(needed[0], args.nodes, args.port)
    except (BackupError, ConfigError) as error:
        raise CliError(str(error)) from None
    temporary = new_dir.parent / f".{new_dir.name}.restore-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        versions = write_cluster(temporary, config, needed, target)
        if new_dir.exists():
            new_dir.rmdir()
        os.replace(temporary, new_dir)
    except BackupError as error:
        raise CliError(str(error)) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    summary = {"dir": str(new_dir), "cluster_id": config.cluster_id, "source_cluster_id": needed[0].cluster_id,
               "ts": str(target), "backups": [str(b.path) for b in needed], "tablets": len(config.tablets),
               "versions": versions, "nodes": [f"{n.host}:{n.port}" for n in config.nodes]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"restored {versions} versions of {len(config.tablets)} tablets at {target} from {len(needed)} backup(s) "
              f"into {new_dir} (cluster {config.cluster_id}, nodes {', '.join(summary['nodes'])}); "
              f"start it with: chronodb up --dir {new_dir}")
    return EXIT_OK


def restored_config(base: Backup, nodes: int, port: int) -> ClusterConfig:
    """A new cluster (fresh id) with the backup's tablets: same ids and ranges, replicas spread as `generate` does;
    and the source's max_offset, GC retention, size limits and [limits] (`settings`; a backup made before
    they were recorded restores with the defaults)."""
    ranges: tuple[TabletRange, ...] = base.ranges()
    config = generate(nodes=nodes, tablets=len(ranges), port=port, max_offset_ns=base.manifest["max_offset_ns"])
    tablets = [attrs.evolve(t, id=r.id, start=r.start, end=r.end) for t, r in zip(config.tablets, ranges)]
    config = attrs.evolve(config, tablets=tablets)
    settings = base.manifest.get("settings")
    if settings is not None:
        try:
            known = attrs.fields_dict(TransportLimits)
            config = attrs.evolve(
                config, gc_retention_ns=int(settings["gc_retention_ns"]), max_key_bytes=int(settings["max_key_bytes"]),
                max_value_bytes=int(settings["max_value_bytes"]),
                limits=TransportLimits(**{k: int(v) for k, v in settings["limits"].items() if k in known}))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BackupError(f"backup {base.path}: its recorded cluster settings are malformed ({error!r})") from None
    validate(config)
    return config


def write_cluster(directory: pathlib.Path, config: ClusterConfig, needed: list[Backup], target: Timestamp) -> int:
    """cluster.toml, node directories, and every replica's LevelDB; returns the versions written per replica set."""
    write_config(directory, config)
    for node in config.nodes:
        ensure_node_dir(directory, config, node.id)
    total = 0
    for tablet in config.tablets:
        engines = [LevelDbEngine(str(tablet_dir(directory, node_id, tablet.id))) for node_id in tablet.replicas]
        try:
            stores = [MvccStore(engine, prefix=b"m") for engine in engines]
            batches = [Batch() for _ in engines]
            for backup in needed:
                for key, ts, value in backup.versions(tablet.id):
                    if not tablet.contains(key):
                        raise BackupError(f"backup {backup.path}: key {key!r} lies outside tablet {tablet.id}")
                    if ts > target:
                        continue
                    if backup.since is not None and not backup.since < ts:
                        raise BackupError(f"backup {backup.path}: a version at {ts} is not after the backup's start {backup.since}")
                    for store, batch in zip(stores, batches):
                        store.stage_write(batch, key, ts, value)
                    total += 1
                    if len(batches[0]) >= BATCH_VERSIONS:
                        for engine, batch in zip(engines, batches):
                            engine.apply(batch, sync=False)
                        batches = [Batch() for _ in engines]
            for engine, store, batch in zip(engines, stores, batches):
                # A fresh replica: empty Paxos log, applied index 0, safe time TS; no history below the full backup.
                batch.put(APPLIED_KEY, (0).to_bytes(8, "big"))
                batch.put(SAFE_TS_KEY, target.to_bytes())
                batch.put(store.space.horizon_key, needed[0].ts.to_bytes())
                engine.apply(batch, sync=True)
        finally:
            for engine in engines:
                engine.close()
    return total
