"""txn/node/cpu_policy.py: every thread of the process gets the policy, and threads started
later inherit it; a node runs under SCHED_BATCH unless told `--cpu-policy normal`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tools.localcluster import ROOT, cli_env
from txn.node.cpu_policy import apply_cpu_policy

PROBE = """
import json, os, sys, threading
from txn.node.cpu_policy import apply_cpu_policy, process_threads
gate = threading.Event()
before = threading.Thread(target=gate.wait); before.start()
problem = apply_cpu_policy(sys.argv[1])
after = threading.Thread(target=gate.wait); after.start()
policies = {tid: os.sched_getscheduler(tid) for tid in process_threads()}
gate.set(); before.join(); after.join()
print(json.dumps({"problem": problem, "policies": sorted(policies.values())}))
"""


def probe(name: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True, env=cli_env(),
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(("name", "policy"), [("batch", os.SCHED_BATCH), ("normal", os.SCHED_OTHER)])
def test_every_thread_gets_the_policy_and_later_threads_inherit_it(name: str, policy: int) -> None:
    seen = probe(name)
    assert seen["problem"] is None
    assert seen["policies"] == [policy] * 3, "the main thread, one started before and one after"


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CPU policy 'fifo'"):
        apply_cpu_policy("fifo")
