"""txn.node: the node process (above txn.tablet).

- `config.py`       cluster.toml and node directories
- `server.py`       `Node`: routes peers' Paxos traffic and clients' requests to tablet replicas
- `clock_watch.py`  clock probes, offset monitoring and fencing
- `admin.py`        skew injection and inspection answers
- `wiring.py`       `build_node()`: the one place a node is assembled, for TCP and for simulation

This `__init__` imports nothing.
"""
