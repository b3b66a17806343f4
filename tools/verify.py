"""`chronodb verify`: a Jepsen-style test of a cluster: workload, nemeses, checker, verdict.

Role: runs client processes against a cluster (a fresh local one, or the one
running in DIR) while a nemesis injects faults (tools/verify_nemesis.py),
heals everything for the final part of the run and requires every tablet to
serve again, then checks the history and prints `valid` or each anomaly
explained. Exit 0 only when valid. Workloads: `register`
(tools/verify_workloads.py, checker tools/verify_register.py), `list-append`
(tools/verify_list_append.py, Elle's checker txn/sim/elle.py), `bank`
(tools/verify_bank.py, checker tools/verify_bank_check.py).

Schedule of a run of S seconds: quiet for the first 15% (at least 2 s),
faults one at a time until 70%, healed for the rest (at least 5 s); after
the workload stops: wait for every tablet to serve, then the workload's
final phase (each tablet must serve again: liveness is part of the verdict).

Output (`--out DIR`): history.jsonl, faults.json, verdict.json, the node
logs (logs/<node>.log; fresh clusters), latency-raw.png and rate.png.

Randomness: the schedule and the operation mix come from the seed. Each
client's own stream (`open_client(rng=...)`: transaction ids, retry jitter)
comes from the seed and a nonce drawn per run, so that transaction ids never
repeat across runs against one cluster (a coordinator keeps its decisions).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import secrets
import shutil
import tempfile
import time
from contextlib import AsyncExitStack

import attrs
import trio

from tools.common import DEFAULT_DIR
from tools.errors import EXIT_NEGATIVE, EXIT_OK, CliError
from tools.localcluster import LocalCluster
from tools.status import gather
from tools.verify_nemesis import LOCAL_ONLY, NEMESES, Nemesis, wait_serving
from tools.verify_bank import BankWorkload
from tools.verify_list_append import ListAppendWorkload
from tools.verify_register import RegisterOp
from tools.verify_txn import listed, record_to_json
from tools.verify_workloads import Recorder, RegisterWorkload, key_groups, now_ns, op_to_json, register_keys, spread_keys
from tools.status import tls_for_config
from txn.client import open_client
from txn.node.config import ClusterConfig, ConfigError, load_config, node_dir

WORKLOADS = ("register", "list-append", "bank")
DEFAULT_KEYS = {"register": 13, "list-append": 12, "bank": 8}
HEAL_TIMEOUT_S = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="test the cluster under faults and check the history (Jepsen-style)",
        description="Run a workload with faults injected, then check the history. Exit 0 only when the verdict "
        "is valid. --fresh (the default when no cluster runs in DIR) starts a local 3-node cluster in a "
        "temporary directory; otherwise the cluster running in DIR is tested. The kill and pause nemeses "
        "need a local cluster (verify must own the node processes) and are refused against a running one. "
        "Workloads: register (single-key puts and reads, checked for linearizability of strong reads and "
        "exact snapshot reads), list-append (transactions appending unique integers to lists across tablets, "
        "and read-only snapshots; Elle's checker: G0, G1a/b/c, G-single, G2-item, real-time order, lost "
        "appends, snapshot reads), bank (transfers between accounts of different tablets and snapshots of "
        "every balance: the total never changes, no balance is negative, every read is exact at its timestamp).",
    )
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory of a running cluster (default ./{DEFAULT_DIR})")
    parser.add_argument("--fresh", action="store_true", help="start a fresh local 3-node cluster in a temporary directory")
    parser.add_argument("--insecure", action="store_true",
                        help="the fresh cluster runs --insecure (plain TCP, no TLS), as `chronodb up --insecure`; "
                        "refused against a running cluster, which keeps its own")
    parser.add_argument("--workload", default="register", choices=WORKLOADS,
                        help="register (default), list-append or bank (transactions across tablets)")
    parser.add_argument("--nemesis", default="kill,pause,skew,partition",
                        help=f"comma-separated faults among {','.join(NEMESES)}, or none (kill and pause: --fresh only)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the workload runs (default 60)")
    parser.add_argument("--rate", type=float, default=100.0, help="operations per second, all clients together (default 100)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client processes (default 16)")
    parser.add_argument("--keys", type=int, default=None,
                        help="keys (register, list-append) or accounts (bank), spread over the tablets "
                        "(default 13, 12, 8)")
    parser.add_argument("--out", help="directory for the history, logs, verdict and plots (default ./verify-<time>)")
    parser.add_argument("--seed", default=None, help="seed of the schedule and the operation mix (default random)")
    parser.set_defaults(func=run)


@attrs.frozen
class Plan:
    workload: str
    nemeses: tuple[str, ...]
    seconds: float
    rate: float
    clients: int
    keys: int
    seed: str


def parse_plan(args: argparse.Namespace) -> Plan:
    nemeses = () if args.nemesis in ("none", "") else tuple(n.strip() for n in args.nemesis.split(",") if n.strip())
    unknown = [n for n in nemeses if n not in NEMESES]
    if unknown:
        raise CliError(f"unknown nemesis {', '.join(unknown)}: choose among {', '.join(NEMESES)} or none")
    keys = DEFAULT_KEYS[args.workload] if args.keys is None else args.keys
    if args.seconds < 10 or args.rate <= 0 or args.clients < 1 or keys < (2 if args.workload == "bank" else 1):
        raise CliError("--seconds must be at least 10, --rate positive, --clients and --keys at least 1 "
                       "(2 accounts for bank)")
    return Plan(args.workload, nemeses, args.seconds, args.rate, args.clients, keys, args.seed or secrets.token_hex(4))


def cluster_runs(data_dir: str) -> ClusterConfig | None:
    """DIR's config if some node of it answers, else None."""
    try:
        config = load_config(data_dir)
    except ConfigError:
        return None
    replies = trio.run(gather, config)
    return config if any(reply is not None for reply in replies.values()) else None


