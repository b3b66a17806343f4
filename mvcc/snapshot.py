"""The snapshot chunk format: a store's engine pairs as a stream of bounded chunks.

Role: what `MvccStore.export_chunks` yields and `import_chunks` reads (the
payload of a Paxos snapshot for the tablet). Pure encode/decode.

A chunk is `cbor2.dumps([FORMAT, sequence, last, [[key, value], ...]])`:
- keys are relative to the store prefix (the "g", "i" and "v" sub-keyspaces of
  mvcc/keys.py), so a snapshot imports under any prefix;
- `sequence` counts from 0; exactly the final chunk has `last` true (it may
  carry no pairs), so a cut-short stream is detected;
- a chunk holds pairs until their bytes reach the chunk size (one pair may
  exceed it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs
import cbor2

from mvcc.records import SnapshotError

FORMAT = 1
SUB_KEYSPACES = (b"g", b"i", b"v")


@attrs.frozen
class Chunk:
    sequence: int
    last: bool
    pairs: tuple[tuple[bytes, bytes], ...] = attrs.field(converter=tuple)


def encode_chunks(pairs: Iterable[tuple[bytes, bytes]], chunk_bytes: int) -> Iterator[bytes]:
    """Chunks of prefix-relative pairs, the final one marked last."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive: {chunk_bytes}")
    sequence = 0
    current: list[list[bytes]] = []
    size = 0
    for key, value in pairs:
        current.append([key, value])
        size += len(key) + len(value)
        if size >= chunk_bytes:
            yield cbor2.dumps([FORMAT, sequence, False, current])
            sequence += 1
            current, size = [], 0
    yield cbor2.dumps([FORMAT, sequence, True, current])


def decode_chunk(data: bytes, expected_sequence: int) -> Chunk:
    try:
        decoded = cbor2.loads(data)
    except (cbor2.CBORDecodeError, TypeError, ValueError) as error:
        raise SnapshotError(f"snapshot chunk {expected_sequence} is not valid CBOR: {error}") from None
    if not (isinstance(decoded, list) and len(decoded) == 4 and decoded[0] == FORMAT):
        raise SnapshotError(f"snapshot chunk {expected_sequence} is not an MVCC snapshot chunk (format {FORMAT})")
    _, sequence, last, pairs = decoded
    if sequence != expected_sequence:
        raise SnapshotError(f"snapshot chunk out of order: expected {expected_sequence}, got {sequence!r}")
    if not isinstance(last, bool) or not isinstance(pairs, list):
        raise SnapshotError(f"snapshot chunk {sequence} is malformed")
    checked = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, bytes) for part in pair)):
            raise SnapshotError(f"snapshot chunk {sequence} holds a malformed pair")
        if pair[0][:1] not in SUB_KEYSPACES:
            raise SnapshotError(f"snapshot chunk {sequence} holds a key outside the MVCC keyspace: {pair[0][:16]!r}")
        checked.append((pair[0], pair[1]))
    return Chunk(sequence, last, checked)
