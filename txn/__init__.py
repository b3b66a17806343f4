"""txn: the node runtime.

Wire format, TCP transport and simulated network, node, tablets, transaction
coordinator, client library and cluster configuration. Imports paxos, mvcc, hlc.
"""
