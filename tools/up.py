"""`chronodb up`: create (first time) or resume a local cluster and run it.

Role: writes DIR/cluster.toml on first use, then starts every node as its
own OS process (`chronodb node`), each logging to DIR/<node>/node.log, and
stays in the foreground. SIGINT or SIGTERM stops all nodes (SIGTERM, then
SIGKILL after a grace period); if `up` itself is killed, even by SIGKILL, the
nodes get SIGKILL too (Linux parent-death signal) instead of running on
unattended. A node that dies, or fails to start (a damaged replica, say),
is reported with the last line of its log and the others keep running;
`chronodb node --dir DIR --id ID` restarts it by hand. Only when no node
could start at all does `up` exit (2) with the first one's reason.

Every node also serves Prometheus metrics at http://HOST:METRICS_PORT/metrics
(cluster.toml's `metrics_port`; on first use `--metrics-port`, default the
node ports + 1000).

Refused with one line and exit code 2 before anything starts: a port or
metrics port in use, a corrupt cluster.toml, a node directory that belongs to
another cluster.

Secure by default: on first use (and for any node or client certificate
missing later) it makes the cluster CA, one certificate per node and the
admin client certificate `client.root` under DIR/certs/ (txn/net/tls.py),
and every node runs mutual TLS. `--insecure` opts out: no certificates,
plain TCP, and a DIR/INSECURE marker that tells clients (and `status`) so.

`--cpu-policy` (default batch) is passed to every node (txn/node/cpu_policy.py).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from typing import Callable, Sequence

from hlc import format_duration_ns, parse_duration_ns
from tools.errors import EXIT_NEGATIVE, EXIT_OK, CliError
from tools.common import DEFAULT_DIR
from txn.net.tls import CertError, certs_dir, ensure_cluster_certs, set_insecure
from txn.node.config import ClusterConfig, ConfigError, config_path, ensure_node_dir, generate, load_config, node_dir, write_config
from txn.node.cpu_policy import CPU_POLICIES, DEFAULT_CPU_POLICY

STOP_GRACE_S = 5.0
START_WINDOW_S = 5.0  # a node exiting with code 2 this soon failed to start


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up", help="create or resume a local cluster and run it in the foreground",
        description="Run a local cluster: on first use write DIR/cluster.toml (tablets split the key "
        "space evenly on the first byte, 3 replicas each, preferred leaders spread over the nodes), then "
        "start every node as its own process, logging to DIR/<node>/node.log. Each node serves Prometheus "
        "metrics at http://HOST:METRICS_PORT/metrics (its metrics_port in cluster.toml; a node without one, "
        "from a file older than metrics ports, serves none). Ctrl-C stops them all. "
        "Run again on the same DIR to resume with its data (the layout flags then must match or be omitted).",
    )
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, default=None, help="number of nodes on first use (default 3)")
    parser.add_argument("--tablets", type=int, default=None, help="number of tablets on first use (default 4)")
    parser.add_argument("--port", type=int, default=None, help="first node's port; the others follow (default 7400)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="first node's metrics port (HTTP GET /metrics); the others follow (default --port + 1000)")
    parser.add_argument(
        "--max-offset", default=None,
        help="the bound on clock offset between nodes (default 10ms). Every write waits this long "
        "(commit-wait, overlapped with replication); raise it where clocks are less well synchronized, "
        "since a node whose clock is further off than this breaks external consistency",
    )
    parser.add_argument("--insecure", action="store_true",
                        help="no TLS and no authentication (every client is an admin); loud in status and node.log")
    parser.add_argument("--cpu-policy", choices=CPU_POLICIES, default=DEFAULT_CPU_POLICY,
                        help="each node's Linux scheduling policy (`chronodb node --cpu-policy`; default batch)")
    parser.set_defaults(func=run)


def prepare_security(data_dir: str | pathlib.Path, config: ClusterConfig, insecure: bool) -> None:
    """Make what is missing of DIR/certs (or mark DIR insecure); say what was made."""
    set_insecure(data_dir, insecure)
    if insecure:
        print("WARNING: --insecure: no TLS, no authentication; anyone who reaches the ports is an admin", flush=True)
        return
    try:
        made = ensure_cluster_certs(certs_dir(data_dir), [(node.id, node.host) for node in config.nodes])
    except CertError as error:
        raise ConfigError(str(error)) from None
    if made:
        print(f"created {', '.join(path.name for path in made)} in {certs_dir(data_dir)}", flush=True)


def prepare(args: argparse.Namespace) -> ClusterConfig:
    directory = pathlib.Path(args.dir)
    if config_path(directory).exists():
        config = load_config(directory)
        mismatched = [
            flag for flag, wanted, have in (
                ("--nodes", args.nodes, len(config.nodes)), ("--tablets", args.tablets, len(config.tablets)),
                ("--port", args.port, config.nodes[0].port),
                ("--metrics-port", args.metrics_port, config.nodes[0].metrics_port),
                ("--max-offset", args.max_offset and parse_duration_ns(args.max_offset), config.max_offset_ns),
            ) if wanted is not None and wanted != have
        ]
        if mismatched:
            raise ConfigError(f"{config_path(directory)} exists with a different {', '.join(mismatched)}; omit the flag(s) or use a new --dir")
        return config
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    try:
        max_offset_ns = parse_duration_ns(args.max_offset) if args.max_offset else 10_000_000
    except ValueError as error:
        raise ConfigError(f"bad --max-offset: {error}") from None
    config = generate(nodes=args.nodes or 3, tablets=args.tablets or 4, port=args.port or 7400, max_offset_ns=max_offset_ns,
                      metrics_port=args.metrics_port)
    write_config(directory, config)
    print(f"created {config_path(directory)} (cluster {config.cluster_id}, max_offset {format_duration_ns(max_offset_ns)})")
    return config


def check_ports_free(config: ClusterConfig) -> None:
    for node in config.nodes:
        for what, port in (("port", node.port), ("metrics port", node.metrics_port)):
            if port is None:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((node.host, port))
                except OSError as error:
                    raise ConfigError(f"{what} {port} for node {node.id} on {node.host} is in use ({error.strerror})") from None


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGKILL when this process dies, however it
    dies (even by SIGKILL), so no node outlives `chronodb up` or a test run; None where
    prctl(PR_SET_PDEATHSIG) does not exist. The signal follows the thread that started the
    child: start children from the main thread, not from a worker thread that may exit."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def start_node(data_dir: str | pathlib.Path, node_id: str, *, env: dict[str, str] | None = None,
               cwd: str | pathlib.Path | None = None, insecure: bool = False,
               extra_args: Sequence[str] = ()) -> subprocess.Popen:
    """`chronodb node` as its own process (own session: a Ctrl-C is ours to pass on) that
    dies with us; its stdout and stderr go to the node's log too, so a crash's traceback is kept."""
    with open(node_dir(data_dir, node_id) / "node.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "node", "--dir", str(data_dir), "--id", node_id,
             *(["--insecure"] if insecure else []), *extra_args],
            stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=cwd,
            preexec_fn=die_with_parent(),
        )


def stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for node_id, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"node {node_id} did not stop in {STOP_GRACE_S:g}s; killing it", flush=True)
            process.kill()
            process.wait()


def last_line(path: pathlib.Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run(args: argparse.Namespace) -> int:
    try:
        config = prepare(args)
        for node in config.nodes:
            ensure_node_dir(args.dir, config, node.id)
        check_ports_free(config)
        prepare_security(args.dir, config, args.insecure)
    except ConfigError as error:
        raise CliError(str(error)) from None

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: dict[str, subprocess.Popen] = {}
    try:
        for node in config.nodes:
            processes[node.id] = start_node(args.dir, node.id, insecure=args.insecure,
                                            extra_args=("--cpu-policy", args.cpu_policy))
            metrics = f"metrics http://{node.host}:{node.metrics_port}/metrics" if node.metrics_port is not None else "no metrics port"
            print(f"node {node.id}: {node.host}:{node.port}, {metrics}, pid {processes[node.id].pid}, "
                  f"log {node_dir(args.dir, node.id) / 'node.log'}", flush=True)
        started = time.monotonic()
        reported: dict[str, str] = {}  # node -> why it is gone
        failed_to_start: list[str] = []
        while not stopping:
            time.sleep(0.1)
            for node_id, process in processes.items():
                code = process.poll()
                if code is None or node_id in reported:
                    continue
                reason = reported[node_id] = last_line(node_dir(args.dir, node_id) / "node.log")
                if code == 2 and time.monotonic() - started < START_WINDOW_S:
                    failed_to_start.append(node_id)
                    print(f"node {node_id} failed to start: {reason} (the other nodes keep running; fix it, then "
                          f"`chronodb node --dir {args.dir} --id {node_id}`)", flush=True)
                else:
                    print(f"node {node_id} exited with code {code}: {reason}", flush=True)
            if len(reported) == len(processes):
                if len(failed_to_start) == len(processes):
                    first = failed_to_start[0]
                    raise CliError(f"no node could start; node {first}: {reported[first]}")
                print("every node has exited", flush=True)
                return EXIT_NEGATIVE
        print("stopping the cluster", flush=True)
    finally:
        stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return EXIT_OK
