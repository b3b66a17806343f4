"""mvcc: the multi-version key-value store of one tablet replica, on LevelDB.

Versions, tombstones, intents, GC and snapshot export/import. Imports only hlc.
"""
