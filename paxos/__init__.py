"""paxos: Multi-Paxos replication of one tablet's log.

A pure (sans-I/O) replica state machine, its log storage on the replica's
LevelDB (through mvcc's engine interface), and a thin trio driver. Imports
only mvcc and hlc.
"""