def run(args: argparse.Namespace) -> int:
    plan = parse_plan(args)
    running = None if args.fresh else cluster_runs(args.dir)
    if running is not None and args.insecure:
        raise CliError(f"--insecure applies to the fresh cluster verify starts (--fresh): the cluster running in "
                       f"{args.dir} keeps its own security")
    out = pathlib.Path(args.out or f"verify-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    cluster = None
    temp_dir = None
    if running is None:
        temp_dir = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-verify-"))
        say(f"starting a fresh local 3-node cluster in {temp_dir}" + (", --insecure" if args.insecure else ""))
        cluster = LocalCluster(temp_dir, insecure=args.insecure)
        cluster.start_all()
        cluster.wait_healthy(60)
        config, data_dir = cluster.config, temp_dir
    else:
        refused = [n for n in plan.nemeses if n in LOCAL_ONLY]
        if refused:
            raise CliError(f"--nemesis {','.join(refused)} needs a local cluster (--fresh): verify does not own "
                           f"the processes of the cluster running in {args.dir}")
        config, data_dir = running, pathlib.Path(args.dir)
    say(f"verify: workload {plan.workload}, nemesis {','.join(plan.nemeses) or 'none'}, {plan.seconds:g}s at "
        f"{plan.rate:g} ops/s by {plan.clients} clients, seed {plan.seed}, output in {out}")
    try:
        result = trio.run(run_async, plan, config, cluster)
    finally:
        if cluster is not None:
            cluster.stop_all()
        copy_logs(config, data_dir, out)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return write_outputs(plan, out, *result)


async def run_async(plan: Plan, config: ClusterConfig, cluster: LocalCluster | None):
    start_ns = now_ns()
    recorder = Recorder(start_ns)
    nemesis = Nemesis(config, cluster, plan.nemeses, plan.seed, say)
    begin_s = trio.current_time()
    faults_from_s = begin_s + max(2.0, plan.seconds * 0.15)
    heal_at_s = begin_s + min(plan.seconds * 0.70, plan.seconds - 5.0)
    stop_at_s = begin_s + plan.seconds
    addresses = [node.address for node in config.nodes]
    nonce = secrets.token_hex(4)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_client(
            addresses[i % len(addresses):] + addresses[:i % len(addresses)], cluster_id=config.cluster_id,
            max_offset_ns=config.max_offset_ns, timeout_s=5.0, tls=tls_for_config(config),
            rng=random.Random(f"{plan.seed}/client/{i}/{nonce}"))) for i in range(plan.clients)]
        await clients[0].refresh_map()
        workload = make_workload(plan, recorder)
        groups = key_groups(clients[0], workload_keys(workload))
        await workload.setup(clients[0], groups)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress, recorder, nemesis, begin_s, stop_at_s)
            nursery.start_soon(nemesis.run, faults_from_s, heal_at_s)
            async with trio.open_nursery() as workers:
                for i, client in enumerate(clients):
                    workers.start_soon(workload.worker, client, i, plan.clients, plan.clients / plan.rate, stop_at_s)
        healed_ns = now_ns()
        serving = await wait_serving(config, HEAL_TIMEOUT_S)
        say(f"after healing: every tablet {'serves' if serving else f'did NOT serve within {HEAL_TIMEOUT_S:g}s'}")
        await workload.final_phase(clients[0], groups, say)
    return workload, nemesis, groups, healed_ns


Workload = RegisterWorkload | ListAppendWorkload | BankWorkload


def make_workload(plan: Plan, recorder: Recorder) -> Workload:
    if plan.workload == "list-append":
        return ListAppendWorkload(spread_keys(plan.seed, "la", plan.keys), recorder, plan.seed)
    if plan.workload == "bank":
        return BankWorkload(spread_keys(plan.seed, "bank", plan.keys), recorder, plan.seed)
    return RegisterWorkload(register_keys(plan.seed, plan.keys), recorder, plan.seed)


