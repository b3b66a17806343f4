"""py-spy on the node processes of a benchmark's cluster, one recording per figure (`chronodb bench kv --profile DIR`).

`open_profiler` runs before any cluster starts and turns whatever would stop
py-spy (not installed, no permission to read another process's memory) into
one `CliError` line. `Profiler.sample(pids, figure)` wraps one measured
figure: it starts one `py-spy record --format raw --nonblocking --function`
per node, waits until each samples, and afterwards stops them with SIGINT
(py-spy then writes what it has). Out of each recording come
DIR/<node>-<figure>.collapsed (the stacks, for flamegraph.pl or speedscope),
DIR/<node>-<figure>.svg (tools/flamegraph.py) and a section of DIR/top.txt
(the top functions by self time). One sampler per node makes both the graph
and the summary, so they agree and the node is not sampled twice.

Samples of idle threads are left out (py-spy's default), so the second a
node waits for the client processes to start adds nothing. --nonblocking
reads the node's memory without pausing it, at the price of an occasional
torn stack; pausing would slow the figures more. The samplers still take CPU
from the nodes and clients on the same machine (2 cores here): the setup
lines say so and each figure's row says how much CPU its samplers used.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Mapping

import attrs

from tools.errors import CliError
from tools.flamegraph import format_top, parse_collapsed, render_svg
from tools.up import die_with_parent

PTRACE_SCOPE = pathlib.Path("/proc/sys/kernel/yama/ptrace_scope")
CAP_SYS_PTRACE = 19
TOP_FUNCTIONS = 15
ATTACH_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0
INSTALL_HINT = "install it with `pip install -e '.[profile]'` (`make venv` does)"


def locate_py_spy() -> str | None:
    """py-spy beside this Python (a venv's bin/, also when it is not on PATH), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def has_cap_sys_ptrace(status_text: str) -> bool:
    """Whether /proc/self/status's effective capabilities include CAP_SYS_PTRACE."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    return False


def ptrace_refusal(scope: int | None, cap_sys_ptrace: bool) -> str | None:
    """Why Yama would stop py-spy reading a node (a sibling process, not its child), or None.
    scope: /proc/sys/kernel/yama/ptrace_scope, None without Yama."""
    if scope is None or scope == 0 or (scope in (1, 2) and cap_sys_ptrace):
        return None
    if scope >= 3:
        return "kernel.yama.ptrace_scope is 3: no process may read another's memory until the next boot"
    return (f"kernel.yama.ptrace_scope is {scope} and this process lacks CAP_SYS_PTRACE: "
            "run as root, or `sysctl kernel.yama.ptrace_scope=0`")


def first_error(output: str) -> str:
    """py-spy's `Error: ...` line (its backtrace follows), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["no output"])[0 if errors else -1]


def check_py_spy(py_spy: str | None) -> str:
    """py-spy's version line, once it has read this very process as it will read the nodes; else CliError."""
    if py_spy is None:
        raise CliError(f"--profile needs py-spy, which is not installed here: {INSTALL_HINT}")
    scope = int(PTRACE_SCOPE.read_text()) if PTRACE_SCOPE.exists() else None
    refusal = ptrace_refusal(scope, has_cap_sys_ptrace(pathlib.Path("/proc/self/status").read_text()))
    if refusal:
        raise CliError(f"--profile: py-spy cannot read the node processes: {refusal}")
    try:
        version = subprocess.run([py_spy, "--version"], capture_output=True, text=True, timeout=30)
        trial = subprocess.run([py_spy, "dump", "--nonblocking", "--pid", str(os.getpid())],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CliError(f"--profile: {py_spy} does not run: {error}") from None
    if version.returncode != 0 or trial.returncode != 0:
        raise CliError(f"--profile: py-spy cannot read a Python process here (it needs ptrace permission): "
                       f"{first_error(trial.stdout + trial.stderr)}")
    return version.stdout.strip()


@attrs.define(eq=False)
class Recording:
    node_id: str
    process: subprocess.Popen
    collapsed: pathlib.Path
    log: tempfile._TemporaryFileWrapper  # py-spy's stdout and stderr

    def output(self) -> str:
        # pread: seeking would move the offset py-spy writes at (the file description is shared).
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


@attrs.define(eq=False)
class FigureProfile:
    cpu_s: float = 0.0  # the samplers' CPU (user + system), all nodes


@attrs.define(eq=False)
class Profiler:
    py_spy: str
    version: str
    directory: pathlib.Path
    rate_hz: int
    recordings_done: int = 0
    cpu_s: float = 0.0

    def describe(self) -> str:
        return (f"{self.version}, {self.rate_hz} samples/s of every node process (--nonblocking) while each figure "
                f"runs, into {self.directory}; the samplers take CPU from this {os.cpu_count()}-core machine, "
                "so the figures are lower than without --profile")

    @contextlib.contextmanager
    def sample(self, pids: Mapping[str, int], figure: str) -> Iterator[FigureProfile]:
        """Sample each node's process (node id -> pid) for as long as the body runs; then write its
        graph and summary, and the samplers' CPU into the FigureProfile (also printed by report())."""
        profile = FigureProfile()
        recordings: list[Recording] = []
        try:
            for node_id, pid in pids.items():
                recordings.append(self.start(node_id, pid, figure))
            for recording in recordings:
                self.wait_sampling(recording)
            yield profile
        finally:
            for recording in recordings:
                # os.kill, not send_signal: that would reap an exited py-spy, and reap() wants its rusage.
                os.kill(recording.process.pid, signal.SIGINT)
            for recording in recordings:
                profile.cpu_s += reap(recording.process, STOP_TIMEOUT_S)
        for recording in recordings:
            self.write(recording, figure)
        self.cpu_s += profile.cpu_s

    def start(self, node_id: str, pid: int, figure: str) -> Recording:
        collapsed = self.directory / f"{node_id}-{figure}.collapsed"
        collapsed.unlink(missing_ok=True)
        log = tempfile.TemporaryFile()
        process = subprocess.Popen(
            [self.py_spy, "record", "--pid", str(pid), "--output", str(collapsed), "--format", "raw",
             "--rate", str(self.rate_hz), "--nonblocking", "--function"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent(),
        )
        return Recording(node_id, process, collapsed, log)

    def wait_sampling(self, recording: Recording) -> None:
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while "Sampling process" not in recording.output():
            if exited(recording.process) or time.monotonic() > deadline:
                return  # write() reports what py-spy said
            time.sleep(0.02)

    def write(self, recording: Recording, figure: str) -> None:
        """The .svg and the top.txt section, also for an empty or missing recording (then saying why)."""
        text = recording.collapsed.read_text() if recording.collapsed.exists() else ""
        stacks = parse_collapsed(text)
        title = f"{recording.node_id} {figure}"
        (self.directory / f"{recording.node_id}-{figure}.svg").write_text(render_svg(stacks, title))
        section = format_top(title, stacks, TOP_FUNCTIONS)
        if recording.process.returncode != 0 or not recording.collapsed.exists():
            problem = f"py-spy on {recording.node_id} ended with code {recording.process.returncode}: " \
                      f"{first_error(recording.output())}"
            print(f"profile: {problem}", flush=True)
            section += f"  ({problem})\n"
        with open(self.directory / "top.txt", "a") as top:
            top.write(section + "\n")
        recording.log.close()
        self.recordings_done += 1

    def report(self) -> str:
        return (f"profile: {self.recordings_done} flame graphs in {self.directory}, named <node>-<figure>.svg with "
                f"the stacks beside them (.collapsed); the top {TOP_FUNCTIONS} functions by self time per node and "
                f"figure in {self.directory / 'top.txt'}; the samplers used {self.cpu_s:.1f} CPU-s")


def exited(process: subprocess.Popen) -> bool:
    """Whether `process` has exited, without reaping it (reap() wants its rusage)."""
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def reap(process: subprocess.Popen, timeout_s: float) -> float:
    """Wait for `process` to exit (SIGKILL after timeout_s), reap it and return the CPU seconds it used."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            os.kill(process.pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.02)


def open_profiler(directory: str, rate_hz: int) -> Profiler:
    """Check that py-spy can do its work here, then make DIR and start DIR/top.txt afresh. Before any cluster starts."""
    if rate_hz < 1:
        raise CliError(f"--profile-rate must be at least 1 sample/s, not {rate_hz}")
    py_spy = locate_py_spy()
    version = check_py_spy(py_spy)
    assert py_spy is not None
    path = pathlib.Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "top.txt").write_text(
            f"{version}, {rate_hz} samples/s, --nonblocking --function; self time: samples with the function "
            "on top of the stack, idle samples left out\n\n")
    except OSError as error:
        raise CliError(f"--profile: cannot write to {directory}: {error.strerror}") from None
    return Profiler(py_spy, version, path, rate_hz)
