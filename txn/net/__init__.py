"""txn.net: moving messages between nodes and clients (above txn.wire).

- `messaging.py`       the handler protocol, errors and statistics every transport shares
- `peer_rules.py`      the pure handshake check and the absorb-or-reject rule for a sender's HLC
- `options.py`         `TransportOptions`: the transport's deadlines and bounds, with their defaults (pure)
- `connection.py`      a framed message stream over a trio stream
- `transport.py`       the TCP transport of a node (peers and clients)
- `client_connection.py` the client's side of one connection
- `simnet.py`          the deterministic simulated network

This `__init__` imports nothing: `peer_rules` and `options` are pure, the rest use trio.
"""
