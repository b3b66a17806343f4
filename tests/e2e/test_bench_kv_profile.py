"""`chronodb bench kv --profile DIR`, short: py-spy samples every node process during every figure,
leaving a flame graph per node and figure and a summary of the top functions that names our code.

Needs py-spy (the Makefile's venv installs the `profile` extra; without it this test fails). Where
py-spy may not read another process (Yama ptrace_scope, no CAP_SYS_PTRACE; asked by the test itself),
the test checks the other promise instead: one line, exit 2, nothing started.
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.harness import run_cli
from tools.flamegraph import EMPTY_STACK

pytestmark = pytest.mark.e2e

NODES = ("n1", "n2", "n3")
FIGURES = ("insecure-write-c4", "insecure-strong-read-c4")  # no past reads: no 5 s wait for them
OUR_CODE = re.compile(r"\((hlc|mvcc|paxos|txn|tools)/[\w/]+\.py:\d+\)$")
TOP_LINE = re.compile(r"^ +[\d.]+% +(?P<samples>[\d,]+)  (?P<frame>.+)$")


def sections(top: str) -> dict[str, list[str]]:
    """top.txt's `== n1 insecure-write-c4: ...` sections -> their function lines."""
    out: dict[str, list[str]] = {}
    title = None
    for line in top.splitlines():
        if line.startswith("== "):
            title = line[3:].split(":")[0]
            out[title] = []
        elif title and line.strip():
            out[title].append(line)
    return out


def leaf_samples(collapsed: str) -> collections.Counter[str]:
    """Samples per innermost frame, counted here independently of tools/flamegraph.py."""
    leaves: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        frames, count = line.rsplit(" ", 1)
        leaves[frames.split(";")[-1] or EMPTY_STACK] += int(count)
    return leaves


def py_spy_may_read_a_sibling() -> bool:
    """Asked here, apart from tools/profiler.py: can py-spy read a process it did not start (as the bench's
    samplers read the nodes, their siblings)? Not under Yama ptrace_scope >= 1 without CAP_SYS_PTRACE."""
    py_spy = pathlib.Path(sys.executable).parent / "py-spy"
    assert py_spy.exists(), f"py-spy is not installed beside {sys.executable} (the Makefile installs the profile extra)"
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)
        dump = subprocess.run([str(py_spy), "dump", "--nonblocking", "--pid", str(sibling.pid)],
                              capture_output=True, text=True, timeout=60)
        return dump.returncode == 0
    finally:
        sibling.kill()
        sibling.wait()


def test_profile_leaves_a_flame_graph_per_node_and_figure(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "profile"
    result = run_cli(["bench", "kv", "--seconds", "0.5", "--concurrency", "4", "--client-processes", "1",
                      "--security", "insecure", "--workloads", "write,strong-read", "--profile", str(directory),
                      "--profile-rate", "100"], timeout_s=300)
    if not py_spy_may_read_a_sibling():
        # Where profiling cannot work, the bench must say so in one line before starting anything.
        assert result.returncode == 2 and result.stdout == "" and not directory.exists(), result.stdout
        assert len(result.stderr.strip().splitlines()) == 1 and "py-spy" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^profile: +py-spy [\d.]+, 100 samples/s .*lower than without --profile$", result.stdout, re.M), \
        result.stdout
    assert f"profile: 6 flame graphs in {directory}" in result.stdout
    assert len(re.findall(r"^(write|strong-read) +4 .* py-spy \d+\.\d\d CPU-s$", result.stdout, re.M)) == 2, result.stdout
    # Every row says what an operation cost in CPU: the nodes ran (more than nothing, at most every core).
    costs = re.findall(r"^(?:write|strong-read) +4 .*CPU/op: nodes (\d+) us \((\d+\.\d\d) cores\), clients (\d+) us \(1 process\);",
                       result.stdout, re.M)
    assert len(costs) == 2, result.stdout
    assert all(int(nodes) > 0 and 0 < float(cores) <= os.cpu_count() and int(clients) > 0 for nodes, cores, clients in costs), costs
    assert re.search(r"^insecure cluster: leaders t1 n\d, t2 n\d, t3 n\d$", result.stdout, re.M), result.stdout
    for node in NODES:
        for figure in FIGURES:
            svg = (directory / f"{node}-{figure}.svg").read_text()
            assert svg.startswith("<svg") and svg.count("<rect") >= 3 and "samples, 100.00%)</title>" in svg, svg[:300]
            assert (directory / f"{node}-{figure}.collapsed").stat().st_size > 0
    found = sections((directory / "top.txt").read_text())
    assert sorted(found) == sorted(f"{node} {figure}" for node in NODES for figure in FIGURES), found
    for title, lines in found.items():
        # The top entry is the function most often on CPU in that recording (self time, not a caller's).
        leaves = leaf_samples((directory / f"{title.replace(' ', '-')}.collapsed").read_text())
        top = TOP_LINE.match(lines[0])
        assert top, lines
        samples = int(top["samples"].replace(",", ""))
        assert samples == max(leaves.values()) and leaves[top["frame"]] == samples, (title, lines[0], leaves.most_common(3))
    for node in NODES:
        ours = [line for figure in FIGURES for line in found[f"{node} {figure}"] if OUR_CODE.search(line)]
        assert ours, f"no chronodb function in {node}'s top functions: {found}"
