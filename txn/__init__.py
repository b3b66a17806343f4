"""txn: the node runtime, in sub-layers (imports point downward only):

    wire < net < api < tablet < node < client < sim

wire: bytes; net: transports; api: the protocol's messages; tablet: one
replica; node: the process; client: the client library; sim: simulation and
checkers. Imports paxos, mvcc, hlc. `tests/test_layering.py` enforces the order.
"""
