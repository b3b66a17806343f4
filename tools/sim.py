"""`chronodb sim paxos|cluster --seeds N [--from S]`, `chronodb sim scenario NAME`: deterministic simulations.

`chronodb sim cluster` runs the whole-stack simulation (txn/sim/sweep.py):
real nodes and the real client on the simulated network, one random plan
per seed (3 or 5 nodes, 2-3 tablets, a random subset of fault kinds:
crashes, partitions, pauses, clock offsets and drifts, message faults, or
a clock beyond max_offset that must end in fencing), then healing and a
liveness check; every history is checked (durability, nothing invented,
external consistency, read-then-write, repeatable and snapshot reads, one
lease holder, increasing applied timestamps, no node dying). Prints
`SEED=<n>: <failure>` per failing seed (the plan and trace tail with
`--trace`), seconds per seed and the coverage marks; exits 1 on a failure or
a required mark never hit (sweeps of 50 seeds or more). Replay:
`chronodb sim cluster --from 17 --seeds 1 --trace` or `pytest tests/sim --seed 17`.

`chronodb sim scenario NAME [--mutant]` runs one directed scenario of the
whole-stack simulation (txn/sim/scenarios.py): a hand-built cluster with
scripted faults and clients, for bugs that HLC gossip hides from random
seeds; each exists to check one rule. It prints the verdict, seconds and
coverage marks; it exits 0 when the run passes every checker and hits the
scenario's marks, or, with `--mutant` (the rule switched off), when the
checkers catch the mutant with the expected symptom; else 1. `--seed N`
(default 1) varies the network's and the scheduler's streams.

Each seed is one run of paxos/simulation.py (3 or 5 replicas; drops,
duplicates, delays, partitions, crash/restarts; then healing and liveness
probes; agreement, applied-prefix and single-lease-holder checkers). Prints
`SEED=<n>: <failure>` for every failing seed (and its trace tail with
`--trace`), then the coverage marks; exits 1 if any seed failed or a
required coverage mark never occurred. The same seed replays the same run:
`chronodb sim paxos --from 17 --seeds 1 --trace`, or
`pytest tests/sim --seed 17`.
"""

from __future__ import annotations

import argparse
import time

from paxos.simulation import REQUIRED_MARKS, run_seed
from tools.errors import EXIT_NEGATIVE, EXIT_OK, CliError


def run_paxos(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise CliError("--seeds must be at least 1", 2)
    started = time.perf_counter()
    failed = 0
    marks: dict[str, int] = {}
    for seed in range(args.start, args.start + args.seeds):
        result = run_seed(seed, trace=args.trace)
        for name, count in result.marks.items():
            marks[name] = marks.get(name, 0) + count
        if result.error is not None:
            failed += 1
            print(f"SEED={seed}: {result.error}", flush=True)
            if args.trace:
                print("\n".join(result.trace[-args.trace_lines:]))
    elapsed = time.perf_counter() - started
    print(f"{args.seeds} seeds from {args.start}: {failed} failed, {elapsed:.1f}s")
    print("coverage: " + ", ".join(f"{name}={count}" for name, count in sorted(marks.items())))
    missing = [name for name in REQUIRED_MARKS if not marks.get(name)]
    if missing and args.seeds >= 50:
        print(f"coverage marks never hit: {', '.join(missing)}")
        return EXIT_NEGATIVE
    return EXIT_NEGATIVE if failed else EXIT_OK


def run_cluster(args: argparse.Namespace) -> int:
    import logging

    from txn.sim import sweep

    if args.seeds < 1:
        raise CliError("--seeds must be at least 1", 2)
    logging.disable(logging.CRITICAL)  # nodes log every fault they see; the verdict is what matters here
    started, cpu_started = time.perf_counter(), time.process_time()

    def report(result: sweep.SeedResult) -> None:
        if result.error is not None:
            print(f"SEED={result.seed}: {result.error}", flush=True)
            if args.trace:
                print(result.plan)
                print("\n".join(result.trace[-args.trace_lines:]))

    failures, marks = sweep.run_sweep(range(args.start, args.start + args.seeds), on_result=report)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"{args.seeds} seeds from {args.start}: {len(failures)} failed, {elapsed:.1f}s "
          f"({elapsed / args.seeds:.2f}s per seed, {cpu / args.seeds:.2f}s CPU)")
    print("coverage: " + ", ".join(f"{name}={count}" for name, count in sorted(marks.items())))
    missing = sweep.missing_marks(marks)
    pending = [name for name in sweep.PENDING_MARKS if not marks.get(name)]
    if pending:
        print(f"pending marks (not required yet) never hit: {', '.join(pending)}")
    if missing and args.seeds >= 50:
        print(f"coverage marks never hit: {', '.join(missing)}")
        return EXIT_NEGATIVE
    return EXIT_NEGATIVE if failures else EXIT_OK


