"""tools: the `chronodb` command line, built on the client library and on
offline readers of a data directory. The top layer: nothing imports it.
"""
