"""`chronodb node --dir DIR --id ID`: run one node in the foreground.

Role: how a deployment over several hosts starts a node (each host holds the
same `cluster.toml`); `chronodb up` runs one of these per node. Logs go to
`DIR/<ID>/node.log`; the process id to `DIR/<ID>/node.pid` while it runs.
SIGINT or SIGTERM stops it cleanly; SIGXFSZ is ignored (a file-size limit
fails the write, as a full disk does, and the replica restarts on its store). Startup failures (port or metrics port
in use, data directory locked by another process or belonging to another
cluster, bad cluster.toml, missing certificates) print one line and exit 2.
With a `metrics_port` in cluster.toml it serves Prometheus' `GET /metrics`
there (plain HTTP, on the node's host). Once started, the node freezes what
start-up left alive out of garbage collection and makes young collections
rare (txn/node/gc_settings.py).

TLS by default: the node loads DIR/certs/ca.crt and node.<ID>.crt/.key
(made by `chronodb up` or `chronodb cert`); `--insecure` runs plain TCP with
no authentication, and says so in node.log at start and every minute.
`--task-cpu FILE` counts the event loop's CPU per trio task (tools/task_cpu.py)
and writes it to FILE on each SIGUSR1 and at exit (`bench kv --task-cpu`).
`--cpu-policy` (default batch) sets the Linux scheduling policy of the node's
threads (txn/node/cpu_policy.py); where it cannot, the node says so in its log
and runs on.
"""

from __future__ import annotations

import argparse
import functools
import logging
import pathlib
import os
import signal
import time

import trio

from tools.errors import EXIT_OK, CliError
from tools.common import DEFAULT_DIR
from tools.task_cpu import TaskCpu, dump_on_signal, writable_file_error
from txn.node.config import ConfigError, ensure_node_dir, load_config, node_dir
from txn.node.cpu_policy import CPU_POLICIES, DEFAULT_CPU_POLICY, apply_cpu_policy
from txn.node.gc_settings import settle_for_serving
from txn.node.server import NodeStartError
from txn.node.wiring import run_node
from txn.net.coarse_timer import lay_grid_on
from txn.net.tls import CertError, certs_dir, load_node_tls

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "node", help="run one node in the foreground",
        description="Run node ID of the cluster described by DIR/cluster.toml. Logs to DIR/ID/node.log. "
        "Serves Prometheus metrics at http://HOST:METRICS_PORT/metrics when its [[nodes]] entry has a "
        "metrics_port. SIGINT/SIGTERM stop it cleanly. A port or metrics port in use, a locked or foreign "
        "data directory, or a bad cluster.toml: one line on stderr and exit code 2.",
    )
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--id", required=True, help="node id, e.g. n1")
    parser.add_argument("--insecure", action="store_true",
                        help="plain TCP: no TLS, no authentication, every client is an admin (not for real use)")
    parser.add_argument("--certs-dir", default=None, help="certificates (default DIR/certs)")
    parser.add_argument("--cpu-policy", choices=CPU_POLICIES, default=DEFAULT_CPU_POLICY,
                        help="Linux scheduling policy of the node's threads: batch (default) lets a woken "
                        "thread wait for the next scheduling point instead of preempting the running one, "
                        "so each wake-up finds more work to do together (about half the context switches "
                        "and 7%% less CPU per write on a busy box; a lone request's latency unchanged); "
                        "normal keeps the system default")
    parser.add_argument("--task-cpu", metavar="FILE", default=None,
                        help="count the event loop thread's CPU per trio task and write it to FILE as JSON "
                        "on each SIGUSR1 and at exit (for benchmarks: `chronodb bench kv --task-cpu`; "
                        "costs two clock reads per task step)")
    parser.set_defaults(func=run)


