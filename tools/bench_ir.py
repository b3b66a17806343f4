"""`chronodb bench ir`: CPU instructions per operation of the whole stack, counted, not timed.

Role: the yardstick for small CPU changes. On a shared 2-core VM the timed
benchmarks drift by 15% from hour to hour, so a change worth 2-5% cannot be
seen in them; an instruction count can. Valgrind's callgrind counts the
instructions of `tools/ir_workload.py` (three nodes and the client on the
simulated network, virtual time: the same operations every run) twice, for
a short and a long run; the difference over the difference in operations
is the instructions per operation, start-up cancelled out. With
`--against REV` the same is counted for a git revision (checked out into a
temporary worktree, removed after) and each row gets the ratio to it.

What it does not count: sockets, TLS, LevelDB and fsync (the workload
uses none of them), cache misses and wake-ups (instructions, not time).
It is a measure of the Python a change adds or removes, not of throughput.
What it counts besides nodes and client: the simulated network's own work
(txn/net/simnet.py), so a change there moves the figures too.
Needs valgrind (`apt-get install valgrind`) and, for `--against`, git.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from tools.bench import positive_int, positive_seconds, print_setup
from tools.errors import CliError

# tools/ir_workload.py's kinds. Defined here, not imported from it: it imports the whole simulation
# (0.4 s), and every `chronodb bench ...` command imports this module to register it.
KINDS = ("write", "past-read", "transfer")
ROOT = pathlib.Path(__file__).resolve().parent.parent
SHORT_FRACTION = 0.25  # the short run's share of --seconds
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
_OPS = re.compile(r"^ops (\d+)$", re.MULTILINE)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ir", help="instructions per operation of nodes and client (callgrind), against a git revision",
        description="Count the CPU instructions per operation of three nodes and the client on the simulated "
        "network (tools/ir_workload.py: virtual time, the same operations every run) with valgrind's callgrind, "
        "for this tree and optionally a git revision, and print the ratio. Noise-free where timed figures "
        "drift; counts Python work only (no sockets, TLS, LevelDB, fsync, cache misses). Needs valgrind.",
    )
    parser.add_argument("--against", metavar="REV", help="a git revision to count too, as the baseline (e.g. HEAD~3)")
    parser.add_argument("--kinds", default="write,past-read", help=f"comma-separated, from {', '.join(KINDS)} "
                        "(default write,past-read)")
    parser.add_argument("--clients", type=positive_int, default=16, help="closed-loop workers (default 16)")
    parser.add_argument("--seconds", type=positive_seconds, default=1.0,
                        help=f"virtual seconds of the long run; the short one is {SHORT_FRACTION:g} of it (default 1)")
    parser.set_defaults(func=run)


def collected(callgrind_output: str) -> int:
    """The instruction count callgrind prints on exit (`==123== Collected : 456`)."""
    match = _COLLECTED.search(callgrind_output)
    if match is None:
        raise CliError(f"callgrind printed no instruction count: {callgrind_output.strip()[-300:]!r}")
    return int(match.group(1))


def per_operation(short: tuple[int, int], long: tuple[int, int]) -> float:
    """Instructions per operation from (instructions, operations) of a short and a long run."""
    (short_ir, short_ops), (long_ir, long_ops) = short, long
    if long_ops <= short_ops:
        raise CliError(f"the long run did no more operations than the short one ({long_ops} vs {short_ops}): "
                       "raise --seconds")
    return (long_ir - short_ir) / (long_ops - short_ops)


def count(tree: pathlib.Path, kind: str, clients: int, seconds: float) -> tuple[int, int]:
    """(instructions, operations) of one workload run of `tree`'s code under callgrind."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
               "-m", "tools.ir_workload", "--kind", kind, "--clients", str(clients), "--seconds", str(seconds)]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    ops = _OPS.search(result.stdout)
    if result.returncode != 0 or ops is None:
        raise CliError(f"the workload failed under callgrind in {tree} (exit {result.returncode}): "
                       f"{result.stderr.strip()[-300:]}")
    return collected(result.stderr), int(ops.group(1))


Runs = tuple["concurrent.futures.Future[tuple[int, int]]", "concurrent.futures.Future[tuple[int, int]]"]


def start(tree: pathlib.Path, kind: str, clients: int, seconds: float, pool: concurrent.futures.Executor) -> Runs:
    """The short and the long run of one tree and kind, queued in `pool` (instructions are counted,
    not timed: runs side by side on the cores change nothing)."""
    return (pool.submit(count, tree, kind, clients, seconds * SHORT_FRACTION),
            pool.submit(count, tree, kind, clients, seconds))


def figures(runs: Runs) -> tuple[float, int]:
    """(instructions per operation, operations of the long run), once both runs are done."""
    short, long = runs[0].result(), runs[1].result()
    return per_operation(short, long), long[1]


def run(args: argparse.Namespace) -> int:
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise CliError(f"--kinds: unknown {', '.join(unknown) or '(none given)'} (choose from {', '.join(KINDS)})")
    if args.clients < 1 or not args.seconds > 0:
        raise CliError("--clients must be at least 1 and --seconds above 0")
    if shutil.which("valgrind") is None:
        raise CliError("valgrind is not installed (apt-get install valgrind): `bench ir` counts with its callgrind")
    print_setup("ir", workload=f"tools/ir_workload.py: 3 nodes, 3 tablets, simulated network, {args.clients} clients, "
                f"{args.seconds:g} s and {args.seconds * SHORT_FRACTION:g} s of virtual time",
                counter="valgrind --tool=callgrind (instructions; the difference of the two runs per operation)",
                baseline=args.against or "none")
    with tempfile.TemporaryDirectory(prefix="chronodb-bench-ir-") as scratch:
        trees = [("this tree", ROOT)]
        if args.against:
            trees.append((args.against, _worktree(args.against, pathlib.Path(scratch) / "baseline")))
        try:
            print(f"{'kind':<10} {'tree':<16} {'ops':>7} {'instructions/op':>16} {'ratio':>7}", flush=True)
            with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                runs = {(kind, label): start(tree, kind, args.clients, args.seconds, pool)
                        for kind in kinds for label, tree in trees}
                for kind in kinds:
                    counted = {label: figures(runs[(kind, label)]) for label, _ in trees}
                    baseline = counted[args.against][0] if args.against else None
                    for label, (per_op, ops) in counted.items():
                        ratio = f"{per_op / baseline:7.3f}" if baseline else f"{'':>7}"
                        print(f"{kind:<10} {label[:16]:<16} {ops:>7} {per_op:>16,.0f} {ratio}", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[1][1])],
                               capture_output=True)
    return 0


def _worktree(revision: str, path: pathlib.Path) -> pathlib.Path:
    """Check `revision` out into `path` (a detached git worktree of this repository)."""
    result = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), revision],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CliError(f"cannot check out {revision!r}: {result.stderr.strip() or result.stdout.strip()}")
    return path
