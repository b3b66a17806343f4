"""The benchmarks' memory figure (tools/bench_kv.py `largest_node_rss`, from tools/bench_idle.py
`rss_kb`): a node process's anonymous resident memory read from /proc for real processes, and
printed in a row's notes."""

from __future__ import annotations

import os
import subprocess
import sys
import types

from tools.bench_idle import rss_kb
from tools.bench_kv import cpu_note, largest_node_rss

MIB = 1 << 20
HOLDER = "import sys, time; block = b'x' * (int(sys.argv[1]) << 20); print('ready', flush=True); time.sleep(60)"


def holding(mib: int) -> subprocess.Popen:
    """A process that has touched `mib` MiB of its own memory and says so before it sleeps."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(mib)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_the_largest_nodes_anonymous_memory_counts_what_it_holds() -> None:
    small, large = holding(1), holding(64)
    try:
        small_rss, large_rss = rss_kb(small.pid), rss_kb(large.pid)
        assert small_rss is not None and large_rss is not None
        assert (large_rss[0] - small_rss[0]) * 1024 >= 56 * MIB  # anonymous: the block it allocated
        cluster = types.SimpleNamespace(processes={"n1": small, "n2": large})
        assert largest_node_rss(cluster) >= 64 * MIB  # type: ignore[arg-type]
    finally:
        for process in (small, large):
            process.kill()
            process.wait()


def mapped_kb(pid: int) -> int:
    """The pages of files a process maps, in KiB: RssFile plus RssShmem (tmpfs files count there)."""
    with open(f"/proc/{pid}/status") as status:
        return sum(int(line.split()[1]) for line in status if line.startswith(("RssFile:", "RssShmem:")))


def test_mapped_files_are_not_counted_as_held() -> None:
    # A process that maps and reads a 64 MiB file holds its pages as mapped file pages, not RssAnon.
    script = ("import mmap, sys, tempfile, time\n"
              "f = tempfile.TemporaryFile(); f.write(b'y' * (64 << 20)); f.flush()\n"
              "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); total = sum(m[i] for i in range(0, len(m), 4096))\n"
              "print('ready', flush=True); time.sleep(60)\n")
    mapper = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert mapper.stdout is not None and mapper.stdout.readline().strip() == "ready"
        rss = rss_kb(mapper.pid)
        assert rss is not None
        anon_kb, _ = rss
        # Mapped in: RssFile on a disk file system, RssShmem where the temporary directory is tmpfs.
        assert mapped_kb(mapper.pid) * 1024 >= 56 * MIB and anon_kb * 1024 < 56 * MIB
        assert largest_node_rss(types.SimpleNamespace(processes={"n1": mapper})) < 56 * MIB  # type: ignore[arg-type]
    finally:
        mapper.kill()
        mapper.wait()


def test_a_node_gone_gives_no_figure_instead_of_a_wrong_one() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert rss_kb(gone.pid) is None
    cluster = types.SimpleNamespace(processes={"n1": types.SimpleNamespace(pid=os.getpid()), "n2": gone})
    assert largest_node_rss(cluster) is None  # type: ignore[arg-type]


def test_a_row_ends_with_the_largest_nodes_memory_at_the_figures_start_and_end() -> None:
    figures = {"node_cpu_us_per_op": 405.0, "node_cores": 1.33, "client_cpu_us_per_op": 95.0,
               "box": "box 94% busy", "node_rss": (81 * MIB, 83 * MIB + MIB // 3)}
    assert cpu_note(figures) == ("CPU/op: nodes 405 us (1.33 cores), clients 95 us; box 94% busy; "
                                 "largest node's RssAnon 81 -> 83 MiB")
    figures["node_rss"] = None  # no /proc: nothing said about memory
    assert cpu_note(figures) == "CPU/op: nodes 405 us (1.33 cores), clients 95 us; box 94% busy"