def workload_keys(workload: Workload) -> list[str]:
    return workload.accounts if isinstance(workload, BankWorkload) else workload.keys


async def progress(recorder: Recorder, nemesis: Nemesis, begin_s: float, stop_at_s: float) -> None:
    while trio.current_time() < stop_at_s:
        await trio.sleep(2.0)
        counts = recorder.counts()
        fault = nemesis.current.detail if nemesis.current else "none"
        say(f"[{trio.current_time() - begin_s:5.1f}s] ops {len(recorder.history)}: ok {counts['ok']} "
            f"failed {counts['fail']} unknown {counts['info']} | fault: {fault}")


def say(line: str) -> None:
    print(line, flush=True)


def copy_logs(config: ClusterConfig, data_dir: pathlib.Path, out: pathlib.Path) -> None:
    (out / "logs").mkdir(exist_ok=True)
    for node in config.nodes:
        source = node_dir(data_dir, node.id) / "node.log"
        if source.exists():
            shutil.copyfile(source, out / "logs" / f"{node.id}.log")


def write_outputs(plan: Plan, out: pathlib.Path, workload: Workload, nemesis: Nemesis, groups, healed_ns: int) -> int:
    from tools import verify_plots  # matplotlib loads only here

    recorder = workload.recorder
    history = recorder.history
    start_ns = recorder.start_ns
    with open(out / "history.jsonl", "w") as history_file:
        for index, op in enumerate(history):
            line = op_to_json(index, op, start_ns) if isinstance(op, RegisterOp) else record_to_json(index, op, start_ns)
            history_file.write(json.dumps(line) + "\n")
    faults = [event.to_json(start_ns) for event in nemesis.events]
    (out / "faults.json").write_text(json.dumps(faults, indent=1) + "\n")
    say(f"checking {len(history)} operations ({plan.workload})")
    verdict, liveness = workload.check(healed_ns, groups)
    unfenced = [e for e in nemesis.events if e.fenced is False]
    valid = verdict.valid and not liveness
    anomalies, anomaly_counts = listed(list(verdict.anomalies) + liveness)
    for name in anomaly_counts:  # the register checker lists 25 a class itself and counts them all in its stats
        anomaly_counts[name] = max(anomaly_counts[name], verdict.stat(f"anomaly:{name}"))
    counts = recorder.counts()
    report = {
        "valid": valid, "workload": plan.workload, "nemesis": list(plan.nemeses), "seed": plan.seed,
        "seconds": plan.seconds, "ops": len(history), "ok": counts["ok"], "failed": counts["fail"],
        "unknown": counts["info"], "faults": len(faults), "faults_by_kind": count_by(nemesis.events),
        "beyond_max_offset_not_fenced": [e.detail for e in unfenced],
        "anomaly_counts": anomaly_counts,
        "anomalies": [{"name": a.name, "ops": list(a.txns), "edges": [str(e) for e in a.edges],
                       "timestamps": [str(t) for t in a.timestamps], "explanation": a.explanation} for a in anomalies],
        "stats": dict(verdict.stats),
    }
    (out / "verdict.json").write_text(json.dumps(report, indent=1) + "\n")
    relative = [attrs.evolve(op, invoke_ns=op.invoke_ns - start_ns, complete_ns=op.complete_ns - start_ns) for op in history]
    spans = [(e.kind, e.detail, (e.start_ns - start_ns) / 1e9, ((e.end_ns or e.start_ns) - start_ns) / 1e9) for e in nemesis.events]
    title = f"verify {plan.workload}, nemesis {','.join(plan.nemeses) or 'none'}, seed {plan.seed}"
    end_s = (healed_ns - start_ns) / 1e9
    verify_plots.plot_latency(relative, spans, out / "latency-raw.png", title, end_s)
    verify_plots.plot_rate(relative, spans, out / "rate.png", title, end_s)
    say(f"ops {len(history)}: ok {counts['ok']}, failed {counts['fail']}, unknown {counts['info']}; "
        f"faults {len(faults)} {count_by(nemesis.events)}")
    if unfenced:
        say(f"note: skew beyond max_offset without the node fencing itself: {'; '.join(e.detail for e in unfenced)}")
    if valid:
        say("verdict: valid")
    else:
        say(f"verdict: INVALID, {sum(anomaly_counts.values())} anomalies "
            f"({', '.join(f'{name} x{count}' for name, count in sorted(anomaly_counts.items()))}); listed:")
        for anomaly in anomalies:
            say(f"  {anomaly.name}: {anomaly.explanation}")
    say(f"output: {out}/history.jsonl, verdict.json, faults.json, logs/, latency-raw.png, rate.png")
    return EXIT_OK if valid else EXIT_NEGATIVE


def count_by(events) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts
