"""mvcc: the multi-version key-value store of one tablet replica, on LevelDB.

Versions, tombstones, intents, GC and snapshot export/import. Imports only hlc.
`LevelDbEngine` (the plyvel edge) is imported from mvcc.engine_leveldb
directly, so that the pure parts load without plyvel.
"""

from mvcc.engine import Batch, CorruptionError, DictEngine, Engine, EngineError
from mvcc.records import (
    BelowGcHorizon,
    GcProgress,
    Intent,
    IntentConflict,
    MvccError,
    MvccStatistics,
    ReadResult,
    ScanResult,
    SnapshotError,
    Version,
)
from mvcc.store import MvccStore

__all__ = [
    "Batch",
    "BelowGcHorizon",
    "CorruptionError",
    "DictEngine",
    "Engine",
    "EngineError",
    "GcProgress",
    "Intent",
    "IntentConflict",
    "MvccError",
    "MvccStatistics",
    "MvccStore",
    "ReadResult",
    "ScanResult",
    "SnapshotError",
    "Version",
]