def run_scenario(args: argparse.Namespace) -> int:
    import logging

    from txn.sim import sweep
    from txn.sim.scenarios import SCENARIOS

    scenario = SCENARIOS[args.name]
    logging.disable(logging.CRITICAL)
    _, cls, attribute, value = scenario.mutation_point
    variant = f"mutant {cls}.{attribute} = {value!r}" if args.mutant else "real code"
    result = sweep.run_scenario(scenario, seed=args.seed, mutant=scenario.mutant if args.mutant else None)
    print(f"scenario {scenario.name} seed={args.seed} ({variant}): {result.error or 'ok'}")
    if args.trace:
        print(result.plan)
        print("\n".join(result.trace[-args.trace_lines:]))
    print(f"{result.seconds:.1f}s; coverage: " + ", ".join(f"{name}={count}" for name, count in sorted(result.marks.items())))
    if args.mutant:
        caught = result.error is not None and any(symptom in result.error for symptom in scenario.symptoms)
        print("mutant caught" if caught else f"MUTANT SURVIVED (expected a failure with one of {scenario.symptoms})")
        return EXIT_OK if caught else EXIT_NEGATIVE
    missing = [name for name in scenario.marks if not result.marks.get(name)]
    if missing:
        print(f"coverage marks never hit: {', '.join(missing)}")
    return EXIT_NEGATIVE if result.error is not None or missing else EXIT_OK


def _paragraph(start: str) -> str:
    """The paragraph of this module's docstring that starts with `start` (a subcommand's description)."""
    return next((p for p in (__doc__ or "").split("\n\n") if p.startswith(start)), "")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sim", help="run deterministic simulations (seed sweeps, directed scenarios)",
                                   description="Run seeded deterministic simulations and report failing seeds or scenarios.")
    sims = parser.add_subparsers(dest="simulation", metavar="SIMULATION", required=True)
    paxos = sims.add_parser("paxos", help="the Paxos replica cores under faults (agreement, leases, liveness)",
                            description=_paragraph("Each seed is one run of paxos/simulation.py"))
    paxos.add_argument("--seeds", type=int, default=300, help="how many seeds to run (default 300)")
    paxos.add_argument("--from", dest="start", type=int, default=0, help="first seed (default 0)")
    paxos.add_argument("--trace", action="store_true", help="print the message trace tail of failing seeds")
    paxos.add_argument("--trace-lines", type=int, default=200, help="trace lines per failing seed (default 200)")
    paxos.set_defaults(func=run_paxos)
    cluster = sims.add_parser("cluster", help="real nodes and clients under swarm-tested faults (the contract, liveness)",
                              description=_paragraph("`chronodb sim cluster`"))
    cluster.add_argument("--seeds", type=int, default=200, help="how many seeds to run (default 200)")
    cluster.add_argument("--from", dest="start", type=int, default=0, help="first seed (default 0)")
    cluster.add_argument("--trace", action="store_true", help="print the plan and message trace tail of failing seeds")
    cluster.add_argument("--trace-lines", type=int, default=200, help="trace lines per failing seed (default 200)")
    cluster.set_defaults(func=run_cluster)
    from txn.sim.scenarios import DEFAULT_SEED, SCENARIOS

    names = "; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS.values())
    scenario = sims.add_parser("scenario", help="one directed whole-stack scenario (scripted faults and clients)",
                               description=_paragraph("`chronodb sim scenario") + f" Scenarios: {names}.")
    scenario.add_argument("name", choices=sorted(SCENARIOS), metavar="NAME", help=f"one of {', '.join(sorted(SCENARIOS))}")
    scenario.add_argument("--mutant", action="store_true",
                          help="switch off the rule the scenario checks; exit 0 only if the checkers catch it")
    scenario.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"the run's seed (default {DEFAULT_SEED})")
    scenario.add_argument("--trace", action="store_true", help="print the plan and message trace tail")
    scenario.add_argument("--trace-lines", type=int, default=200, help="trace lines with --trace (default 200)")
    scenario.set_defaults(func=run_scenario)
