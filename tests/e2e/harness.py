"""The end-to-end tests' cluster: the same `LocalCluster` the demo and benchmarks use."""

from tools.localcluster import LocalCluster, run_cli

__all__ = ["LocalCluster", "run_cli"]