def setup_logging(path: str) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    if args.task_cpu and (problem := writable_file_error(args.task_cpu)):
        raise CliError(problem)
    try:
        config = load_config(args.dir)
        directory = ensure_node_dir(args.dir, config, args.id)
    except ConfigError as error:
        raise CliError(str(error)) from None
    tls = None
    if not args.insecure:
        try:
            tls = load_node_tls(pathlib.Path(args.certs_dir) if args.certs_dir else certs_dir(args.dir), args.id)
        except CertError as error:
            raise CliError(f"node {args.id}: {error}") from None
    setup_logging(str(directory / "node.log"))
    node_log = logging.getLogger("chronodb.node")
    policy_problem = apply_cpu_policy(args.cpu_policy)  # before any thread starts: they inherit it
    if policy_problem is not None:
        node_log.warning("node %s: %s", args.id, policy_problem)
    else:
        node_log.info("node %s: CPU policy %s", args.id, args.cpu_policy)
    if tls is None:
        node_log.warning(INSECURE_WARNING, args.id)
    else:
        node_log.info("node %s: TLS 1.3 with client and peer certificates verified by %s", args.id,
                      pathlib.Path(args.certs_dir or certs_dir(args.dir)) / "ca.crt")
    pid_file = node_dir(args.dir, args.id) / "node.pid"
    task_cpu = TaskCpu() if args.task_cpu else None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal, nursery.cancel_scope)
            if task_cpu is not None:
                nursery.start_soon(dump_on_signal, task_cpu, pathlib.Path(args.task_cpu))
            await nursery.start(functools.partial(run_node, config, args.id, args.dir, tls=tls))
            pid_file.write_text(f"{os.getpid()}\n")
            # Start-up's objects out of the collector's way, young collections rare (txn/node/gc_settings.py).
            gc_settings = settle_for_serving()
            node_log.info("node %s: %d start-up objects frozen out of garbage collection, thresholds %s",
                          args.id, gc_settings.frozen_objects, gc_settings.thresholds)
            if tls is None:
                nursery.start_soon(repeat_insecure_warning, args.id)
            mode = "TLS" if tls is not None else "INSECURE (no TLS, no authentication)"
            me = config.node(args.id)
            metrics = f"metrics http://{me.host}:{me.metrics_port}/metrics" if me.metrics_port is not None else "no metrics port"
            print(f"node {args.id} ready on {me.host}:{me.port}, {mode}, {metrics}", flush=True)

    # A file-size limit (ulimit -f) makes a write fail with EFBIG, as a full disk fails with
    # ENOSPC, instead of killing the process: the replica restarts on its store (txn/node/rebuild.py).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Every node's housekeeping grid on the wall clock: the cluster's quiet heartbeats and
    # housekeeping wake together (txn/net/coarse_timer.py).
    lay_grid_on(time.time)
    start_error: NodeStartError | None = None
    try:
        trio.run(main, instruments=[task_cpu] if task_cpu is not None else [])
    except* NodeStartError as group:
        start_error = first_leaf(group)
    except* BaseException as group:
        # A node that dies says why in its own log, not only on a stderr nobody keeps.
        if not all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves(group)):
            logging.getLogger("chronodb.node").critical("node %s died", args.id, exc_info=group)
        raise
    finally:
        pid_file.unlink(missing_ok=True)
    if start_error is not None:
        logging.getLogger("chronodb.node").error("cannot start: %s", start_error)
        raise CliError(f"node {args.id}: {start_error}")
    logging.getLogger("chronodb.node").info("node %s stopped", args.id)
    return EXIT_OK


INSECURE_WARNING = ("node %s runs --insecure: no TLS, no authentication; anyone who reaches its port "
                    "can read, write, skew its clock and speak as a peer")


async def repeat_insecure_warning(node_id: str) -> None:
    while True:
        await trio.sleep(60)
        logging.getLogger("chronodb.node").warning(INSECURE_WARNING, node_id)


async def stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger("chronodb.node").info("received %s, stopping", signal.Signals(signum).name)
            scope.cancel()
            return


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def first_leaf(error: BaseException):
    """The first exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
