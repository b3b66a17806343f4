"""The on-disk form of a backup, and the checks every reader of one makes.

Role: shared by `chronodb backup` (tools/backup.py, writes) and `chronodb
restore` (tools/restore.py, reads). Plain files, so a backup can be copied,
archived and checked with ordinary tools:

    DEST/manifest.json                 what the backup is (below)
    DEST/manifest.sha256               sha256 (hex) of manifest.json
    DEST/tablets/<tablet>/<n>.cbor     chunks: canonical CBOR [[key, ts(12 bytes), value | null], ...]

manifest.json: `format`, `cluster_id` (the source cluster), `ts` (the
backup timestamp, `WALL.LOGICAL`), `since` (null for a full backup; for an
incremental one, the timestamp of the backup it follows), `parent` (null, or
`{"path", "ts", "manifest_sha256"}` of that backup), `max_offset_ns`,
`settings` (`{"gc_retention_ns", "max_key_bytes", "max_value_bytes",
"limits"}`, the rest of cluster.toml a restore carries over; absent in
backups made before it, which restore with the defaults),
`tablets` (`[{"id", "start", "end", "chunks", "versions", "bytes",
"served_by"}]`, keys as hex, end null for the last tablet, served_by the
replicas that served its pages in turn) and `files` (relative path -> sha256
of every chunk file).

A full backup holds, for each key, the version it shows at `ts`; an
incremental one every version (tombstones included) in `(since, ts]`. A
chain is a full backup and incrementals each starting where the one before
ended; it restores any timestamp from the full backup's to the last one's.

Invariants: readers verify every checksum before using a byte; a chain with
a gap, or a member from another cluster or with other tablet ranges, is
refused; every problem is a `BackupError` with one line of text.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Iterator

import attrs
import cbor2

from hlc import Timestamp

FORMAT = "chronodb-backup/1"
MANIFEST_NAME = "manifest.json"
MANIFEST_SUM_NAME = "manifest.sha256"


class BackupError(Exception):
    """A backup that cannot be used as asked: missing, corrupt, a broken chain, a timestamp outside it."""


@attrs.frozen
class TabletRange:
    id: str
    start: bytes
    end: bytes | None


@attrs.frozen
class Backup:
    """A verified backup directory: its manifest, read and checked."""

    path: pathlib.Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def ts(self) -> Timestamp:
        return Timestamp.parse(self.manifest["ts"])

    @property
    def since(self) -> Timestamp | None:
        since = self.manifest["since"]
        return None if since is None else Timestamp.parse(since)

    @property
    def cluster_id(self) -> str:
        return self.manifest["cluster_id"]

    def ranges(self) -> tuple[TabletRange, ...]:
        return tuple(
            TabletRange(t["id"], bytes.fromhex(t["start"]), None if t["end"] is None else bytes.fromhex(t["end"]))
            for t in self.manifest["tablets"]
        )

    def chunk_paths(self, tablet_id: str) -> list[pathlib.Path]:
        for tablet in self.manifest["tablets"]:
            if tablet["id"] == tablet_id:
                return [self.path / name for name in tablet["chunks"]]
        raise BackupError(f"backup {self.path} has no tablet {tablet_id}")

    def versions(self, tablet_id: str) -> Iterator[tuple[bytes, Timestamp, bytes | None]]:
        """Every version of the tablet's chunks, each chunk checked against its sha256 as it is read."""
        for path in self.chunk_paths(tablet_id):
            data = read_checked(path, self.manifest["files"].get(relative_name(self.path, path)), self.path)
            try:
                rows = cbor2.loads(data)
                for key, ts_bytes, value in rows:
                    yield key, Timestamp.from_bytes(ts_bytes), value
            except (ValueError, TypeError, cbor2.CBORDecodeError) as error:
                raise BackupError(f"backup {self.path}: {path.name} of tablet {tablet_id} is not a chunk: {error}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_name(root: pathlib.Path, path: pathlib.Path) -> str:
    return path.relative_to(root).as_posix()


def encode_chunk(rows: list[tuple[bytes, Timestamp, bytes | None]]) -> bytes:
    return cbor2.dumps([[key, ts.to_bytes(), value] for key, ts, value in rows], canonical=True)


def write_file(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def write_manifest(directory: pathlib.Path, manifest: dict[str, Any]) -> str:
    """Write manifest.json and its checksum; returns the checksum."""
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    write_file(directory / MANIFEST_NAME, data)
    digest = sha256_hex(data)
    write_file(directory / MANIFEST_SUM_NAME, (digest + "\n").encode())
    return digest


def read_checked(path: pathlib.Path, expected: str | None, root: pathlib.Path) -> bytes:
    if expected is None:
        raise BackupError(f"backup {root}: {relative_name(root, path)} is not in the manifest's checksums")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupError(f"backup {root}: {relative_name(root, path)} is missing") from None
    except OSError as error:
        raise BackupError(f"backup {root}: cannot read {relative_name(root, path)}: {error.strerror}") from None
    if sha256_hex(data) != expected:
        raise BackupError(f"backup {root}: {relative_name(root, path)} is corrupt (sha256 mismatch)")
    return data


def open_backup(path: str | os.PathLike[str]) -> Backup:
    """Read and check a backup's manifest (not yet its chunks: `verify_files`)."""
    root = pathlib.Path(path)
    if not root.is_dir():
        raise BackupError(f"backup {root} does not exist")
    try:
        expected = (root / MANIFEST_SUM_NAME).read_text().strip()
    except FileNotFoundError:
        raise BackupError(f"backup {root}: {MANIFEST_SUM_NAME} is missing (not a backup, or an unfinished one)") from None
    data = read_checked(root / MANIFEST_NAME, expected, root)
    try:
        manifest = json.loads(data)
        if manifest.get("format") != FORMAT:
            raise BackupError(f"backup {root}: unknown format {manifest.get('format')!r} (this chronodb reads {FORMAT})")
        backup = Backup(root, manifest, expected)
        backup.ts, backup.since, backup.ranges()  # noqa: B018 - parse them now, so later uses cannot fail
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BackupError(f"backup {root}: manifest.json is malformed: {error}") from None
    return backup


def verify_files(backup: Backup) -> None:
    """Every chunk named by the tablets exists and matches its sha256."""
    for tablet in backup.manifest["tablets"]:
        for name in tablet["chunks"]:
            read_checked(backup.path / name, backup.manifest["files"].get(name), backup.path)


def load_chain(sources: list[str]) -> list[Backup]:
    """The backups named, and the ancestors their manifests name, oldest first, checked to form one chain."""
    found: dict[str, Backup] = {}
    for source in sources:
        backup = open_backup(source)
        found[backup.manifest_sha256] = backup
    missing = [b for b in found.values() if b.manifest["parent"] is not None and b.manifest["parent"]["manifest_sha256"] not in found]
    while missing:  # follow each incremental backup's parent link, relative to it
        child = missing.pop()
        parent = child.manifest["parent"]
        parent_path = child.path / parent["path"]
        if not (parent_path / MANIFEST_SUM_NAME).exists():
            raise BackupError(
                f"backup chain has a gap: {child.path} follows the backup at {parent['ts']}, which is not at "
                f"{parent_path.resolve()} (name it on the command line)")
        backup = open_backup(parent_path)
        if backup.manifest_sha256 != parent["manifest_sha256"]:
            raise BackupError(f"backup chain has a gap: {parent_path} is not the backup {child.path} follows (another manifest)")
        found[backup.manifest_sha256] = backup
        if backup.manifest["parent"] is not None and backup.manifest["parent"]["manifest_sha256"] not in found:
            missing.append(backup)
    chain = sorted(found.values(), key=lambda b: b.ts)
    if chain[0].since is not None:
        raise BackupError(f"backup chain has a gap: the oldest backup {chain[0].path} is incremental (since {chain[0].since}) "
                          f"and no full backup at {chain[0].since} was given")
    for before, after in zip(chain, chain[1:]):
        if after.since is None:
            raise BackupError(f"two full backups given ({before.path} and {after.path}): name one chain")
        if after.since != before.ts:
            raise BackupError(f"backup chain has a gap: {after.path} starts at {after.since} but the backup before it "
                              f"({before.path}) ends at {before.ts}")
        if after.cluster_id != before.cluster_id or after.ranges() != before.ranges():
            raise BackupError(f"{after.path} and {before.path} come from different clusters or tablet layouts")
    return chain


def chain_up_to(chain: list[Backup], ts: Timestamp | None) -> tuple[list[Backup], Timestamp]:
    """The members needed to restore `ts` (default: the chain's last timestamp), and that timestamp."""
    first, last = chain[0].ts, chain[-1].ts
    target = last if ts is None else ts
    if not first <= target <= last:
        raise BackupError(f"timestamp {target} is outside the backup chain, which covers {first} to {last}")
    needed = [chain[0]] + [b for b in chain[1:] if b.since is not None and b.since < target]
    return needed, target
