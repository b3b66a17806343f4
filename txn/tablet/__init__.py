"""txn.tablet: one tablet replica (above txn.api).

- `commands.py`        the log commands and their encoding (pure)
- `state.py`           the Paxos state machine: MVCC data, applied index, safe time (pure)
- `tablet_replica.py`  the trio driver: Paxos + state + the leader's timestamp rules

This `__init__` imports nothing, so the pure modules load without trio.
"""
